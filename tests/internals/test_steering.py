"""Steering in every path that runs the model: a zero vector changes nothing, a vector's hidden
states equal an independent hook's, and the packed paths (candidates, lanes) steer as a call alone does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studio.errors import StudioError
from studio.models.base import GenerateCall, PrefixSession, SamplingParams, ScoreCall
from studio.models.hf import TransformersBackend
from studio.models.steered import SteeredBackend
from studio.models.steering import Steering, steered
from tests.support.tiny_models import tiny_llama, tiny_tokenizer

CHAT = [{"role": "system", "content": "You walk a grid."}, {"role": "user", "content": "You see a wall. Go."}]
EXACT = 1e-6


@pytest.fixture(scope="module")
def tiny() -> TransformersBackend:
    tokenizer = tiny_tokenizer()
    return TransformersBackend(tiny_llama(tokenizer), tokenizer)


def vector(tiny, seed: int, scale: float = 1.0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    hidden = tiny.model.config.hidden_size
    return {layer: (rng.standard_normal(hidden) * scale).astype(np.float32) for layer in range(2)}


def zero(tiny) -> Steering:
    return Steering("zero", "0" * 64, (0, 1), 1.0, "all", {i: np.zeros(64, np.float32) for i in range(2)})


def push(tiny, positions: str = "all", alpha: float = 3.0, layers=(0,)) -> Steering:
    return Steering("push", "1" * 64, tuple(layers), alpha, positions, vector(tiny, 7))


def sampling(seed: int = 3, tokens: int = 8) -> SamplingParams:
    return SamplingParams(temperature=1.0, max_new_tokens=tokens, seed=seed)


def same(a, b, tolerance: float = EXACT) -> None:
    for ga, gb in zip(a.generations, b.generations, strict=True):
        assert [t.id for t in ga.tokens] == [t.id for t in gb.tokens]
        assert max((abs(x.logprob - y.logprob) for x, y in zip(ga.tokens, gb.tokens)), default=0.0) < tolerance


def same_scores(a, b, tolerance: float = EXACT) -> None:
    assert a.tokens == b.tokens
    for ra, rb in zip(a.token_logprobs, b.token_logprobs):
        assert max(abs(x - y) for x, y in zip(ra, rb)) < tolerance


def test_a_zero_vector_changes_nothing_in_decode_candidates_and_score(tiny) -> None:
    plain = tiny.generate(CHAT, sampling=sampling())
    with steered(zero(tiny)):
        same(plain, tiny.generate(CHAT, sampling=sampling()))
        same(tiny.generate(CHAT, n=3, sampling=sampling(5)), tiny.generate(CHAT, n=3, sampling=sampling(5)))
    candidates = tiny.generate(CHAT, n=3, sampling=sampling(5))
    with steered(zero(tiny)):
        same(candidates, tiny.generate(CHAT, n=3, sampling=sampling(5)))
        steered_score = tiny.score(CHAT, [" go north", " pick up"])
    same_scores(tiny.score(CHAT, [" go north", " pick up"]), steered_score)


def test_a_zero_vector_changes_nothing_in_the_lanes(tiny) -> None:
    batcher = tiny.open_batch(pooled=True)
    sessions = [PrefixSession(), PrefixSession()]
    with steered(zero(tiny)):
        calls = [GenerateCall(CHAT, sampling=sampling(1), session=sessions[0])]
        scored = ScoreCall(CHAT, [" go north", " go south"], session=sessions[1])
    for call in calls:
        assert batcher.add(call) is None
    assert batcher.score(scored) is None
    results = {}
    while batcher.busy:
        results.update((id(call), result) for call, result in batcher.step())
    same(tiny.generate(CHAT, sampling=sampling(1)), results[id(calls[0])])
    same_scores(tiny.score(CHAT, [" go north", " go south"]), results[id(scored)])


def independent_logits(tiny, steering: Steering, ids: list[int], prompt_length: int | None = None) -> torch.Tensor:
    """The model's logits with the vector added by a hook written here (original + alpha * v after
    each chosen layer, at the positions the steering names), float64 comparison downstream."""
    layers = tiny.model.model.layers
    handles = []
    for layer in steering.layers:
        direction = torch.tensor(steering.vectors[layer]) * steering.alpha

        def hook(_m, _i, output, direction=direction):
            hidden = output[0] if isinstance(output, tuple) else output
            mask = torch.ones(hidden.shape[1], 1)
            if prompt_length is not None and steering.positions != "all":
                mask[:prompt_length] = float(steering.positions == "prompt")
                mask[prompt_length:] = float(steering.positions == "generated")
            changed = hidden + mask * direction
            return (changed, *output[1:]) if isinstance(output, tuple) else changed

        handles.append(layers[layer].register_forward_hook(hook))
    try:
        with torch.inference_mode():
            return tiny.model(input_ids=torch.tensor([ids])).logits[0].double()
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_steered_generation_equals_an_independent_hook(tiny, positions) -> None:
    steering = push(tiny, positions)
    with steered(steering):
        result = tiny.generate(CHAT, sampling=SamplingParams(temperature=0.0, max_new_tokens=6))
    tokens = result.generations[0].tokens
    prompt, _ = tiny.encode(CHAT)
    ids = list(prompt) + [t.id for t in tokens]
    logits = independent_logits(tiny, steering, ids, len(prompt))
    logprobs = torch.log_softmax(logits, dim=-1)
    for offset, token in enumerate(tokens):
        row = logprobs[len(prompt) - 1 + offset]
        assert int(row.argmax()) == token.id  # greedy under the independently steered model
        assert abs(float(row[token.id]) - token.logprob) < 1e-4
    unsteered = tiny.generate(CHAT, sampling=SamplingParams(temperature=0.0, max_new_tokens=6)).generations[0].tokens
    assert [t.logprob for t in unsteered] != [t.logprob for t in tokens]  # the vector did something


def test_steered_hidden_states_equal_original_plus_alpha_v(tiny) -> None:
    steering = push(tiny, "all", alpha=2.5, layers=(0,))
    internals = tiny.internals()
    plain = internals.residuals(CHAT, "Thought: go", positions="output")
    pushed = internals.residuals(CHAT, "Thought: go", positions="output", steering=steering)
    added = pushed.layers[0] - plain.layers[0]  # after the steered block: exactly alpha * v at every position
    np.testing.assert_allclose(added, np.broadcast_to(2.5 * steering.vectors[0], added.shape), atol=1e-5)
    assert np.abs(pushed.layers[1] - plain.layers[1]).max() > 1e-3  # and the next block sees it


def test_lanes_steer_each_caller_as_it_asked(tiny) -> None:
    """One packed forward: a steered caller, an unsteered one and a scoring steered one; each answer
    equals that call made alone (the vector reaches its own tokens only)."""
    strong = push(tiny, "all", alpha=4.0)
    batcher = tiny.open_batch(pooled=True)
    with steered(strong):
        pushed = GenerateCall(CHAT, sampling=sampling(2), session=PrefixSession())
        scored = ScoreCall(CHAT, [" go east", " go west"], session=PrefixSession())
    plain = GenerateCall(CHAT, sampling=sampling(2), session=PrefixSession())
    for call in (pushed, plain):
        assert batcher.add(call) is None
    assert batcher.score(scored) is None
    results = {}
    while batcher.busy:
        results.update((id(call), result) for call, result in batcher.step())
    with steered(strong):
        same(tiny.generate(CHAT, sampling=sampling(2)), results[id(pushed)], 1e-4)
        same_scores(tiny.score(CHAT, [" go east", " go west"]), results[id(scored)], 1e-4)
    same(tiny.generate(CHAT, sampling=sampling(2)), results[id(plain)], 1e-4)


def test_a_cache_made_under_one_steering_is_not_reused_under_another(tiny) -> None:
    session = PrefixSession()
    tiny.generate(CHAT, sampling=sampling(), session=session)
    with steered(push(tiny)):
        again = tiny.generate(CHAT, sampling=sampling(), session=session)
        fresh = tiny.generate(CHAT, sampling=sampling())
    assert again.cache.reused_tokens == 0
    same(fresh, again)


def test_the_steered_backend_steers_and_refuses_what_cannot_be_steered(tiny) -> None:
    steering = push(tiny)
    backend = SteeredBackend(tiny, steering)
    with steered(steering):
        expected = tiny.generate(CHAT, sampling=sampling())
    same(expected, backend.generate(CHAT, sampling=sampling()))
    assert backend.info["steering"]["vector"] == "push"
    from studio.models.scripted import ScriptedBackend

    with pytest.raises(StudioError, match="cannot be steered") as caught:
        SteeredBackend(ScriptedBackend(["Action: go north"]), steering)
    assert "\n" not in str(caught.value)
    wrong = Steering("wide", "2" * 64, (0,), 1.0, "all", {0: np.ones(65, np.float32)})
    with pytest.raises(StudioError, match="hidden size is 64"), steered(wrong):
        tiny.generate(CHAT, sampling=sampling())
    far = Steering("far", "3" * 64, (5,), 1.0, "all", {5: np.ones(64, np.float32)})
    with pytest.raises(StudioError, match="layer 5 is not one of 0..1"), steered(far):
        tiny.score(CHAT, [" go"])


def test_value_rollouts_of_a_steered_step_are_steered_like_it(tiny, tmp_path, monkeypatch) -> None:
    """Monte Carlo rollouts from a steered step act under the step's own steering (in the pool's lanes
    and alone); an unsteered step's rollouts are not steered."""
    from studio.agents.react import ReActConfig, ReActPolicy
    from studio.episodes.runner import EpisodeRunner, RunnerConfig
    from studio.internals.vectors import SteeringVector, VectorLibrary
    from studio.scaling.values import estimate_step_values, rollout_policy_factory

    monkeypatch.setenv("AGENT_STUDIO_VECTORS", str(tmp_path))
    made = SteeringVector("push", vector(tiny, 7), "contrastive", "in-memory", 0)
    VectorLibrary(tmp_path).save(made)
    steering = made.steering((0,), 3.0)
    config = ReActConfig(sampling=SamplingParams(temperature=0.0, max_new_tokens=4))
    runner = EpisodeRunner(
        "gridworld", ReActPolicy(SteeredBackend(tiny, steering), config), config=RunnerConfig(max_steps=2)
    )
    runner.reset(seed=0)
    episode = runner.run()
    assert episode.steps[0].extra["steering"]["sha256"] == made.sha256
    seen: list = []
    active, per_token = tiny.steerer.active, tiny.steerer.per_token
    monkeypatch.setattr(tiny.steerer, "active", lambda s: (seen.append(s), active(s))[1])
    monkeypatch.setattr(tiny.steerer, "per_token", lambda rows: (seen.extend(r[0] for r in rows), per_token(rows))[1])
    for parallel in (1, 2):
        seen.clear()
        estimate_step_values(
            episode, 0, rollout_policy_factory("model"), rollout_policy="model", rollouts=2, horizon=1,
            model=tiny, parallel=parallel,
        )  # fmt: skip
        assert seen and all(s is not None and s.sha256 == made.sha256 and s.alpha == 3.0 for s in seen)
    del episode.steps[0].extra["steering"]
    seen.clear()
    estimate_step_values(
        episode, 0, rollout_policy_factory("model"), rollout_policy="model", rollouts=1, horizon=1, model=tiny
    )
    assert all(s is None for s in seen)


