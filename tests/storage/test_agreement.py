"""Agreement statistics against cases with known answers."""

from __future__ import annotations

import krippendorff
import numpy as np
import pytest

from studio.evaluation.stats import agreement_report, cohen_kappa, item_agreement, krippendorff_alpha, percent_agreement


def test_cohen_kappa_of_the_textbook_example() -> None:
    # 50 items: both yes 20, A yes/B no 5, A no/B yes 10, both no 15 -> p_o 0.7, p_e 0.5, kappa 0.4.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_edges() -> None:
    assert cohen_kappa(["left", "right"], ["left", "right"]) == pytest.approx(1.0)
    assert cohen_kappa(["left", "right"], ["right", "left"]) == pytest.approx(-1.0)
    assert cohen_kappa(["tie", "tie"], ["tie", "tie"]) == 1.0
    assert cohen_kappa([], []) is None
    with pytest.raises(ValueError):
        cohen_kappa(["left"], [])


def test_percent_agreement_per_item_and_overall() -> None:
    assert item_agreement({"a": "left"}) is None
    assert item_agreement({"a": "left", "b": "left", "c": "right"}) == pytest.approx(1 / 3)
    votes = {"p1": {"a": "left", "b": "left"}, "p2": {"a": "left", "b": "right"}, "p3": {"a": "tie"}}
    assert percent_agreement(votes) == pytest.approx(0.5)
    report = agreement_report(votes)
    assert report["annotators"] == ["a", "b"] and report["items_with_two_or_more"] == 2
    assert report["per_item"] == {"p1": 1.0, "p2": 0.0}
    assert report["pairwise"][0]["items"] == 2 and report["cohen_kappa"] == report["pairwise"][0]["cohen_kappa"]


def test_with_three_annotators_kappa_is_pairwise() -> None:
    votes = {"p1": {"a": "left", "b": "left", "c": "left"}, "p2": {"a": "right", "b": "right", "c": "left"}}
    report = agreement_report(votes)
    assert report["cohen_kappa"] is None
    assert [row["annotators"] for row in report["pairwise"]] == [["a", "b"], ["a", "c"], ["b", "c"]]
    assert report["pairwise"][0]["percent_agreement"] == 1.0


def _package_alpha(votes: dict, annotators: list[str], labels: list[str]) -> float:
    """The ``krippendorff`` package's nominal alpha of the same votes (annotators x items, NaN missing)."""
    data = np.full((len(annotators), len(votes)), np.nan)
    for column, item in enumerate(votes):
        for row, name in enumerate(annotators):
            if name in votes[item]:
                data[row, column] = labels.index(votes[item][name])
    return krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")


def test_krippendorff_alpha_of_krippendorffs_own_example() -> None:
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", nominal example: alpha 0.743.
    table = [
        "1 2 3 3 2 1 4 1 2 . . .",
        "1 2 3 3 2 2 4 1 2 5 . 3",
        ". 3 3 3 2 3 4 2 2 5 1 .",
        "1 2 3 3 2 4 4 1 2 5 1 .",
    ]
    votes = {
        item: {f"coder{c}": row.split()[item] for c, row in enumerate(table) if row.split()[item] != "."}
        for item in range(12)
    }
    assert krippendorff_alpha(votes) == pytest.approx(0.743, abs=5e-4)


@pytest.mark.parametrize("seed", range(6))
def test_krippendorff_alpha_equals_the_reference_package(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels, annotators = ["left", "right", "tie", "both_bad"], ["ada", "bob", "cy", "judge:m"]
    votes: dict[int, dict[str, str]] = {}
    for item in range(int(rng.integers(5, 40))):
        truth = labels[int(rng.integers(len(labels)))]
        chosen = [a for a in annotators if rng.random() < 0.7]  # missing labels: not everyone judges everything
        votes[item] = {a: truth if rng.random() < 0.6 else labels[int(rng.integers(len(labels)))] for a in chosen}
    assert krippendorff_alpha(votes) == pytest.approx(_package_alpha(votes, annotators, labels), abs=1e-9)


def test_krippendorff_alpha_is_undefined_without_variation_or_pairs() -> None:
    assert krippendorff_alpha({1: {"a": "tie", "b": "tie"}, 2: {"a": "tie", "c": "tie"}}) is None
    assert krippendorff_alpha({1: {"a": "left"}, 2: {"b": "right"}}) is None
    assert krippendorff_alpha({1: {"a": "left", "b": "left"}, 2: {"a": "right", "b": "right"}}) == pytest.approx(1.0)
    assert agreement_report({1: {"a": "left", "b": "right", "c": "left"}})["krippendorff_alpha"] is not None
