"""Finding behaviours across many episodes: filters, full-text search, tags and notes.

Full-text search runs in the database: SQLite's FTS5 tables ``steps_fts`` and ``notes_fts`` (kept by
triggers), PostgreSQL's GIN indexes over ``to_tsvector('simple', ...)`` (migration 0010). A query's
words must all appear in one step (its thought, action and observation) or one note; each word is
matched as a whole word, case-insensitively, and typed text is never query syntax (quotes,
``NEAR``, ``*`` and ``:`` are just characters). Every filter is one indexed column or an indexed
join, and counts are SQL counts: a page of 100,000 episodes reads 50 rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, delete, exists, func, literal_column, or_, select, text
from sqlalchemy.orm import Session

from agent_studio.storage.db import Database
from agent_studio.storage.episode_rows import EpisodeSummary, episode_summary
from agent_studio.storage.orm import EpisodeRow, ModelRow, NoteRow, RubricLabelRow, StepLabelRow, StepRow, TagRow
from studio.errors import StudioError
from studio.trace import utc_now

#: A tag: a short word (letters, digits, ``-``, ``_``, ``.``, ``:``), kept lower-case.
TAG = re.compile(r"^[\w.:-]{1,64}$")
#: The longest note kept.
MAX_NOTE = 10_000
#: The words of a search (what FTS5's unicode61 and PostgreSQL's simple parser both split on).
WORD = re.compile(r"\w+", re.UNICODE)
#: The text a step is found by, in PostgreSQL (the GIN index of migration 0010 is over exactly this).
STEP_TEXT_SQL = "coalesce(steps.thought, '') || ' ' || coalesce(steps.action, '') || ' ' || steps.observation"
OUTCOMES = ("success", "failure", "unknown", "running")


@dataclass
class EpisodeFilter:
    """What the Episodes tab and ``agent-studio search`` filter by (every field optional)."""

    env: str | None = None
    model: str | None = None
    policy: str | None = None
    sweep: str | None = None
    outcome: str | None = None
    """success, failure, unknown (ran to its end with no notion of success), running."""
    source: str | None = None
    """An importer's name (``inspect``, ``chat``, ...), or ``studio`` for the episodes the studio ran."""
    tag: str | None = None
    """On the episode or on any of its steps."""
    judged: bool | None = None
    """Has a rubric label or a step label (True), or has none (False)."""
    setting: str | None = None
    """``KEY=VALUE`` of the policy's settings (``temperature=0.7``, ``action_mode=score``)."""
    since: str | None = None
    """Started at or after this time (an ISO date or time, e.g. ``2026-11-21``)."""
    text: str | None = None
    """Full-text: a step's thought, action or observation, or a note, has every word."""


@dataclass
class SearchHit:
    """One step (or note) a search found."""

    episode_id: str
    step_index: int | None
    where: str
    """``step`` or ``note``."""
    snippet: str
    env: str = ""


def words(query: str) -> list[str]:
    """The words of a typed query (at most 16: a pasted page is not a query)."""
    return WORD.findall(query or "")[:16]


def check_tag(tag: str) -> str:
    value = (tag or "").strip().lower()
    if not TAG.match(value):
        raise StudioError(f"A tag is 1 to 64 letters, digits, '-', '_', '.' or ':' (got {str(tag)[:40]!r}).")
    return value


