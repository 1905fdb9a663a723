"""Stored token records are exactly the output: their texts spell ``raw``, the policy's own
tokens are marked, and their numbers are what an independent forward pass gives."""

from __future__ import annotations

import pytest
import torch

from studio.agents.react import ReActConfig, ReActPolicy
from studio.models.base import SamplingParams
from studio.models.hf import TransformersBackend
from studio.models.hf_decode import TokenTexts
from studio.models.scripted import ScriptedBackend
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from studio.analysis.attention import policy_written
from studio.trace import Episode
from tests.support.tiny_models import tiny_llama, tiny_tokenizer

SAMPLED = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=10, seed=3)


@pytest.fixture(scope="module")
def tiny() -> TransformersBackend:
    tokenizer = tiny_tokenizer()
    return TransformersBackend(tiny_llama(tokenizer), tokenizer)


def episode(backend, env: str, steps: int, **config) -> Episode:
    policy = ReActPolicy(backend, ReActConfig(**config))
    runner = EpisodeRunner(env, policy, config=RunnerConfig(max_steps=50, max_invalid_actions=50))
    runner.reset(seed=2)
    for _ in range(steps):
        runner.step()
    return runner.episode


def outputs(ep: Episode):
    for step in ep.steps:
        yield step.raw, step.tokens
        for candidate in step.candidates:
            yield candidate.raw, candidate.tokens


def assert_spelled(ep: Episode) -> int:
    checked = 0
    for raw, tokens in outputs(ep):
        assert tokens, "a model output without token records"
        assert "".join(t.text for t in tokens) == raw  # the tokens are the output, nothing more or less
        assert raw.startswith("Thought:") and "".join(t.text for t in tokens if t.origin == "forced") == "Thought:"
        checked += 1
    return checked


@pytest.mark.parametrize("mode", ["generate", "score"])
def test_every_output_is_spelled_by_its_tokens(tiny, mode: str) -> None:
    ep = episode(tiny, "gridworld", 3, action_mode=mode, sampling=SAMPLED, candidates=3)
    assert assert_spelled(ep) == 9  # taken and two candidates, three steps
    for step in ep.steps:
        if mode == "generate":
            # A random model never writes "Action:": the policy asked for it, and says so in the tokens.
            assert step.extra["action_nudged"]
            inserted = [t for t in step.tokens if t.origin == "inserted"]
            assert "".join(t.text for t in inserted).strip() == "Action:"
        else:
            scored = "".join(t.text for t in step.tokens if t.origin == "scored")
            assert scored == f" {step.action}"  # the action chosen by scoring, as its own tokens
        assert all(t.logprob <= 0 and t.entropy is not None and t.entropy >= 0 for t in step.tokens)


def test_a_nudged_step_from_a_scripted_model_is_spelled_too() -> None:
    backend = ScriptedBackend(["Thought: the door is north.\n\n", "go north\nmore"])
    ep = episode(backend, "gridworld", 2, sampling=SamplingParams(temperature=0.0))
    assert assert_spelled(ep) == 2
    step = ep.steps[0]
    assert step.extra["action_nudged"] and step.action == "go north"
    assert step.raw == "Thought: the door is north.\n\nAction:go north"


def first_sample_and_reference(tiny):
    """Step 1 of a sampled episode: its prompt ids, its tokens up to the inserted "Action:" (the
    forced prefix and the first sample, as the model saw them), and the log-softmax of one plain
    forward pass over both (float64), to check stored numbers against; and the step."""
    step = episode(tiny, "gridworld", 2, sampling=SAMPLED).steps[1]
    prompt = tiny.tokenizer(tiny.render(step.prompt), add_special_tokens=False)["input_ids"]
    first = []
    for token in step.tokens:
        if token.origin == "inserted":
            break
        first.append(token)
    with torch.no_grad():
        logits = tiny.model(input_ids=torch.tensor([prompt + [t.id for t in first]])).logits[0].double()
    return step, prompt, first, torch.log_softmax(logits, dim=-1)


def test_stored_logprobs_are_what_an_independent_forward_pass_gives(tiny) -> None:
    """The decode loop (cached, float64 log-softmax) against one plain pass over prompt + output."""
    _step, prompt, first, logprobs = first_sample_and_reference(tiny)
    for offset, token in enumerate(first):
        expected = float(logprobs[len(prompt) + offset - 1, token.id])
        assert token.logprob == pytest.approx(expected, abs=1e-4), (offset, token)


