"""Preference pairs, the annotation queue, judgements and step labels: one store, three roles.

Making pairs is :mod:`storage.pairing`, the queue and judgements :mod:`storage.judging`, step
labels :mod:`storage.labels`; :class:`PreferenceStore` is all three over one database, plus the
numbers (counts and agreement).

Pairs come from three sources: the candidates sampled at a step together with the output
actually taken (step pairs), two finished episodes on the same environment, options and
seed (trajectory pairs), or two things picked by hand. Every pair gets, once, a random
``swapped`` bit (blind views show its sides the other way round) and a random ``shuffle``
key that orders every annotator's queue: stable across sessions, random with respect to
source, model and time. Choices are stored in terms of the stored pair, whatever was shown.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from studio.evaluation.stats import agreement_report, machine_vs_people
from agent_studio.storage.db import Database, first_line
from agent_studio.storage.episodes import EpisodeStore
from agent_studio.storage.judging import Judging
from agent_studio.storage.labels import StepLabelling
from agent_studio.storage.values import ValueKeeping
from agent_studio.storage.orm import AnnotationRow, AnnotatorRow, PairRow
from agent_studio.storage.pairing import PairMaking
from agent_studio.storage.records import (
    CHOICES,
)
from agent_studio.storage.vocab import SWAP, majority, normalize_annotator, normalize_choice
from studio.errors import StudioError

__all__ = ["CandidatePairSink", "PreferenceStore", "majority", "normalize_annotator", "normalize_choice"]


class PreferenceStore(PairMaking, Judging, StepLabelling, ValueKeeping):
    """Pairs, the annotation queue, annotations, step labels, Monte Carlo step values and agreement."""

    def __init__(self, database: Database, episodes: EpisodeStore) -> None:
        self.db = database
        self.episodes = episodes
        self._random = random.Random()

    # -- numbers -------------------------------------------------------------------------------
    def votes(self) -> dict[str, dict[str, str]]:
        """pair id -> annotator -> choice (of the stored pair)."""
        query = select(AnnotationRow.pair_id, AnnotatorRow.name, AnnotationRow.choice).join(
            AnnotatorRow, AnnotatorRow.id == AnnotationRow.annotator_id
        )
        votes: dict[str, dict[str, str]] = defaultdict(dict)
        with self.db.reading() as session:
            for pair_id, name, choice in session.execute(query):
                votes[pair_id][name] = choice
        return dict(votes)

    def stats(self) -> dict[str, Any]:
        """Counts of pairs, annotations and labels, per annotator, and agreement between annotators.

        ``choices`` counts left/right of the stored pair; ``choices_as_shown`` as the annotators
        saw them (what they pressed)."""
        with self.db.reading() as session:
            pairs_by_kind = dict(session.execute(select(PairRow.kind, func.count()).group_by(PairRow.kind)).all())
            per_annotator = dict(
                session.execute(
                    select(AnnotatorRow.name, func.count())
                    .join(AnnotationRow, AnnotationRow.annotator_id == AnnotatorRow.id)
                    .group_by(AnnotatorRow.name)
                ).all()
            )
            by_side = session.execute(
                select(AnnotationRow.choice, PairRow.swapped, func.count())
                .join(PairRow, AnnotationRow.pair_id == PairRow.id)
                .group_by(AnnotationRow.choice, PairRow.swapped)
            ).all()
        votes = self.votes()
        label_records = self.step_labels()
        label_votes: dict[tuple[str, int], dict[str, str]] = defaultdict(dict)
        for record in label_records:
            label_votes[(record.episode_id, record.step_index)][record.annotator] = record.label
        choices: Counter[str] = Counter()
        shown: Counter[str] = Counter()  # the side the annotator saw and pressed (blind views swap half the pairs)
        for choice, swapped, count in by_side:
            choices[choice] += count
            shown[SWAP.get(choice, choice) if swapped else choice] += count
        return {
            "pairs": sum(pairs_by_kind.values()),
            "pairs_by_kind": pairs_by_kind,
            "annotations": sum(per_annotator.values()),
            "annotations_by_annotator": per_annotator,
            "choices": {c: choices.get(c, 0) for c in CHOICES},
            "choices_as_shown": {c: shown.get(c, 0) for c in CHOICES},
            "step_labels": len(label_records),
            "agreement": agreement_report(votes),
            "label_agreement": agreement_report(label_votes),
            # Machines against people (all settings of each kind pooled): the check that MC labels
            # and model judges can stand in for annotators.
            "machines_vs_people": {
                "mc pairs": machine_vs_people(votes, "mc:"),
                "mc step labels": machine_vs_people(label_votes, "mc:"),
                "judge pairs": machine_vs_people(votes, "judge:"),
            },
        }


class CandidatePairSink:
    """A runner sink that queues the pairs of each step with candidates as soon as it is stored.

    Put it after the store's own sink. Sampling K candidates in the studio is then enough for
    their pairs to appear in the annotation queue.
    """

    def __init__(self, preferences: PreferenceStore) -> None:
        self.preferences = preferences

    def handle(self, event: Any) -> None:
        if event.kind == "step" and event.step is not None and event.step.candidates:
            try:
                self.preferences.pairs_from_candidates(
                    episode_ids=[event.episode.id], step_index=event.step.index
                )  # this step only
            except SQLAlchemyError as exc:  # the step itself is stored: say so, and how to make its pairs later
                raise StudioError(
                    f"Step {event.step.index} is stored, but its candidate pairs could not be queued ({first_line(exc)}); "
                    "`pairs --from candidates` makes them later."
                ) from None
