"""Cross-model scoring: an episode's outputs under another model, checked against a direct score and
against the model that wrote them (an independent forward pass reproduces its own logprobs)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from agent_studio.storage import open_store
from studio.agents.react import ReActConfig, ReActPolicy
from studio.agents.scripted import ExpertPolicy
from studio.evaluation.crossscore import CrossScore, cross_score
from studio.envs.registry import make_env
from studio.errors import StudioError
from studio.models.base import SamplingParams
from studio.models.hf import TransformersBackend
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from studio.trace import Step, TokenInfo
from studio.viz.crossscore_html import cross_scores_html
from studio.viz.plots import cross_score_figure
from tests.support.tiny_models import tiny_llama, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def models() -> tuple[TransformersBackend, TransformersBackend]:
    tokenizer = tiny_tokenizer()
    return (
        TransformersBackend(tiny_llama(tokenizer, seed=0), tokenizer),
        TransformersBackend(tiny_llama(tokenizer, seed=1), tokenizer),
    )


@pytest.fixture(scope="module")
def episode(models, tmp_path_factory):
    store = open_store(tmp_path_factory.mktemp("cross") / "s.db")
    policy = ReActPolicy(models[0], ReActConfig(sampling=SamplingParams(temperature=0.0, max_new_tokens=16)))
    runner = EpisodeRunner("gridworld", policy, sinks=[store.episodes.sink()], config=RunnerConfig(max_steps=3))
    runner.reset(seed=2)
    return store, runner.run()


def test_scoring_with_the_model_that_wrote_it_gives_back_its_own_logprobs(models, episode) -> None:
    _store, played = episode
    scores = cross_score(played, models[0])
    assert [s.step_index for s in scores] == [0, 1, 2]
    for score, step in zip(scores, played.steps):
        assert "".join(t.text for t in score.tokens) == step.raw
        assert [t.text for t in score.tokens] == [t.text for t in step.tokens]
        assert max(abs(d) for d in score.token_differences(step)) < TOLERANCE
        assert score.total == pytest.approx(score.own_total, abs=1e-3) and abs(score.difference) < 1e-3


def test_another_models_scores_equal_its_direct_score_and_are_stored(models, episode) -> None:
    store, played = episode
    other = models[1]
    progress = []
    scores = cross_score(played, other, progress=lambda done, total: progress.append((done, total)))
    assert progress == [(1, 3), (2, 3), (3, 3)]
    env = make_env("gridworld")
    for score, step in zip(scores, played.steps):
        direct = other.score(step.prompt, [step.raw])
        assert [t.id for t in score.tokens] == direct.tokens[0]
        assert max(abs(t.logprob - lp) for t, lp in zip(score.tokens, direct.token_logprobs[0])) < TOLERANCE
        assert abs(score.difference) > 1e-3  # another model: not the writer's numbers
        # The action B prefers: the best of every valid action scored after A's thought.
        env.rewind(played.seed, step.state)
        actions = env.valid_actions()
        prefix = step.raw[: step.raw.rfind("Action:") + len("Action:")]
        totals = other.score(step.prompt, [f" {a}" for a in actions], assistant_prefix=prefix, end_with_eos=True).totals
        assert score.preferred == actions[max(range(len(actions)), key=totals.__getitem__)]
        assert sum(math.exp(v) for v in score.action_logprobs.values()) == pytest.approx(1.0)
    assert store.cross_scores.save(scores) == 3
    assert store.cross_scores.save(scores) == 3  # scoring again replaces
    stored = store.cross_scores.of_episode(played.id)
    assert [s.to_dict() for s in stored] == [s.to_dict() for s in scores]
    assert store.cross_scores.of_episode(played.id, scorer="nobody") == []


def test_token_differences_line_up_different_tokenizations() -> None:
    step = Step(index=0, observation="", action="go", raw="ab cd", tokens=[
        TokenInfo(id=1, text="ab", logprob=-1.0), TokenInfo(id=2, text=" c", logprob=-2.0), TokenInfo(id=3, text="d", logprob=-0.5)
    ])  # fmt: skip
    score = CrossScore(
        "e" * 32,
        0,
        "b",
        [TokenInfo(id=7, text="ab ", logprob=-4.0), TokenInfo(id=8, text="cd", logprob=-1.0)],
        -3.5,
        "go",
    )
    # A's " c" starts in B's "ab " and its "d" in B's "cd".
    assert score.token_differences(step) == [pytest.approx(-1.0), pytest.approx(-0.5)]
    assert score.total == -5.0 and score.difference == pytest.approx(-1.5)


def test_episodes_without_model_output_and_models_without_scoring_are_refused(models) -> None:
    runner = EpisodeRunner("gridworld", ExpertPolicy(), config=RunnerConfig(max_steps=2))
    runner.reset(seed=0)
    with pytest.raises(StudioError, match="no model output to score"):
        cross_score(runner.run(), models[1])


def test_the_view_escapes_model_text_and_ids() -> None:
    hostile = "<img src=x onerror=alert(1)>"
    step = Step(
        index=0, observation="", action=hostile, raw=hostile, tokens=[TokenInfo(id=1, text=hostile, logprob=-1.0)]
    )
    score = CrossScore("e" * 32, 0, "<script>x()</script>", [TokenInfo(id=1, text=hostile, logprob=-3.0)], -1.0, hostile,
                       preferred="<b>go</b>", action_logprobs={"<b>go</b>": -0.1, hostile: -2.4})  # fmt: skip

    class Played:
        steps = [step]

    text = cross_scores_html(Played(), [score])
    assert "<img" not in text and "<script" not in text and "<b>go" not in text
    assert "&lt;script&gt;" in text and "B − A -2.00" in text and "90%" in text
    figure = cross_score_figure([score])
    assert "<script" not in figure.to_json()


def test_the_cli_scores_a_stored_episode(tmp_path: Path) -> None:
    db = tmp_path / "s.db"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "app.py", *args, "--db", str(db)], cwd=ROOT, capture_output=True, text=True, timeout=120
        )

    assert cli("run", "--env", "gridworld", "--policy", "expert", "--max-steps", "2").returncode == 0
    with open_store(db) as store:
        expert_id = store.episodes.summaries()[0].id
    missing = cli("crossscore", "f" * 32, "--model", "default")
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: No stored episode with id '{'f' * 32}'."
    refused = cli("crossscore", expert_id, "--model", "scripted:nothing-loads-before-this-check")
    assert refused.returncode == 2 and refused.stderr.strip() == (
        "error: This episode has no model output to score (expert, random and human steps have none)."
    )
