"""Monte Carlo step values in the store, and what is made from them: step pairs (best vs worst Q at
a step, ``source=mc``) and step labels (good when the soft value reaches a threshold, under the
annotator ``mc:<settings>``), both for people to verify and for the prm/kto/dpo exports."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent_studio.storage.db import Database
from agent_studio.storage.orm import CandidateRow, EpisodeRow, StepRow, StepValueRow
from agent_studio.storage.records import PairsMade, SideRef
from agent_studio.storage.vocab import precise_now
from studio.errors import StudioError
from studio.scaling.values import StepValue

#: The annotator MC step labels are stored under: ``mc:`` and the estimate's settings.
MC_ANNOTATOR_PREFIX = "mc:"


@dataclass
class ValuePairsMade(PairsMade):
    """What :meth:`ValueKeeping.pairs_from_values` did: pairs made, and the verdicts recorded."""

    judged: int = 0
    """Pairs (new or already queued) given the values' judgement as annotator ``mc:<settings>``."""
    annotators: list[str] = field(default_factory=list)
    """The ``mc:<settings>`` annotators that judged."""

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "judged": self.judged, "annotators": self.annotators}


class ValueKeeping:
    """Part of :class:`~storage.preferences.PreferenceStore`: step values, pairs and labels from them."""

    db: Database
    _insert_pairs: Callable[..., tuple[int, int]]
    _pair_row: Callable[..., dict[str, Any]]
    label_step: Callable[..., Any]
    annotate: Callable[..., Any]

    def save_values(self, values: list[StepValue]) -> int:
        """Store estimates (one transaction); an estimate with the same output and settings replaces the old one."""

        def save(session: Session) -> int:
            steps: dict[tuple[str, int], tuple[int, list[str]]] = {}  # a step's id and candidate ids, read once
            for value in values:
                key = (value.episode_id, value.step_index)
                if key not in steps:
                    steps[key] = _step_and_candidates(session, *key)
                step_id, candidate_ids = steps[key]
                candidate_id = _candidate_id(candidate_ids, value.output)
                row = session.scalars(
                    select(StepValueRow).where(
                        StepValueRow.step_id == step_id,
                        StepValueRow.output == value.output,
                        StepValueRow.settings == value.settings,
                    )
                ).first()
                if row is None:
                    row = StepValueRow(step_id=step_id, output=value.output, settings=value.settings)
                    session.add(row)
                row.candidate_id, row.action, row.q, row.stderr = candidate_id, value.action, value.q, value.stderr
                row.hard, row.soft, row.valid = value.hard, value.soft, value.valid
                row.rollout_policy, row.rollouts, row.horizon = value.rollout_policy, value.rollouts, value.horizon
                row.detail = {
                    "returns": value.returns,
                    "successes": value.successes,
                    "lengths": value.lengths,
                    "seeds": value.seeds,
                    "discount": value.discount,
                    "max_steps": value.max_steps,
                }
                row.created_at = precise_now()
            return len(values)

        return self.db.write(save)

    def step_values(
        self, episode_id: str | None = None, step_index: int | None = None, settings: str | None = None
    ) -> list[StepValue]:
        """Stored estimates, in episode, step and output order."""
        with self.db.reading() as session:
            return [value for value, _env, _candidate in self._value_rows(session, episode_id, step_index, settings)]

    def latest_step_values(self, episode_id: str, step_index: int) -> list[StepValue]:
        """The step's estimate saved last (one settings: a step may hold estimates under several), or []."""
        with self.db.reading() as session:
            settings = session.scalars(
                select(StepValueRow.settings)
                .join(StepRow, StepRow.id == StepValueRow.step_id)
                .where(StepRow.episode_id == episode_id, StepRow.index == step_index)
                .order_by(StepValueRow.created_at.desc(), StepValueRow.id.desc())
                .limit(1)
            ).first()
            if settings is None:
                return []
            return [value for value, _env, _candidate in self._value_rows(session, episode_id, step_index, settings)]

    def _value_rows(
        self, session: Session, episode_id: str | None, step_index: int | None, settings: str | None
    ) -> Iterator[tuple[StepValue, str, str | None]]:
        query = (
            select(StepValueRow, StepRow.episode_id, StepRow.index, EpisodeRow.env)
            .join(StepRow, StepRow.id == StepValueRow.step_id)
            .join(EpisodeRow, EpisodeRow.id == StepRow.episode_id)
            .order_by(EpisodeRow.started_at, StepRow.episode_id, StepRow.index, StepValueRow.settings, StepValueRow.id)
        )
        if episode_id:
            query = query.where(StepRow.episode_id == episode_id)
        if step_index is not None:
            query = query.where(StepRow.index == step_index)
        if settings:
            query = query.where(StepValueRow.settings == settings)
        for row, row_episode, index, env in session.execute(query):
            detail = row.detail or {}
            value = StepValue(
                episode_id=row_episode,
                step_index=index,
                output=row.output,
                action=row.action,
                q=row.q,
                stderr=row.stderr,
                hard=row.hard,
                soft=row.soft,
                returns=list(detail.get("returns", [])),
                successes=list(detail.get("successes", [])),
                lengths=list(detail.get("lengths", [])),
                rollout_policy=row.rollout_policy,
                rollouts=row.rollouts,
                horizon=row.horizon,
                seeds=list(detail.get("seeds", [])),
                valid=row.valid,
                discount=float(detail.get("discount", 1.0)),
                max_steps=detail.get("max_steps"),
            )
            yield value, env, row.candidate_id

    def pairs_from_values(
        self,
        min_gap: float = 0.0,
        min_rollouts: int = 1,
        settings: str | None = None,
        env: str | None = None,
        episode_id: str | None = None,
    ) -> ValuePairsMade:
        """At each step with estimates, the output of highest Q against the one of lowest, when their
        gap is at least ``min_gap`` (and above 0) and both had at least ``min_rollouts`` rollouts
        (Step-Level Q-Value Models' best-vs-worst).

        A new pair is queued with ``source=mc``; a pair of the same two outputs already queued (the
        studio queues every candidate pair as it steps) is kept as it is. Either way the values'
        verdict is recorded on it as the judgement of annotator ``mc:<settings>`` (the higher-Q
        side chosen, the two Qs as its rationale), so people verify it blind like any judgement
        and the Overview's agreement compares them with it."""
        if not min_gap >= 0:
            raise StudioError(f"The minimum gap must be a number >= 0, got {str(min_gap)[:20]}.")
        made = ValuePairsMade()
        verdicts: list[tuple[dict[str, Any], StepValue, StepValue]] = []
        with self.db.reading() as session:
            groups: dict[tuple[str, int, str], list[tuple[StepValue, str, str | None]]] = defaultdict(list)
            for value, value_env, candidate_id in self._value_rows(session, episode_id, None, settings):
                if (env is None or value_env == env) and value.rollouts >= min_rollouts:
                    groups[(value.episode_id, value.step_index, value.settings)].append(
                        (value, value_env, candidate_id)
                    )

        def rows() -> Iterator[dict[str, Any]]:
            for (episode, index, _settings), outputs in groups.items():
                if len(outputs) < 2:
                    continue
                best = max(outputs, key=lambda item: item[0].q)
                worst = min(outputs, key=lambda item: item[0].q)
                gap = best[0].q - worst[0].q
                if gap <= 0 or gap < min_gap:
                    continue
                if best[0].action == worst[0].action:  # the same action: only rollout noise between them
                    made.identical += 1
                    continue
                row = self._pair_row(
                    "step", "mc", best[1], SideRef(episode, index, best[2]), SideRef(episode, index, worst[2])
                )
                verdicts.append((row, best[0], worst[0]))
                yield row

        made.created, made.already_there = self._insert_pairs(rows())
        for row, best_value, worst_value in verdicts:
            self._record_verdict(row, best_value, worst_value)
            made.judged += 1
            if MC_ANNOTATOR_PREFIX + best_value.settings not in made.annotators:
                made.annotators.append(MC_ANNOTATOR_PREFIX + best_value.settings)
        return made

    def _record_verdict(self, row: dict[str, Any], best: StepValue, worst: StepValue) -> None:
        """The values' judgement on the pair of ``row``'s two sides (the stored pair, whichever made it)."""
        from agent_studio.storage.orm import PairRow

        with self.db.reading() as session:
            pair = session.scalars(select(PairRow).where(PairRow.key == row["key"])).one()
            best_is_left = (pair.left_candidate_id, pair.left_episode_id) == (
                row["left_candidate_id"],
                row["left_episode_id"],
            )
            pair_id = pair.id
        self.annotate(
            pair_id,
            MC_ANNOTATOR_PREFIX + best.settings,
            "left" if best_is_left else "right",
            rationale=f"Q {best.q:.4f} ({best.output}) vs {worst.q:.4f} ({worst.output}), {best.settings}",
            as_shown=False,
            provenance={
                "kind": "mc",
                "settings": best.settings,
                "q_left": best.q if best_is_left else worst.q,
                "q_right": worst.q if best_is_left else best.q,
                "stderr_left": best.stderr if best_is_left else worst.stderr,
                "stderr_right": worst.stderr if best_is_left else best.stderr,
                "seeds": best.seeds,
            },
        )

    def labels_from_values(
        self, threshold: float = 0.5, settings: str | None = None, episode_id: str | None = None
    ) -> int:
        """Label each valued step by its taken output: ``good`` when its soft value (the fraction of
        rollouts that succeeded) is at least ``threshold``, else ``bad``; annotator ``mc:<settings>``.
        Returns how many steps were labelled."""
        if not 0 <= threshold <= 1:
            raise StudioError(f"The threshold is a fraction of rollouts from 0 to 1, got {str(threshold)[:20]}.")
        taken = [v for v in self.step_values(episode_id, None, settings) if v.output == "taken"]
        for value in taken:
            label = "good" if value.soft >= threshold else "bad"
            note = f"soft {value.soft:.3f} over {value.rollouts} rollouts ({value.settings}), threshold {threshold:g}"
            self.label_step(value.episode_id, value.step_index, MC_ANNOTATOR_PREFIX + value.settings, label, note)
        return len(taken)


def _step_and_candidates(session: Session, episode_id: str, index: int) -> tuple[int, list[str]]:
    """A stored step's row id and its candidates' ids in order; one line if it is not stored."""
    step_id = session.scalar(select(StepRow.id).where(StepRow.episode_id == episode_id, StepRow.index == index))
    if step_id is None:
        raise StudioError(f"No stored step {index} in episode {str(episode_id)[:64]}: store the episode first.")
    ids = session.scalars(
        select(CandidateRow.id).where(CandidateRow.step_id == step_id).order_by(CandidateRow.position)
    ).all()
    return step_id, list(ids)


def _candidate_id(ids: list[str], output: str) -> str | None:
    """The candidate an output name refers to (``candidate N`` is the N-th, 1-based); None for ``taken``."""
    if output == "taken":
        return None
    number = output.removeprefix("candidate ").strip()
    if not output.startswith("candidate ") or not number.isdigit():
        raise StudioError(f"Not an output name: {output[:40]!r} (taken or candidate N).")
    if not 1 <= int(number) <= len(ids):
        raise StudioError(f"The step has no {output} ({len(ids)} candidates).")
    return ids[int(number) - 1]
