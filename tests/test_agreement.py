"""Agreement statistics against cases with known answers."""

from __future__ import annotations

import pytest

from storage.agreement import agreement_report, cohen_kappa, item_agreement, percent_agreement


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
