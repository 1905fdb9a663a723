"""Every statistic the studio shows, as pure functions checked against scipy, statsmodels-style
references and the ``krippendorff`` package in the tests:

- success rates: :func:`wilson_interval` (95% Wilson score interval);
- paired comparisons: :func:`mcnemar_exact` (exact McNemar test of paired successes) and
  :func:`paired_bootstrap` (percentile bootstrap of a mean paired difference), printed by :func:`p_text`;
- agreement between annotators: :func:`item_agreement`, :func:`percent_agreement`,
  :func:`cohen_kappa`, :func:`krippendorff_alpha`, :func:`agreement_report` and
  :func:`machine_vs_people` (machines' verdicts against people's).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping
from itertools import combinations
from typing import Any

import numpy as np

#: 95% two-sided normal quantile for the Wilson interval.
Z95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (``successes`` of ``trials``)."""
    if trials <= 0:
        raise ValueError("no trials")
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    low = 0.0 if successes == 0 else max(0.0, min(p, centre - half))  # exact ends (no rounding past the rate)
    high = 1.0 if successes == trials else min(1.0, max(p, centre + half))
    return low, high


BOOTSTRAP_RESAMPLES = 10_000


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs: ``only_first`` pairs where only the
    first model succeeded, ``only_second`` where only the second did. Under the null each discordant
    pair goes either way with probability 1/2: p = min(1, 2 * P(X <= min(b, c))), X ~ Binomial(b + c, 1/2).
    """
    if only_first < 0 or only_second < 0:
        raise ValueError("counts of pairs cannot be negative")
    n = only_first + only_second
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_first, only_second) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def paired_bootstrap(
    first: list[float], second: list[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> dict[str, float]:
    """The mean of ``first - second`` over paired items, its 95% percentile bootstrap interval, and a
    two-sided bootstrap p-value (twice the share of resampled means on the far side of zero, at most 1)."""
    if len(first) != len(second) or not first:
        raise ValueError("the bootstrap needs the same, non-zero number of paired values on both sides")
    differences = np.asarray(first, dtype=np.float64) - np.asarray(second, dtype=np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    if np.all(differences == 0):
        p = 1.0
    else:
        p = min(1.0, 2.0 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return {
        "mean_difference": float(differences.mean()),
        "low": float(low),
        "high": float(high),
        "p": p,
        "p_text": p_text(p, 1 / resamples),
    }


def p_text(p: float, resolution: float | None = None) -> str:
    """A p-value as every view prints it: three significant digits, and ``< 1e-4`` (the resolution)
    where the test cannot tell a smaller value from zero (a bootstrap with 10,000 resamples whose
    every resampled mean fell on one side): never "p = 0"."""
    if resolution is not None and p < resolution:
        return f"< {_short_float(resolution)}"
    return f"{p:.3g}"


def _short_float(value: float) -> str:
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}" if abs(int(exponent)) >= 4 else f"{value:g}"


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
