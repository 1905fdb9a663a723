"""Agreement between annotators: percent agreement, Cohen's kappa and Krippendorff's alpha (pure functions)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping
from itertools import combinations
from typing import Any

Votes = Mapping[Hashable, Mapping[str, str]]
"""item -> annotator -> label."""


def item_agreement(labels: Mapping[str, str]) -> float | None:
    """Share of annotator pairs that gave this item the same label (None with fewer than two)."""
    values = list(labels.values())
    if len(values) < 2:
        return None
    pairs = list(combinations(values, 2))
    return sum(a == b for a, b in pairs) / len(pairs)


def percent_agreement(votes: Votes) -> float | None:
    """Mean :func:`item_agreement` over the items judged by at least two annotators."""
    scores = [s for s in (item_agreement(labels) for labels in votes.values()) if s is not None]
    return sum(scores) / len(scores) if scores else None


def cohen_kappa(first: list[str], second: list[str]) -> float | None:
    """Cohen's kappa of two annotators' labels of the same items (None without items).

    kappa = (p_o - p_e) / (1 - p_e), with p_e from each annotator's label frequencies.
    When both always use one and the same label, agreement is perfect and kappa is 1.
    """
    if len(first) != len(second):
        raise ValueError("both annotators must label the same items")
    n = len(first)
    if n == 0:
        return None
    observed = sum(a == b for a, b in zip(first, second)) / n
    counts_a, counts_b = Counter(first), Counter(second)
    expected = sum(counts_a[label] * counts_b[label] for label in counts_a) / (n * n)
    if expected == 1.0:
        return 1.0
    return (observed - expected) / (1.0 - expected)


def krippendorff_alpha(votes: Votes) -> float | None:
    """Krippendorff's alpha (nominal) over any number of annotators, each labelling any items.

    Items with one label are not pairable and are left out. From the coincidence matrix o (each
    item with m labels adds 1 / (m - 1) for every ordered pair of labels by two annotators) and
    the label totals n_c: alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k.
    None when it is undefined: no pairable item, or a single label used throughout (no variation
    to agree about).
    """
    coincidences: Counter[tuple[str, str]] = Counter()
    for labels in votes.values():
        values = list(labels.values())
        if len(values) < 2:
            continue
        weight = 1.0 / (len(values) - 1)
        for i, first in enumerate(values):
            for j, second in enumerate(values):
                if i != j:
                    coincidences[(first, second)] += weight
    totals: Counter[str] = Counter()
    for (first, _second), weight in coincidences.items():
        totals[first] += weight
    n = sum(totals.values())
    if len(totals) < 2:
        return None
    disagreement = sum(weight for (first, second), weight in coincidences.items() if first != second)
    expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k)
    return 1.0 - (n - 1.0) * disagreement / expected


def agreement_report(votes: Votes) -> dict[str, Any]:
    """Overall and per-item agreement, Cohen's kappa for every two annotators who share items, and
    Krippendorff's alpha over all of them."""
    annotators = sorted({a for labels in votes.values() for a in labels})
    pairwise = []
    for a, b in combinations(annotators, 2):
        shared = [item for item, labels in votes.items() if a in labels and b in labels]
        if shared:
            kappa = cohen_kappa([votes[i][a] for i in shared], [votes[i][b] for i in shared])
            agree = sum(votes[i][a] == votes[i][b] for i in shared) / len(shared)
            pairwise.append(
                {"annotators": [a, b], "items": len(shared), "percent_agreement": agree, "cohen_kappa": kappa}
            )
    per_item = {str(item): score for item, labels in votes.items() if (score := item_agreement(labels)) is not None}
    return {
        "annotators": annotators,
        "items_with_two_or_more": len(per_item),
        "percent_agreement": percent_agreement(votes),
        # With exactly two annotators this is the study's kappa; with more, see `pairwise`.
        "cohen_kappa": pairwise[0]["cohen_kappa"] if len(annotators) == 2 and pairwise else None,
        # Any number of annotators, missing labels allowed: the study-wide figure with three or more.
        "krippendorff_alpha": krippendorff_alpha(votes),
        "pairwise": pairwise,
        "per_item": per_item,
    }


#: Annotator names that are not people: Monte Carlo values and model judges.
MACHINE_PREFIXES = ("mc:", "judge:")


def is_person(annotator: str) -> bool:
    return not annotator.startswith(MACHINE_PREFIXES)


def machine_vs_people(votes: Votes, prefix: str) -> dict[str, Any]:
    """How often the annotators named ``prefix…`` (``mc:`` or ``judge:``, all settings pooled)
    agree with people on the items both judged: each (machine, person) verdict on an item is one
    comparison; percent agreement and Cohen's kappa over the comparisons."""
    machine: list[str] = []
    people: list[str] = []
    items = 0
    for labels in votes.values():
        machines = [label for name, label in labels.items() if name.startswith(prefix)]
        persons = [label for name, label in labels.items() if is_person(name)]
        if not machines or not persons:
            continue
        items += 1
        for said in machines:
            for person in persons:
                machine.append(said)
                people.append(person)
    agree = sum(a == b for a, b in zip(machine, people)) / len(machine) if machine else None
    return {"items": items, "comparisons": len(machine), "percent_agreement": agree,
            "cohen_kappa": cohen_kappa(machine, people)}  # fmt: skip
