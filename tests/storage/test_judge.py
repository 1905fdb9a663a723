"""A model as judge of queued pairs: verdicts from its token probabilities, both orders averaged,
stored as annotator judge:MODEL, compared with people by the agreement numbers."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent_studio.storage import Store
from studio.scaling.judge import judge_queue
from studio.errors import StudioError
from studio.scaling.judge import judge_messages, judge_pair
from studio.models.base import Backend, Capabilities, ModelCard, ScoreResult
from tests.support.store_helpers import run_react

ROOT = Path(__file__).resolve().parents[2]


class RuleJudge(Backend):
    """A judge with a known mind: it prefers the output that goes east (and, if ``biased``, always
    says A whatever it reads: a position bias, which averaging both orders must cancel)."""

    capabilities = Capabilities(logprobs=True, scoring=True)

    def __init__(self, biased: bool = False) -> None:
        self.biased = biased
        self.calls = 0

    @property
    def card(self) -> ModelCard:
        return ModelCard(id="rule-judge", source="test", capabilities=self.capabilities)

    def generate(self, *args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError("a judge only scores")

    def score(self, messages, continuations, **kwargs) -> ScoreResult:  # noqa: ANN001, ANN003
        self.calls += 1
        assert continuations == [" A", " B"] and kwargs["assistant_prefix"] == "Verdict: Output"
        text = messages[-1]["content"]
        first = re.search(r"Output A:\n(.*?)\n\nOutput B:", text, re.S).group(1)
        p_a = 0.9 if self.biased else (0.8 if "go east" in first else 0.2)
        return ScoreResult(token_logprobs=[[math.log(p_a)], [math.log(1 - p_a)]], tokens=[[0], [1]])


def test_the_judge_judges_the_queue_blind_and_agreement_is_computed(store: Store) -> None:
    run_react(store, steps=2)  # 2 steps × 3 outputs (east, north, an invalid one): 6 step pairs
    store.preferences.pairs_from_candidates()
    judge = RuleJudge()
    assert judge_queue(store.preferences, judge, limit=4) == 4
    assert judge_queue(store.preferences, judge) == 2  # only what it has not judged yet
    assert judge_queue(store.preferences, judge) == 0
    verdicts = store.preferences.annotations(annotator="judge:rule-judge")
    assert len(verdicts) == 6 and judge.calls == 12  # two orders per pair
    for verdict in verdicts:
        pair = store.preferences.item(verdict.pair_id)  # as shown (maybe swapped)
        left_east = "go east" in pair.left.raw
        right_east = "go east" in pair.right.raw
        shown = "left" if left_east else "right" if right_east else "tie"
        stored = {"left": "right", "right": "left"}.get(shown, shown) if pair.swapped else shown
        assert verdict.choice == stored, (pair.left.raw, pair.right.raw, verdict)
        assert "p(left better)" in verdict.rationale and 0.5 <= verdict.confidence <= 1
    # A person who agrees with it on every pair: 100% agreement between the two annotators.
    for verdict in verdicts:
        store.preferences.annotate(verdict.pair_id, "ada", verdict.choice, as_shown=False)
    report = store.preferences.stats()["agreement"]
    (pairwise,) = report["pairwise"]
    assert set(pairwise["annotators"]) == {"ada", "judge:rule-judge"} and pairwise["percent_agreement"] == 1.0


def test_a_position_bias_alone_gives_a_tie(store: Store) -> None:
    run_react(store, steps=1)
    store.preferences.pairs_from_candidates()
    (item, *_) = store.preferences.queue("judge:rule-judge")
    verdict = judge_pair(RuleJudge(biased=True), item)
    assert verdict.p_left == pytest.approx(0.5) and verdict.choice == "tie"
    assert verdict.p_left_first == pytest.approx(0.9) and verdict.p_left_second == pytest.approx(0.1)


def test_a_tiny_models_verdict_is_its_own_probabilities(store: Store) -> None:
    """The verdict's numbers equal a direct score of the same two prompts (reproducible)."""
    from studio.models.hf import TransformersBackend
    from tests.support.tiny_models import tiny_llama, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    backend = TransformersBackend(tiny_llama(tokenizer), tokenizer)
    run_react(store, steps=1)
    store.preferences.pairs_from_candidates()
    (item, *_) = store.preferences.queue("judge:in-memory")
    verdict = judge_pair(backend, item)
    direct = backend.score(
        judge_messages(item, item.left, item.right), [" A", " B"], assistant_prefix="Verdict: Output"
    )
    a, b = direct.totals
    assert verdict.p_left_first == pytest.approx(math.exp(a) / (math.exp(a) + math.exp(b)), abs=1e-9)
    assert 0 < verdict.p_left < 1


