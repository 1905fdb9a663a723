"""The ReAct policy: prompts, both action modes, candidates, cache reuse across steps, images."""

from __future__ import annotations

import math

import pytest

from studio.agents.react import ReActConfig, ReActPolicy
from studio.models.base import SamplingParams
from studio.models.hf import TransformersBackend
from studio.models.scripted import ScriptedBackend
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from tests.support.tiny_models import tiny_llama, tiny_llava, tiny_tokenizer

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def tiny():
    tokenizer = tiny_tokenizer()
    return TransformersBackend(tiny_llama(tokenizer), tokenizer)


def run_steps(backend, env: str, steps: int, **config) -> EpisodeRunner:
    policy = ReActPolicy(backend, ReActConfig(sampling=config.pop("sampling", GREEDY), **config))
    runner = EpisodeRunner(env, policy, config=RunnerConfig(max_steps=50, max_invalid_actions=50))
    runner.reset(seed=1)
    for _ in range(steps):
        runner.step()
    return runner


def test_generate_mode_records_prompt_tokens_timing_and_reuses_the_cache(tiny) -> None:
    runner = run_steps(tiny, "gridworld", 3)
    steps = runner.episode.steps
    for step in steps:
        assert step.actor == "react" and step.raw.startswith("Thought:")
        assert step.prompt[0]["role"] == "system" and "Reach the goal" in step.prompt[0]["content"]
        assert step.prompt[-1]["content"].startswith("Observation: ") and step.observation in step.prompt[-1]["content"]
        assert step.tokens and all(t.logprob <= 0 and t.entropy >= 0 for t in step.tokens)
        assert {"generate_prefill_s", "generate_first_token_s", "policy_s"} <= set(step.timing)
        assert step.valid or step.invalid_reason  # a tiny random model mostly writes nonsense: recorded, not fatal
    assert steps[0].extra["cache"]["full_encode"]
    for step in steps[1:]:
        cache = step.extra["cache"]
        assert not cache["full_encode"] and cache["encoded_tokens"] < cache["prompt_tokens"]
    assert runner.episode.model["id"] == "in-memory" and runner.episode.policy_config["action_mode"] == "generate"


def test_earlier_turns_are_never_rewritten(tiny) -> None:
    """Household lists the admissible actions each turn; later prompts must repeat them verbatim."""
    runner = run_steps(tiny, "household", 3, action_mode="score")
    prompts = [step.prompt for step in runner.episode.steps]
    for earlier, later in zip(prompts, prompts[1:]):
        assert later[: len(earlier)] == earlier
        assert "Valid actions now:" in earlier[-1]["content"]


def test_score_mode_gives_a_distribution_over_valid_actions_and_never_an_invalid_action(tiny) -> None:
    runner = run_steps(tiny, "gridworld", 2, action_mode="score")
    for step in runner.episode.steps:
        assert step.valid
        assert set(step.action_logprobs) == set(runner.env.valid_actions())
        assert math.fsum(math.exp(v) for v in step.action_logprobs.values()) == pytest.approx(1.0)
        assert step.action == max(step.action_logprobs, key=step.action_logprobs.get)
        assert 0 <= step.extra["action_entropy"] <= math.log(len(step.action_logprobs)) + 1e-9
        assert step.raw.endswith(f"Action: {step.action}") and "score_s" in step.timing


def test_score_mode_falls_back_to_generation_without_a_finite_action_set(tiny) -> None:
    runner = run_steps(tiny, "wikihop", 1, action_mode="score")
    step = runner.episode.steps[0]
    assert step.action_logprobs is None and step.extra["action_mode"] == "generate (no finite action set)"


def test_candidates_are_sampled_in_one_batch_and_kept(tiny) -> None:
    runner = run_steps(
        tiny, "gridworld", 1, candidates=3, sampling=SamplingParams(temperature=1.0, max_new_tokens=10, seed=0)
    )
    step = runner.episode.steps[0]
    assert len(step.candidates) == 2
    assert all(c.raw.startswith("Thought:") and c.tokens is not None for c in step.candidates)


def test_history_is_trimmed_to_the_token_budget(tiny) -> None:
    runner = run_steps(tiny, "gridworld", 4, max_prompt_tokens=900, few_shot=False)
    last = runner.episode.steps[-1]
    assert last.extra["history_start"] > 0
    assert len(tiny.encode(last.prompt)[0]) <= 900