def test_the_same_step_with_and_without_steering(tiny) -> None:
    """Taken again from its snapshot with one config and seed: a zero ALPHA gives the unsteered step
    exactly; the steered one records its steering, the plain one none."""
    from studio.agents.react import ReActConfig, ReActPolicy
    from studio.episodes.runner import EpisodeRunner, RunnerConfig
    from studio.evaluation.steered_step import with_and_without

    config = ReActConfig(action_mode="score", sampling=SamplingParams(temperature=0.0, max_new_tokens=5))
    runner = EpisodeRunner("gridworld", ReActPolicy(tiny, config), config=RunnerConfig(max_steps=2))
    runner.reset(seed=3)
    episode = runner.run()
    still = push(tiny, alpha=0.0)
    plain, steered_step = with_and_without(episode, 1, tiny, still, config)
    assert "steering" not in plain.extra and steered_step.extra["steering"]["alpha"] == 0.0
    assert plain.raw == steered_step.raw and plain.action == steered_step.action
    assert max(abs(plain.action_logprobs[a] - steered_step.action_logprobs[a]) for a in plain.action_logprobs) < EXACT
    again, pushed = with_and_without(episode, 1, SteeredBackend(tiny, still), push(tiny, alpha=6.0), config)
    assert again.raw == plain.raw  # the steered backend given is taken back to its model first
    assert any(abs(again.action_logprobs[a] - pushed.action_logprobs[a]) > 1e-3 for a in again.action_logprobs)