def test_a_model_that_cannot_score_cannot_judge(store: Store) -> None:
    run_react(store, steps=1)
    store.preferences.pairs_from_candidates()

    class Talker(RuleJudge):
        capabilities = Capabilities()  # generates, cannot score

    (item, *_) = store.preferences.queue("x")
    with pytest.raises(StudioError, match="cannot judge: its backend cannot score given text"):
        judge_pair(Talker(), item)


def test_the_judge_command(tmp_path: Path) -> None:
    import json

    db = tmp_path / "j.db"
    from agent_studio.storage import open_store

    with open_store(db) as store:
        run_react(store, steps=1)
        store.preferences.pairs_from_candidates()
    command = [sys.executable, "app.py", "judge", "--db", str(db), "--model", "scripted:tests/data/xss_model.json"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"judge": "judge:scripted:xss_model.json", "judged": 3}
    assert "judged 3/3" in result.stderr
    with open_store(db) as store:
        assert len(store.preferences.annotations(annotator="judge:scripted:xss_model.json")) == 3
    missing = subprocess.run(
        [*command[:4], str(tmp_path / "none.db"), *command[5:]], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1


def test_a_judgement_keeps_its_prompts_hashes_and_each_stored_sides_probability(store: Store) -> None:
    from studio.scaling.judge import TEMPLATE_VERSION, prompt_hash

    import random

    run_react(store, steps=2)
    # Each pair's swapped bit is random: seeded here so that both cases are always among the 6 pairs
    # (unseeded, all 6 came out unswapped once in 64 runs).
    store.preferences._random = random.Random(1)
    store.preferences.pairs_from_candidates()
    judge_queue(store.preferences, RuleJudge())
    verdicts = store.preferences.annotations(annotator="judge:rule-judge")
    assert any(store.preferences.item(v.pair_id).swapped for v in verdicts)  # both cases are covered
    for verdict in verdicts:
        item = store.preferences.item(verdict.pair_id)  # the sides as the judge saw them
        provenance = verdict.provenance
        assert provenance["kind"] == "judge" and provenance["template_version"] == TEMPLATE_VERSION
        # The prompts can be rebuilt from the stored pair and checked against what the judge read.
        assert provenance["prompt_sha256"] == {
            "shown_left_first": prompt_hash(judge_messages(item, item.left, item.right)),
            "shown_left_second": prompt_hash(judge_messages(item, item.right, item.left)),
        }
        # Each stored side's probability, derived independently from the rule (east is better: P(A) 0.8).
        p = {side: 0.8 if "go east" in getattr(item, side).raw else 0.2 for side in ("left", "right")}
        p_shown_left = (p["left"] + (1 - p["right"])) / 2
        p_stored_left = 1 - p_shown_left if item.swapped else p_shown_left
        assert provenance["p_left"] == pytest.approx(p_stored_left, abs=1e-12)
        assert provenance["p_right"] == pytest.approx(1 - p_stored_left, abs=1e-12)
        stored_choice = "tie" if abs(p_stored_left - 0.5) < 0.02 else ("left" if p_stored_left > 0.5 else "right")
        assert verdict.choice == stored_choice
    assert all(a.provenance is None for a in store.preferences.annotations() if a.annotator == "ada")
