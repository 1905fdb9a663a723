"""The arithmetic of annotation campaigns, apart from where they are stored: who gets which item
(round-robin with overlap) and how good each annotator is (agreement with the others, with the
adjudicated decisions and with gold answers; time per item).

``votes`` here is item -> annotator -> choice, as in :mod:`studio.evaluation.stats`.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from studio.errors import StudioError
from studio.evaluation.stats import cohen_kappa, is_person

Votes = Mapping[str, Mapping[str, str]]


def round_robin(items: Sequence[str], annotators: Sequence[str], overlap: int) -> dict[str, list[str]]:
    """Each item -> the ``overlap`` distinct annotators it goes to, dealt in turn.

    Item ``i`` goes to annotators ``(i * overlap + j) mod n`` for ``j < overlap``: every item gets
    exactly ``overlap`` different people, and the load differs by at most one item between people.
    """
    people = list(dict.fromkeys(annotators))
    if overlap < 1:
        raise StudioError("The overlap is at least 1 (annotators per item).")
    if not people:
        raise StudioError("Round-robin deals items to named annotators: give them (--annotators, or --auth-file).")
    if len(people) < overlap:
        raise StudioError(
            f"An overlap of {overlap} needs at least {overlap} annotators; {len(people)} named "
            "(give more with --annotators, or lower --overlap)."
        )
    n = len(people)
    return {item: [people[(i * overlap + j) % n] for j in range(overlap)] for i, item in enumerate(items)}


def disagreeing(labels: Mapping[str, str]) -> bool:
    """Whether one item's judgements need an adjudicator: people who differ, or a machine (``mc:``,
    ``judge:``) that differs from the people's plurality."""
    people = [choice for who, choice in labels.items() if is_person(who)]
    machines = [choice for who, choice in labels.items() if not is_person(who)]
    if len(set(people)) > 1:
        return True
    return bool(people) and any(choice != people[0] for choice in machines)


def _share(hits: list[bool]) -> float | None:
    return sum(hits) / len(hits) if hits else None


def annotator_quality(
    votes: Votes,
    adjudicated: Mapping[str, str] | None = None,
    gold: Mapping[str, str] | None = None,
    seconds: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per annotator: items judged; agreement with the others (the share of (item, other annotator)
    comparisons that agree, and Cohen's kappa against each other annotator over their shared items);
    accuracy against adjudicated decisions and against gold answers; median seconds per item.

    Gold items count only toward gold accuracy, not toward agreement with the others (everyone
    judges them, so they would weigh the agreement toward easy, known items).
    """
    adjudicated, gold, seconds = adjudicated or {}, gold or {}, seconds or {}
    annotators = sorted({who for labels in votes.values() for who in labels})
    plain = {item: labels for item, labels in votes.items() if item not in gold}
    report: dict[str, dict[str, Any]] = {}
    for who in annotators:
        mine = {item: labels[who] for item, labels in votes.items() if who in labels}
        comparisons = [
            choice == other
            for item, choice in mine.items()
            if item in plain
            for name, other in plain[item].items()
            if name != who
        ]
        kappas = {}
        for other in annotators:
            shared = [item for item in plain if who in plain[item] and other in plain[item]]
            if other != who and shared:
                kappas[other] = cohen_kappa([plain[i][who] for i in shared], [plain[i][other] for i in shared])
        times = [float(s) for s in seconds.get(who, ()) if s is not None]
        report[who] = {
            "judged": len(mine),
            "agreement_with_others": _share(comparisons),
            "comparisons": len(comparisons),
            "kappa_with": kappas,
            "agreement_with_adjudicated": _share([c == adjudicated[i] for i, c in mine.items() if i in adjudicated]),
            "adjudicated_items": sum(i in adjudicated for i in mine),
            "gold_accuracy": _share([c == gold[i] for i, c in mine.items() if i in gold]),
            "gold_items": sum(i in gold for i in mine),
            "median_seconds": statistics.median(times) if times else None,
        }
    return report