def test_token_texts_join_to_the_decoded_text_even_across_split_characters() -> None:
    tokenizer = tiny_tokenizer()
    for text in ["Thought: go east.\nAction: go east", "héllo wörld 你好 🙂", "  two  spaces\n\n"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert "".join(TokenTexts(tokenizer.decode).texts(ids)) == tokenizer.decode(ids)


def test_the_policy_written_ranges_and_the_action_span(tiny) -> None:
    ep = episode(tiny, "gridworld", 1, sampling=SAMPLED)
    step = ep.steps[0]
    written = policy_written(step.raw, step.tokens)
    assert written[0] == (0, len("Thought:"))
    assert step.raw[written[1][0] : written[1][1]].strip() == "Action:"  # the inserted marker
    amap = tiny.attention(step.prompt, "Thought: nothing to do here", written=[(0, 8)])
    from studio.errors import StudioError

    with pytest.raises(StudioError, match="no action"):
        amap.aggregate("mean", span="action")  # no "Action:": no action span, never all tokens
    assert len(amap.span_rows["generated"]) == len(amap.rows) and amap.rows[0] >= amap.prompt_length


def test_an_unknown_token_origin_in_a_file_is_one_line() -> None:
    from studio.errors import StudioError
    from studio.trace import Episode, Step, TokenInfo

    episode = Episode(
        env="gridworld",
        seed=0,
        steps=[Step(index=0, observation="o", action="a", raw="a", tokens=[TokenInfo(1, "a", -0.1, origin="model")])],
    )
    data = episode.to_dict()
    data["steps"][0]["tokens"][0]["origin"] = "<b>me</b>"
    with pytest.raises(StudioError, match="origin: expected one of model, forced, inserted, scored"):
        Episode.from_dict(data).validate()


def test_every_token_carries_the_models_top_alternatives_as_a_forward_pass_gives_them(tiny) -> None:
    """Generated, forced, inserted and scored tokens: the top-k of the same distribution their own
    logprob comes from (independent pass), most likely first; greedy picks the first."""
    step, prompt, first, logprobs = first_sample_and_reference(tiny)
    assert all(t.top is not None and len(t.top) == tiny.top_k for t in step.tokens)
    for offset, token in enumerate(first):
        values, expected_ids = logprobs[len(prompt) + offset - 1].topk(tiny.top_k)
        assert [a.id for a in token.top] == expected_ids.tolist(), (offset, token)
        assert [a.logprob for a in token.top] == pytest.approx(values.tolist(), abs=1e-4)
        assert token.top[0].logprob >= token.logprob - 1e-9 and token.top[0].text == tiny.token_text(token.top[0].id)
    scored = episode(tiny, "gridworld", 1, action_mode="score", sampling=SAMPLED).steps[0]
    assert all(t.top for t in scored.tokens if t.origin in ("forced", "scored"))
    greedy = episode(tiny, "gridworld", 1, sampling=SamplingParams(temperature=0.0, max_new_tokens=8)).steps[0]
    assert all(t.id == t.top[0].id for t in greedy.tokens if t.origin == "model")


def test_alternatives_round_trip_and_a_hostile_one_is_text() -> None:
    from studio.trace import Episode as Record
    from studio.trace import Step, TokenAlternative, TokenInfo
    from studio.viz.html import tokens_html

    hostile = TokenInfo(1, "a", -0.1, 0.5, top=[TokenAlternative(2, '<img src=x onerror="alert(1)">', -0.3)])
    record = Record(
        env="gridworld", seed=0, steps=[Step(index=0, observation="o", action="a", raw="a", tokens=[hostile])]
    )
    again = Record.from_dict(record.to_dict())
    again.validate()
    assert again.steps[0].tokens[0].top == hostile.top
    html = tokens_html([hostile])
    assert "<img" not in html and "&lt;img src=x onerror=" in html and "most likely here" in html
    data = record.to_dict()
    data["steps"][0]["tokens"][0]["top"] = [{"id": 1, "text": "x", "logprob": -1.0}] * 21
    from studio.errors import StudioError

    with pytest.raises(StudioError, match="top"):
        Record.from_dict(data).validate()
