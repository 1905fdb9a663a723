"""An imported transcript looked inside with a real model: every step's output re-scored under the
embedded default model, stored as a scorer record, equal to an independent float64 forward pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agent_studio.storage import open_store
from studio.evaluation.crossscore import cross_score, with_scored_tokens
from studio.importers.registry import read_episodes
from studio.importers.transcript import prompt_at
from studio.models.registry import ModelRegistry
from tests.support import recorded

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def default_model():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield ModelRegistry().load("default")


def test_rescoring_an_imported_episode_equals_an_independent_forward_pass(tmp_path: Path, default_model) -> None:
    db = tmp_path / "s.db"
    path = recorded.chat_jsonl(tmp_path)
    with open_store(db) as store:
        store.episodes.save_stream(read_episodes("chat", path))
        episode = next(e for e in (store.episodes.get(s.id) for s in store.episodes.summaries()) if e.length == 2)
    done = subprocess.run(
        [sys.executable, "app.py", "crossscore", episode.id, "--model", "default", "--db", str(db)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    with open_store(db) as store:
        scores = store.cross_scores.of_episode(episode.id)
    assert [s.step_index for s in scores] == [0, 1]
    model, tokenizer = default_model.model, default_model.tokenizer
    for score, step in zip(scores, episode.steps):
        assert "".join(t.text for t in score.tokens) == step.raw
        prompt = tokenizer(default_model.render(prompt_at(episode, step.index)), add_special_tokens=False)["input_ids"]
        output = [t.id for t in score.tokens]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + output])).logits[0].double()
        logprobs = torch.log_softmax(logits, dim=-1)
        for offset, token in enumerate(score.tokens):
            row = logprobs[len(prompt) + offset - 1]
            assert token.logprob == pytest.approx(float(row[token.id]), abs=1e-4)
            entropy = float(-(row.exp() * row).sum())
            assert token.entropy == pytest.approx(entropy, abs=1e-3)
            assert token.top[0].id == int(row.argmax())
    # The trace shows the scorer's tokens where the imported step has none of its own.
    shown = with_scored_tokens(episode, scores)
    assert [t.logprob for t in shown.steps[1].tokens] == [t.logprob for t in scores[1].tokens]
    assert episode.steps[1].tokens is None  # the stored record is unchanged


def test_the_same_scores_in_process(default_model, tmp_path: Path) -> None:
    """cross_score on the record gives what the CLI stored (no environment is made for an imported one)."""
    (episode, _second) = read_episodes("chat", recorded.chat_jsonl(tmp_path))
    scores = cross_score(episode, default_model)
    assert len(scores) == 2 and all(s.preferred is None for s in scores)
    assert scores[0].own_total is None and scores[0].total < 0


def test_attention_looks_into_an_imported_step_over_its_rebuilt_prompt(default_model, tmp_path: Path) -> None:
    from studio.session import StudioSession

    (episode, _second) = read_episodes("chat", recorded.chat_jsonl(tmp_path))
    session = StudioSession(ModelRegistry(), model_a=default_model)
    session.open(episode)
    amap = session.attention(1)
    prompt = default_model.tokenizer(default_model.render(prompt_at(episode, 1)), add_special_tokens=False)["input_ids"]
    assert amap.prompt_length == len(prompt)  # the rebuilt prompt: system, question, tool call and result
    session.close()