class SearchStore:
    """Filters, full-text search, tags and notes over the stored episodes."""

    def __init__(self, database: Database) -> None:
        self.db = database

    # -- full text ----------------------------------------------------------------------------------
    def _fts(self, table: str, terms: list[str]) -> Any:
        """A clause: the row of ``steps``/``notes`` has every one of ``terms`` (each bound, never spliced)."""
        name = f"{table}_match"
        if self.db.is_sqlite:
            # Each word quoted: FTS5 reads it as a plain token, never as its query syntax.
            match = " ".join('"' + term.replace('"', '""') + '"' for term in terms)
            clause = f"{table}.id IN (SELECT rowid FROM {table}_fts WHERE {table}_fts MATCH :{name})"
            return text(clause).bindparams(**{name: match})
        body = STEP_TEXT_SQL if table == "steps" else "notes.text"
        clause = f"to_tsvector('simple', {body}) @@ plainto_tsquery('simple', :{name})"
        return text(clause).bindparams(**{name: " ".join(terms)})

    def _text_clause(self, terms: list[str]) -> Any:
        """Episodes with a step or a note that has every word: the matches found first through the
        full-text index, then their episodes (never a scan of every episode's steps)."""
        in_steps = EpisodeRow.id.in_(select(StepRow.episode_id).where(self._fts("steps", terms)))
        in_notes = EpisodeRow.id.in_(select(NoteRow.episode_id).where(self._fts("notes", terms)))
        return or_(in_steps, in_notes)

    # -- filters ------------------------------------------------------------------------------------
    def filtered(self, query: Select, where: EpisodeFilter) -> Select:
        """``query`` (over episodes) narrowed to those ``where`` selects."""
        if where.env:
            query = query.where(EpisodeRow.env == where.env)
        if where.model:
            query = query.where(EpisodeRow.model_id.in_(select(ModelRow.id).where(ModelRow.name == where.model)))
        if where.policy:
            query = query.where(EpisodeRow.policy == where.policy)
        if where.sweep:
            query = query.where(EpisodeRow.sweep_id == where.sweep)
        if where.outcome:
            query = query.where(self._outcome(where.outcome))
        if where.source:
            source = where.source.strip().lower()
            query = query.where(
                EpisodeRow.source_format.is_(None) if source == "studio" else EpisodeRow.source_format == source
            )
        if where.tag:
            query = query.where(EpisodeRow.id.in_(select(TagRow.episode_id).where(TagRow.tag == check_tag(where.tag))))
        if where.judged is not None:
            judged = or_(
                exists(select(RubricLabelRow.id).where(RubricLabelRow.episode_id == EpisodeRow.id)),
                exists(
                    select(StepLabelRow.id)
                    .join(StepRow, StepLabelRow.step_id == StepRow.id)
                    .where(StepRow.episode_id == EpisodeRow.id)
                ),
            )
            query = query.where(judged if where.judged else ~judged)
        if where.setting:
            key, sep, value = where.setting.partition("=")
            if not sep or not key.strip():
                raise StudioError(f"A settings filter is KEY=VALUE (got {where.setting[:60]!r}).")
            query = query.where(EpisodeRow.policy_config[key.strip()].as_string() == value.strip())
        if where.since and where.since.strip():
            query = query.where(EpisodeRow.started_at >= where.since.strip()[:32])
        if where.text and where.text.strip():
            terms = words(where.text)
            if not terms:
                raise StudioError("Search for at least one word (letters or digits).")
            query = query.where(self._text_clause(terms))
        return query

    @staticmethod
    def _outcome(outcome: str) -> Any:
        if outcome not in OUTCOMES:
            raise StudioError(f"Outcome is one of {', '.join(OUTCOMES)} (got {str(outcome)[:30]!r}).")
        if outcome == "running":
            return EpisodeRow.ended_at.is_(None)
        if outcome == "unknown":
            return and_(EpisodeRow.ended_at.is_not(None), EpisodeRow.success.is_(None))
        return EpisodeRow.success.is_(outcome == "success")

    def page(self, where: EpisodeFilter | None = None, limit: int = 50, offset: int = 0) -> list[EpisodeSummary]:
        """One page of the filtered episodes, newest first (only that page's rows are read)."""
        where = where or EpisodeFilter()
        limit = max(1, min(int(limit), 1000))
        query = self.filtered(
            select(EpisodeRow, ModelRow.name).outerjoin(ModelRow, EpisodeRow.model_id == ModelRow.id), where
        )
        query = query.order_by(EpisodeRow.started_at.desc(), EpisodeRow.id).limit(limit).offset(max(0, int(offset)))
        with self.db.reading() as session:
            return [episode_summary(row, name) for row, name in session.execute(query)]

    def count(self, where: EpisodeFilter | None = None) -> int:
        """How many episodes pass the filter (one SQL count)."""
        query = self.filtered(select(func.count()).select_from(EpisodeRow), where or EpisodeFilter())
        with self.db.reading() as session:
            return session.scalar(query) or 0

    def search(self, query: str, where: EpisodeFilter | None = None, limit: int = 50) -> list[SearchHit]:
        """The steps and notes with every word of ``query``, in the filtered episodes (newest first)."""
        terms = words(query)
        if not terms:
            raise StudioError("Search for at least one word (letters or digits).")
        where = where or EpisodeFilter()
        scope = self.filtered(select(EpisodeRow.id), EpisodeFilter(**{**where.__dict__, "text": None}))
        limit = max(1, min(int(limit), 500))
        steps = (
            select(
                StepRow.episode_id, StepRow.index, StepRow.thought, StepRow.action, StepRow.observation, EpisodeRow.env
            )
            .join(EpisodeRow, StepRow.episode_id == EpisodeRow.id)
            .where(self._fts("steps", terms), StepRow.episode_id.in_(scope))
            .order_by(StepRow.id.desc())  # the newest steps first, read in the index's order (no sort of every match)
            .limit(limit)
        )
        notes = (
            select(NoteRow.episode_id, NoteRow.step_index, NoteRow.text, EpisodeRow.env)
            .join(EpisodeRow, NoteRow.episode_id == EpisodeRow.id)
            .where(self._fts("notes", terms), NoteRow.episode_id.in_(scope))
            .order_by(NoteRow.id.desc())
            .limit(limit)
        )
        with self.db.reading() as session:
            hits = [
                SearchHit(
                    r.episode_id,
                    r.index,
                    "step",
                    snippet(" · ".join(filter(None, (r.thought, r.action, r.observation))), terms),
                    r.env,
                )
                for r in session.execute(steps)
            ]
            hits += [
                SearchHit(r.episode_id, r.step_index, "note", snippet(r.text, terms), r.env)
                for r in session.execute(notes)
            ]
        return hits[:limit]

    # -- tags and notes -----------------------------------------------------------------------------
    def _check_target(self, session: Session, episode_id: str, step_index: int | None) -> None:
        if session.get(EpisodeRow, episode_id) is None:
            raise StudioError(f"No stored episode with id {str(episode_id)[:64]!r}.")
        if (
            step_index is not None
            and session.scalar(select(StepRow.id).where(StepRow.episode_id == episode_id, StepRow.index == step_index))
            is None
        ):
            raise StudioError(f"Episode {episode_id} has no step {step_index}.")

    def tag(self, episode_id: str, tag: str, author: str, step_index: int | None = None) -> bool:
        """Put ``tag`` on the episode (or one of its steps); False when it was already there."""
        value = check_tag(tag)

        def work(session: Session) -> bool:
            self._check_target(session, episode_id, step_index)
            there = session.scalar(
                select(TagRow.id).where(
                    TagRow.episode_id == episode_id,
                    TagRow.tag == value,
                    TagRow.step_index.is_(None) if step_index is None else TagRow.step_index == step_index,
                )
            )
            if there is not None:
                return False
            session.add(
                TagRow(
                    episode_id=episode_id, step_index=step_index, tag=value, author=author[:200], created_at=utc_now()
                )
            )
            return True

        return self.db.write(work)

    def untag(self, episode_id: str, tag: str, step_index: int | None = None) -> int:
        """Take ``tag`` off the episode (or the step); how many were removed."""
        value = check_tag(tag)
        with self.db.writing() as session:
            return session.execute(
                delete(TagRow).where(
                    TagRow.episode_id == episode_id,
                    TagRow.tag == value,
                    TagRow.step_index.is_(None) if step_index is None else TagRow.step_index == step_index,
                )
            ).rowcount

    def tags_of(self, episode_id: str) -> list[tuple[int | None, str]]:
        """The episode's tags: (None, tag) on the episode, (step, tag) on a step."""
        with self.db.reading() as session:
            rows = session.execute(
                select(TagRow.step_index, TagRow.tag).where(TagRow.episode_id == episode_id).order_by(TagRow.id)
            )
            return [(r.step_index, r.tag) for r in rows]

    def tag_counts(self, limit: int = 100) -> list[tuple[str, int]]:
        """Every tag with the number of episodes carrying it, most used first."""
        with self.db.reading() as session:
            rows = session.execute(
                select(TagRow.tag, func.count(func.distinct(TagRow.episode_id)).label("n"))
                .group_by(TagRow.tag)
                .order_by(literal_column("n").desc(), TagRow.tag)
                .limit(limit)
            )
            return [(r.tag, r.n) for r in rows]

    def note(self, episode_id: str, note: str, author: str, step_index: int | None = None) -> int:
        """Add a free note to the episode (or a step); its id."""
        body = (note or "").strip()
        if not body:
            raise StudioError("A note needs some text.")
        if len(body) > MAX_NOTE:
            raise StudioError(f"A note is at most {MAX_NOTE} characters (got {len(body)}).")

        def work(session: Session) -> int:
            self._check_target(session, episode_id, step_index)
            row = NoteRow(
                episode_id=episode_id, step_index=step_index, text=body, author=author[:200], created_at=utc_now()
            )
            session.add(row)
            session.flush()
            return row.id

        return self.db.write(work)

    def notes_of(self, episode_id: str) -> list[dict[str, Any]]:
        with self.db.reading() as session:
            rows = session.scalars(select(NoteRow).where(NoteRow.episode_id == episode_id).order_by(NoteRow.id))
            return [
                {"id": r.id, "step": r.step_index, "text": r.text, "author": r.author, "created_at": r.created_at}
                for r in rows
            ]


def snippet(body: str, terms: list[str], width: int = 160) -> str:
    """Plain text around the first word of the query (the caller escapes it for HTML)."""
    lowered = body.lower()
    found = [lowered.find(term.lower()) for term in terms]
    start = min((at for at in found if at >= 0), default=0)
    begin = max(0, start - width // 3)
    cut = body[begin : begin + width].replace("\n", " ")
    return ("…" if begin else "") + cut + ("…" if begin + width < len(body) else "")
