"""Episodes in the database: written step by step as they happen, read back as core records."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from agent_studio.storage.db import Database, first_line, process_gone, process_name
from agent_studio.storage.episode_rows import (
    candidate_record,
    candidate_rows,
    EpisodeSummary,  # noqa: F401 - importable from here, as before
    episode_record,
    episode_summary,
    step_record,
    step_row,
    step_values,
)
from agent_studio.storage.orm import CandidateRow, EpisodeRow, ModelRow, PairRow, StepLabelRow, StepRow
from studio.errors import NotStored, StudioError
from studio.episodes.runner import RunnerEvent
from studio.trace import (
    ABANDONED,
    HEAVY_STEP_FIELDS,
    UNFINISHED_REASONS,
    Candidate,
    Episode,
    Step,
    png_to_frame,
    utc_now,
)

#: How an episode ends that a process left running when it died.
ORPHANED = f"{ABANDONED}: the process that ran it ended before it did"
#: Step columns a list view never needs (large); loaded only for a full episode.
HEAVY_STEP_COLUMNS = HEAVY_STEP_FIELDS  # the step columns of the same names


def complete_clause() -> Any:
    """:attr:`studio.trace.Episode.complete` in SQL: ended, and not stopped or abandoned before its end
    (its success may be unknown: an environment without a notion of success)."""
    return and_(
        EpisodeRow.ended_at.is_not(None),
        or_(
            EpisodeRow.end_reason.is_(None),
            and_(*(~EpisodeRow.end_reason.startswith(prefix) for prefix in UNFINISHED_REASONS)),
        ),
    )


def _content(episode: Episode) -> dict[str, Any]:
    """What a stored episode must equal to count as the same (a model of None and {} alike)."""
    data = episode.to_dict()
    data["model"] = data["model"] or None
    return data


@dataclass(frozen=True)
class SaveResult:
    """What :meth:`EpisodeStore.save` did with one episode."""

    episode_id: str
    outcome: str
    """``stored`` (new), ``unchanged`` (already stored, same content) or ``replaced``."""
    kept_steps: int = 0
    """With ``replaced``: steps (from the first) that were the same and kept their labels and pairs."""
    dropped_pairs: int = 0
    """With ``replaced``: pairs (and their judgements) on changed steps or on the whole changed trajectory."""
    dropped_labels: int = 0
    """With ``replaced``: step labels on changed steps."""


class EpisodeStore:
    """Episodes, steps and candidates: core records in, core records out."""

    def __init__(self, database: Database) -> None:
        self.db = database

    # -- writing -------------------------------------------------------------------------------
    def _model_id(self, session: Session, model: dict[str, Any] | None) -> str | None:
        if not model:
            return None
        text = json.dumps(model, sort_keys=True, default=str)
        model_id = hashlib.sha1(text.encode("utf-8")).hexdigest()
        if session.get(ModelRow, model_id) is None:
            session.add(
                ModelRow(
                    id=model_id,
                    name=str(model.get("id") or "model"),
                    description=json.loads(text),
                    created_at=utc_now(),
                )
            )
            session.flush()
        return model_id

    def _add_step(self, session: Session, episode_id: str, step: Step) -> None:
        row = step_row(episode_id, step)
        session.add(row)
        session.flush()  # the step's id, for its candidates
        session.add_all(candidate_rows(row.id, step.candidates))

    def _episode_columns(self, episode: Episode) -> dict[str, Any]:
        return {
            "success": episode.success,
            "end_reason": episode.end_reason,
            "ended_at": episode.ended_at,
            "length": episode.length,
            "total_return": episode.total_return,
        }

    def _row_values(self, session: Session, episode: Episode) -> dict[str, Any]:
        """Every column of an episode's row but its id (a new row, or one that is replaced)."""
        return {
            "env": episode.env,
            "seed": episode.seed,
            "env_options": episode.env_options,
            "instruction": episode.instruction,
            "policy": episode.policy,
            "policy_config": episode.policy_config,
            "model_id": self._model_id(session, episode.model),
            "parent_id": episode.parent_id,
            "forked_at": episode.forked_at,
            "sweep_id": episode.sweep,
            "sweep_cell": episode.sweep_cell,
            "max_steps": episode.max_steps,
            "started_at": episode.started_at,
            "schema_version": episode.schema_version,
            "source": episode.source,
            "source_format": str((episode.source or {}).get("format") or "")[:40] or None,
            **self._episode_columns(episode),
        }

    def _insert(self, session: Session, episode: Episode) -> None:
        session.add(EpisodeRow(id=episode.id, **self._row_values(session, episode)))
        session.flush()
        if not any(step.candidates for step in episode.steps):
            # One bulk insert (an imported episode's steps have no candidates whose rows need the step ids).
            if episode.steps:
                session.execute(insert(StepRow), [step_values(episode.id, step) for step in episode.steps])
            return
        for step in episode.steps:
            self._add_step(session, episode.id, step)

    def start(self, episode: Episode) -> None:
        """Record a new episode (with the steps it already has: a fork's copied prefix), as run by this
        process until it ends (:meth:`end_orphans` ends it should this process die first)."""
        with self.db.writing() as session:
            if session.get(EpisodeRow, episode.id) is not None:
                raise StudioError(f"Episode {episode.id} is already stored.")
            self._insert(session, episode)
            if not episode.done:
                session.execute(update(EpisodeRow).where(EpisodeRow.id == episode.id).values(runner=process_name()))

    def end_orphans(self) -> int:
        """End the episodes a process of this machine left running when it died (a crash, a kill, a
        server stopped without its sessions closing): ``abandoned: ...``, never "running" for ever.
        Episodes other machines run are left alone. How many were ended."""
        with self.db.writing() as session:
            rows = session.execute(
                select(EpisodeRow.id, EpisodeRow.runner).where(
                    EpisodeRow.ended_at.is_(None), EpisodeRow.runner.is_not(None)
                )
            ).all()
            dead = [row.id for row in rows if process_gone(row.runner)]
            if dead:
                session.execute(
                    update(EpisodeRow)
                    .where(EpisodeRow.id.in_(dead), EpisodeRow.ended_at.is_(None))
                    .values(end_reason=ORPHANED, ended_at=utc_now(), runner=None)
                )
            return len(dead)

    def add_step(self, episode: Episode, step: Step) -> None:
        """Record one step as soon as it is taken (its own transaction: a crash keeps it)."""
        with self.db.writing() as session:
            self._add_step(session, episode.id, step)
            session.execute(
                update(EpisodeRow)
                .where(EpisodeRow.id == episode.id)
                .values(length=episode.length, total_return=episode.total_return)
            )

    def finish(self, episode: Episode) -> None:
        """Record how the episode ended."""
        with self.db.writing() as session:
            session.execute(
                update(EpisodeRow)
                .where(EpisodeRow.id == episode.id)
                .values(**self._episode_columns(episode), runner=None)
            )

    def save(self, episode: Episode, replace: bool = False) -> SaveResult:
        """Store a whole episode at once (e.g. one read from a file); see :meth:`save_all`."""
        return self.save_all([episode], replace=replace)[0]

    def save_all(self, episodes: list[Episode], replace: bool = False) -> list[SaveResult]:
        """Store whole episodes in one transaction: all of them, or (on any error) none.

        Every episode is validated first. One that is already stored with the same content
        is left as it is (importing a file twice changes nothing). One stored with other
        content is refused, unless ``replace``: then its steps are replaced from the first
        one that differs, and the pairs, judgements and step labels of the unchanged steps
        before it are kept (those of changed steps judged something else, and go).
        """
        for episode in episodes:
            try:
                episode.validate()
            except StudioError as exc:
                raise StudioError(f"Episode {str(episode.id)[:40]!r} is not valid: {exc}") from None
        if len({e.id for e in episodes}) < len(episodes):
            raise StudioError("The same episode id appears twice; nothing was stored.")
        with self.db.writing() as session:
            return [self._save(session, episode, replace) for episode in episodes]

    def save_stream(
        self, episodes: Iterable[Episode], replace: bool = False, progress: Callable[[int], None] | None = None
    ) -> dict[str, int]:
        """Store episodes as they come (an importer's stream) in one transaction: all of them, or on any
        error — a bad record, a refused pickle halfway through a study — none. Each is validated and
        written before the next is read, and the session forgets it once written, so memory stays
        bounded whatever the stream's length. How many were stored, unchanged and replaced."""
        counts = {"stored": 0, "unchanged": 0, "replaced": 0, "steps": 0}
        seen: set[str] = set()
        with self.db.writing() as session:
            for episode in episodes:
                try:
                    episode.validate()
                except StudioError as exc:
                    raise StudioError(f"Episode {str(episode.id)[:40]!r} is not valid: {exc}") from None
                if episode.id in seen:
                    continue  # the same record twice in one file: stored once
                seen.add(episode.id)
                counts[self._save(session, episode, replace).outcome] += 1
                counts["steps"] += episode.length
                session.flush()
                session.expunge_all()
                if progress is not None:
                    progress(len(seen))
        return counts

    def _save(self, session: Session, episode: Episode, replace: bool) -> SaveResult:
        row = session.get(EpisodeRow, episode.id)
        if row is None:
            self._check_candidate_ids(session, episode.steps)
            self._insert(session, episode)
            return SaveResult(episode.id, "stored")
        stored, new = _content(self._load(session, row)), _content(episode)  # once each: frames are re-encoded
        if stored == new:
            return SaveResult(episode.id, "unchanged")
        if not replace:
            raise StudioError(
                f"Episode {episode.id} is already stored with different content; nothing was stored "
                "(use --replace to overwrite it: judgements on the steps that did not change are kept)."
            )
        return self._replace(session, row, stored["steps"], new["steps"], episode)

    @staticmethod
    def _check_candidate_ids(session: Session, steps: list[Step]) -> None:
        """Candidate ids are unique across the store (pairs point at them): refuse a reused one."""
        ids = [c.id for step in steps for c in step.candidates]
        if len(set(ids)) < len(ids):
            raise StudioError("The same candidate id appears twice in the episode; nothing was stored.")
        for start in range(0, len(ids), 500):
            taken = session.scalar(
                select(CandidateRow.id).where(CandidateRow.id.in_(ids[start : start + 500])).limit(1)
            )
            if taken is not None:
                raise StudioError(
                    f"Candidate {taken} is already stored with another episode (a copied file?); nothing was stored."
                )

    def _replace(
        self,
        session: Session,
        row: EpisodeRow,
        stored_steps: list[dict[str, Any]],
        new_steps: list[dict[str, Any]],
        episode: Episode,
    ) -> SaveResult:
        """Overwrite the stored episode with ``episode`` in place, from the first step that differs
        (``stored_steps`` and ``new_steps``: both episodes' steps in their JSON form)."""
        keep = 0
        for old, new in zip(stored_steps, new_steps):
            if old != new:
                break
            keep += 1
        pairs = labels = 0
        if keep < max(len(stored_steps), len(new_steps)):
            # Step pairs from the first changed step on, and trajectory pairs (the trajectory changed).
            touches = or_(PairRow.left_episode_id == episode.id, PairRow.right_episode_id == episode.id)
            changed_sides = or_(and_(PairRow.kind == "step", PairRow.step_index >= keep), PairRow.kind == "trajectory")
            doomed = select(PairRow.id).where(touches, changed_sides)
            late_steps = select(StepRow.id).where(StepRow.episode_id == episode.id, StepRow.index >= keep)
            pairs = session.scalar(select(func.count()).select_from(doomed.subquery())) or 0
            labels = (
                session.scalar(
                    select(func.count()).select_from(StepLabelRow).where(StepLabelRow.step_id.in_(late_steps))
                )
                or 0
            )
            session.execute(delete(PairRow).where(PairRow.id.in_(doomed)))  # their judgements cascade
            session.execute(
                delete(StepRow).where(StepRow.episode_id == episode.id, StepRow.index >= keep)
            )  # labels, candidates cascade
        self._check_candidate_ids(session, episode.steps[keep:])
        for step in episode.steps[keep:]:
            self._add_step(session, episode.id, step)
        for name, value in self._row_values(session, episode).items():
            setattr(row, name, value)
        return SaveResult(episode.id, "replaced", kept_steps=keep, dropped_pairs=pairs, dropped_labels=labels)

    def sink(self) -> StoreSink:
        """A runner sink that writes every step to this store as it happens."""
        return StoreSink(self)

    # -- reading -------------------------------------------------------------------------------
    def get(self, episode_id: str) -> Episode:
        """The full episode: every step with its prompt, frame, snapshot and candidates."""
        with self.db.reading() as session:
            row = session.get(EpisodeRow, episode_id)
            if row is None:
                raise StudioError(f"No stored episode with id {str(episode_id)[:64]!r}.")
            return self._load(session, row)

    def _load(self, session: Session, row: EpisodeRow) -> Episode:
        model = session.get(ModelRow, row.model_id).description if row.model_id else None
        step_rows = session.scalars(select(StepRow).where(StepRow.episode_id == row.id).order_by(StepRow.index)).all()
        candidates = self._candidates(session, [s.id for s in step_rows])
        steps = [step_record(s, candidates.get(s.id, [])) for s in step_rows]
        return episode_record(row, model, steps)

    @staticmethod
    def _candidates(session: Session, step_ids: list[int]) -> dict[int, list[Candidate]]:
        grouped: dict[int, list[Candidate]] = {}
        for start in range(0, len(step_ids), 500):  # stay under SQLite's bound-parameter limit
            rows = session.scalars(
                select(CandidateRow)
                .where(CandidateRow.step_id.in_(step_ids[start : start + 500]))
                .order_by(CandidateRow.step_id, CandidateRow.position)
            )
            for row in rows:
                grouped.setdefault(row.step_id, []).append(candidate_record(row))
        return grouped

    def summaries(
        self,
        env: str | None = None,
        policy: str | None = None,
        model: str | None = None,
        success: bool | None = None,
        since: str | None = None,
        seed: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[EpisodeSummary]:
        """Stored episodes, newest first, filtered by environment, policy, model name, outcome, start time, seed."""
        query = select(EpisodeRow, ModelRow.name).outerjoin(ModelRow, EpisodeRow.model_id == ModelRow.id)
        if env:
            query = query.where(EpisodeRow.env == env)
        if policy:
            query = query.where(EpisodeRow.policy == policy)
        if model:
            query = query.where(ModelRow.name == model)
        if success is not None:
            query = query.where(EpisodeRow.success.is_(success))
        if since:
            query = query.where(EpisodeRow.started_at >= since)
        if seed is not None:
            query = query.where(EpisodeRow.seed == seed)
        query = query.order_by(EpisodeRow.started_at.desc(), EpisodeRow.id).limit(limit).offset(offset)
        with self.db.reading() as session:
            return [episode_summary(row, model_name) for row, model_name in session.execute(query)]

    def step_frame(self, episode_id: str, index: int) -> Any:
        """The frame step ``index`` of an episode acted on: the one it kept, else redrawn from its
        snapshot (an episode run without ``--frames``); None when neither can give one here."""
        from studio.envs.registry import env_at

        with self.db.reading() as session:
            row = session.execute(
                select(StepRow.frame, StepRow.state, EpisodeRow.env, EpisodeRow.env_options, EpisodeRow.seed)
                .join(EpisodeRow, StepRow.episode_id == EpisodeRow.id)
                .where(StepRow.episode_id == episode_id, StepRow.index == index)
            ).first()
        if row is None:
            return None
        if row.frame is not None:
            return png_to_frame(row.frame)
        if row.state is None:
            return None
        try:
            env = env_at(row.env, row.env_options, row.seed, row.state)
        except StudioError:  # an environment this studio cannot make or restore here
            return None
        try:
            return env.render()
        finally:
            env.close()

    def env_names(self) -> list[str]:
        """Every environment name the stored episodes ran in, sorted."""
        with self.db.reading() as session:
            return sorted(session.scalars(select(EpisodeRow.env).distinct()))

    def count_episodes(self) -> int:
        """The number of stored episodes (one count over the small episodes table: cheap enough
        for the header after every step, unlike :meth:`count`'s count of every step)."""
        with self.db.reading() as session:
            return session.scalar(select(func.count()).select_from(EpisodeRow)) or 0

    def count(self) -> dict[str, int]:
        """Numbers of episodes, finished episodes, steps and candidates."""
        with self.db.reading() as session:
            return {
                "episodes": session.scalar(select(func.count()).select_from(EpisodeRow)) or 0,
                "finished_episodes": session.scalar(
                    select(func.count()).select_from(EpisodeRow).where(EpisodeRow.ended_at.is_not(None))
                )
                or 0,
                "steps": session.scalar(select(func.count()).select_from(StepRow)) or 0,
                "candidates": session.scalar(select(func.count()).select_from(CandidateRow)) or 0,
            }


class StoreSink:
    """Writes runner events to the store: each step as it is taken, the outcome at ``ended``.

    The episode itself is written with its first step (with a fork's copied prefix): a reset
    nobody steps — every page load of the studio makes one — leaves nothing behind, and a
    crash still loses no step.
    """

    def __init__(self, store: EpisodeStore) -> None:
        self.store = store
        self._written: set[str] = set()
        #: Episodes whose end could not be written (the database was failing): written at the next event.
        self._unfinished: dict[str, Episode] = {}

    def save_whole(self, episode: Episode) -> None:
        """Store a finished episode run elsewhere (a cluster's worker) whole, in one transaction."""
        try:
            self.store.save(episode)
        except SQLAlchemyError as exc:
            raise NotStored(f"Could not write episode {episode.id} to the database: {first_line(exc)}") from None

    def handle(self, event: RunnerEvent) -> None:
        episode = event.episode
        self._finish_pending()
        try:
            if event.kind == "step" and event.step is not None:
                if episode.id not in self._written:
                    self.store.start(episode)  # already holds this step
                    self._written.add(episode.id)
                else:
                    self.store.add_step(episode, event.step)
            elif event.kind == "ended" and episode.id in self._written:
                self._unfinished[episode.id] = episode
                self.store.finish(episode)
                del self._unfinished[episode.id]
        except SQLAlchemyError as exc:  # e.g. disk full, or the file locked for longer than the busy timeout
            raise NotStored(f"Could not write episode {episode.id} to the database: {first_line(exc)}") from None
        except StudioError as exc:  # whatever kept the store from taking the step, the runner must stop there
            raise NotStored(str(exc)) from None

    def _finish_pending(self) -> None:
        """How earlier episodes ended (e.g. "stopped: step 24 could not be stored"), once the database takes writes again."""
        for episode_id, episode in list(self._unfinished.items()):
            try:
                self.store.finish(episode)
            except SQLAlchemyError:
                return
            del self._unfinished[episode_id]