def test_image_text_model_sees_the_frame() -> None:
    tokenizer = tiny_tokenizer()
    model, processor = tiny_llava(tokenizer)
    backend = TransformersBackend(model, tokenizer, processor)
    runner = run_steps(backend, "gridworld", 2, few_shot=False)
    for step in runner.episode.steps:
        assert step.prompt[-1]["content"][0] == {"type": "image"} and step.frame is not None
    assert runner.episode.steps[1].extra["cache"]["reused_tokens"] > 0


def test_image_model_gets_frames_even_when_steps_do_not_store_them() -> None:
    tokenizer = tiny_tokenizer()
    model, processor = tiny_llava(tokenizer)
    policy = ReActPolicy(TransformersBackend(model, tokenizer, processor), ReActConfig(sampling=GREEDY, few_shot=False))
    runner = EpisodeRunner("gridworld", policy, config=RunnerConfig(record_frames=False))
    runner.reset(seed=0)
    step = runner.step()
    assert step.frame is None and step.prompt[-1]["content"][0] == {"type": "image"}


def test_scripted_backend_drives_parsing_nudging_and_candidate_choice() -> None:
    backend = ScriptedBackend(
        [
            "Thought: bad idea\nAction: fly",  # invalid
            "Thought: good idea\nAction: go east",  # valid: chosen although second
            "Thought: I will go north",  # no action line: nudged ...
            " go north",  # ... and the nudge answers
        ]
    )
    policy = ReActPolicy(backend, ReActConfig(candidates=2, few_shot=False))
    runner = EpisodeRunner("gridworld", policy)
    runner.reset(seed=0)
    first = runner.step()
    assert first.action == "go east" and first.thought == "good idea" and first.extra["chosen_candidate"] == 1
    assert first.candidates[0].action == "fly" and not first.candidates[0].valid
    policy.config = ReActConfig(candidates=1, few_shot=False)
    second = runner.step()
    assert (
        second.extra["action_nudged"]
        and second.action == "go north"
        and second.raw == "Thought: I will go north\nAction: go north"
    )


def test_a_generated_turn_ends_with_its_action_line() -> None:
    """What a model writes after its action line (here a hallucinated map) is not its output: the
    turn ends with the line, as a stop, and the next prompt shows only the thought and action."""
    backend = ScriptedBackend(["Thought: east is open\nAction: go east\n#.##.#G#\n#.##.#G#\n"])
    runner = EpisodeRunner("gridworld", ReActPolicy(backend, ReActConfig(few_shot=False)))
    runner.reset(seed=0)
    step = runner.step()
    assert step.raw == "Thought: east is open\nAction: go east" and step.action == "go east"
    assert step.extra["finish_reasons"] == ["stop"] and not step.extra["action_nudged"]
    prompt = runner.policy.build_messages(runner.episode, runner.current_observation())
    assert "#.##.#G#" not in str(prompt[-2]["content"])


def test_fork_starts_the_model_afresh(tiny) -> None:
    runner = run_steps(tiny, "gridworld", 3)
    runner.fork(runner.episode, at=1)
    step = runner.step()
    assert step.index == 1 and step.extra["cache"]["full_encode"]


def test_scripted_score_mode_takes_the_preferred_action() -> None:
    backend = ScriptedBackend(["Thought: the east looks open\nAction: go north"], preferences=["go east"])
    runner = EpisodeRunner("gridworld", ReActPolicy(backend, ReActConfig(action_mode="score", few_shot=False)))
    runner.reset(seed=0)
    step = runner.step()
    assert step.action == "go east" and step.thought == "the east looks open"  # scored, not the written action
    assert max(step.action_logprobs, key=step.action_logprobs.get) == "go east"
    assert step.raw == "Thought: the east looks open\nAction: go east"


def test_a_fixed_sampling_seed_still_varies_from_step_to_step(tiny) -> None:
    sampling = SamplingParams(temperature=1.5, max_new_tokens=8, seed=42)
    runner = run_steps(tiny, "gridworld", 3, sampling=sampling, few_shot=False)
    again = run_steps(tiny, "gridworld", 3, sampling=sampling, few_shot=False)
    assert [s.raw for s in runner.episode.steps] == [s.raw for s in again.episode.steps]  # reproducible
    seeds = [step.extra["sampling_seed"] for step in runner.episode.steps]
    assert len(set(seeds)) == 3  # but not the same draws at every step


def test_sampling_parameters_are_checked() -> None:
    for bad in ({"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}, {"max_new_tokens": 0}):
        with pytest.raises(ValueError):
            SamplingParams(**bad)
