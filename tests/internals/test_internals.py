"""The insides, each checked against an independent computation: the logit lens at the last layer is
the model's own distribution, an EAST vector recomputed from the stored steps equals the stored one,
probes recover a planted linear target and stay at chance on shuffled labels, and the observation
dependence with the real observation put back is zero."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from studio.errors import StudioError
from studio.internals.lens import step_lens
from studio.internals.making import action_entropy, make_contrastive, make_east
from studio.internals.perception import observation_dependence
from studio.internals.probes import fit_probes, split_by_seed
from studio.models.hf import TransformersBackend
from studio.trace import Episode, Step
from tests.support.tiny_models import tiny_llama, tiny_tokenizer

SYSTEM = {"role": "system", "content": "You walk a grid. Answer Thought: ... Action: ..."}


@pytest.fixture(scope="module")
def tiny() -> TransformersBackend:
    tokenizer = tiny_tokenizer()
    return TransformersBackend(tiny_llama(tokenizer, seed=3), tokenizer)


def prompt(observation: str) -> list[dict]:
    return [SYSTEM, {"role": "user", "content": f"Observation: {observation}\nWhat do you do?"}]


def step(index: int, observation: str, logprobs: dict[str, float] | None = None) -> Step:
    return Step(
        index=index,
        observation=observation,
        action="go north",
        prompt=prompt(observation),
        raw="Thought: the goal is up. Action: go north",
        thought="the goal is up.",
        action_logprobs=logprobs,
    )


def episode(seed: int, observations: list[str], logprobs: list[dict[str, float]] | None = None) -> Episode:
    steps = [step(i, o, (logprobs or [None] * len(observations))[i]) for i, o in enumerate(observations)]
    return Episode(env="gridworld", seed=seed, steps=steps, success=seed % 2 == 0)


def test_the_lens_at_the_last_layer_is_the_models_own_distribution(tiny) -> None:
    record = episode(0, ["wall to the east"], [{"go north": -0.2, "go south": -1.8, "go east": -3.0}])
    view = step_lens(tiny, record, record.steps[0])
    prefix = "Thought: the goal is up. Action:"
    totals = np.array(
        tiny.score(record.steps[0].prompt, [" go north", " go south", " go east"], assistant_prefix=prefix).totals
    )
    own = totals - (totals.max() + math.log(np.exp(totals - totals.max()).sum()))
    np.testing.assert_allclose(view.logprobs[-1], own, atol=1e-5)
    raw = tiny.internals().lens(record.steps[0].prompt, [" go north", " go south", " go east"], assistant_prefix=prefix)
    np.testing.assert_allclose(raw[-1], totals, atol=1e-5)
    assert view.logprobs.shape == (2, 3) and view.actions == ["go north", "go south", "go east"]
    final = int(view.logprobs[-1].argmax())
    assert view.leads_from is not None and all(int(row.argmax()) == final for row in view.logprobs[view.leads_from :])


def independent_last_token(tiny, messages) -> np.ndarray:
    """(layers, hidden) at the last prompt token, by hooks written here on a float64 copy of the model."""
    ids, _ = tiny.encode(messages)
    model = tiny_llama(tiny_tokenizer(), seed=3).double()
    read: dict[int, np.ndarray] = {}
    handles = [
        block.register_forward_hook(
            lambda _m, _i, out, k=k: read.__setitem__(k, (out[0] if isinstance(out, tuple) else out)[0, -1].numpy())
        )
        for k, block in enumerate(model.model.layers)
    ]
    with torch.no_grad():
        model(input_ids=torch.tensor([ids]))
    for handle in handles:
        handle.remove()
    return np.stack([read[k] for k in sorted(read)])


def test_an_east_vector_recomputed_from_the_stored_steps_equals_the_stored_one(tiny) -> None:
    distributions = [
        {"go north": -0.01, "go south": -5.0},
        {"go north": -0.69, "go south": -0.70},
        {"go north": -1.2, "go south": -0.4},
        {"go north": -0.05, "go south": -3.0},
    ]
    records = [
        episode(1, ["a wall", "open floor"], distributions[:2]),
        episode(2, ["a key here", "the goal east"], distributions[2:]),
    ]
    vector = make_east("explore", tiny, records)
    reps, weights = [], []
    for record in records:
        for s in record.steps:
            reps.append(independent_last_token(tiny, s.prompt))
            p = np.exp(np.array(list(s.action_logprobs.values()), dtype=np.float64))
            p /= p.sum()
            weights.append(-(p * np.log(p)).sum())
            assert abs(weights[-1] - action_entropy(s)) < 1e-12
    reps_arr, w = np.stack(reps), np.array(weights) / np.sum(weights)
    expected = np.tensordot(w, reps_arr - reps_arr.mean(axis=0), axes=(0, 0))
    for layer, direction in vector.directions.items():
        np.testing.assert_allclose(direction, expected[layer], atol=1e-6)
    assert vector.method == "east" and vector.made_from["steps"] == 4


def test_a_contrastive_vector_is_the_difference_of_the_means(tiny) -> None:
    good, bad = episode(0, ["goal near", "goal next"]), episode(1, ["lost", "wall"])
    vector = make_contrastive("succeed", tiny, [good], [bad])
    ours = np.mean([independent_last_token(tiny, s.prompt) for s in good.steps], axis=0)
    theirs = np.mean([independent_last_token(tiny, s.prompt) for s in bad.steps], axis=0)
    for layer, direction in vector.directions.items():
        np.testing.assert_allclose(direction, (ours - theirs)[layer], atol=1e-6)


def test_make_east_refuses_steps_without_action_distributions(tiny) -> None:
    with pytest.raises(StudioError, match="score mode") as caught:
        make_east("explore", tiny, [episode(0, ["a", "b"])])
    assert "\n" not in str(caught.value)


def planted_features(tiny, count: int = 240) -> np.ndarray:
    rng = np.random.default_rng(0)
    letters = list("abcdefghijklmnopqrstuvwxyz ")
    texts = ["".join(rng.choice(letters, size=int(rng.integers(5, 30)))) for _ in range(count)]
    internals = tiny.internals()
    return np.stack([internals.residuals([{"role": "user", "content": t}]).layers[:, 0, :] for t in texts])


def test_a_probe_recovers_a_planted_linear_target_and_not_shuffled_labels(tiny) -> None:
    features = planted_features(tiny)
    groups = [i % 12 for i in range(len(features))]  # 12 "seeds"
    weights = np.random.default_rng(1).standard_normal(features.shape[2])
    planted = (features[:, 1, :].astype(np.float64) @ weights).tolist()
    result = fit_probes(features, planted, groups, "planted")
    assert result.kind == "regression" and result.scores[1] > 0.999
    assert max(result.control) < 0.2  # shuffled labels: nothing to learn
    labels = ["up" if v > np.median(planted) else "down" for v in planted]
    classified = fit_probes(features, labels, groups, "planted_label")
    assert (
        classified.kind == "classification" and classified.scores[1] >= 0.85
    )  # a boundary through the data: a few near it
    assert classified.control[1] < classified.chance + 0.2
    train, test = split_by_seed(groups)
    assert not {groups[i] for i in train} & {groups[i] for i in test}  # no seed on both sides
    assert sorted({groups[i] for i in test}) == classified.test_seeds


def test_probes_need_two_seeds(tiny) -> None:
    with pytest.raises(StudioError, match="at least two seeds"):
        fit_probes(np.zeros((4, 2, 3)), [1.0, 2.0, 3.0, 4.0], [0, 0, 0, 0])


def test_observation_dependence_is_zero_with_the_real_observation_and_not_when_masked(tiny) -> None:
    record = episode(0, ["a wall to the north and the goal east"])
    same = observation_dependence(tiny, record, record.steps[0], "other", other=record.steps[0].observation)
    assert same.kl and all(v == 0.0 for v in same.kl)
    masked = observation_dependence(tiny, record, record.steps[0], "mask")
    assert len(masked.kl) == len(same.kl) and max(masked.kl) > 1e-6
    assert "".join(masked.tokens) == record.steps[0].raw
    # independently: the first output token's KL from two float64 forwards
    ids, _ = tiny.encode(record.steps[0].prompt)
    changed = [dict(m) for m in record.steps[0].prompt]
    changed[-1]["content"] = changed[-1]["content"].replace(
        record.steps[0].observation, "_ ____ __ ___ _____ ___ ___ ____ ____"
    )
    other_ids, _ = tiny.encode(changed)
    model = tiny_llama(tiny_tokenizer(), seed=3).double()
    with torch.no_grad():
        p = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1], -1)
        q = torch.log_softmax(model(input_ids=torch.tensor([other_ids])).logits[0, -1], -1)
    assert abs(float((p.exp() * (p - q)).sum()) - masked.kl[0]) < 1e-4
    with pytest.raises(StudioError, match="no image"):
        observation_dependence(tiny, record, record.steps[0], "blank")


def test_recorded_activations_equal_the_ones_read_afterwards(tiny, tmp_path, monkeypatch) -> None:
    """With Record activations on, each step's decision point is kept by the step's own prompt
    encoding (prefix cache and all); reading it again later by a fresh forward gives the same."""
    from studio.agents.react import ReActConfig, ReActPolicy
    from studio.episodes.runner import EpisodeRunner, RunnerConfig
    from studio.internals.activations import ActivationCache, step_activations
    from studio.models.base import SamplingParams

    monkeypatch.setenv("AGENT_STUDIO_CACHE", str(tmp_path))
    config = ReActConfig(sampling=SamplingParams(temperature=0.0, max_new_tokens=6), record_activations=True)
    runner = EpisodeRunner("gridworld", ReActPolicy(tiny, config), config=RunnerConfig(max_steps=3))
    runner.reset(seed=0)
    episode = runner.run()
    cache = ActivationCache(tmp_path / "activations")
    assert len(episode.steps) == 3 and all(s.extra.get("activations") == "recorded" for s in episode.steps)
    assert episode.steps[2].extra["cache"]["reused_tokens"] > 0  # read by an incremental encoding
    for step in episode.steps:
        kept = cache.get(*_key(tiny, episode, step))
        assert kept is not None
        fresh = step_activations(tiny, episode, step)  # no cache: one forward over the whole prompt
        np.testing.assert_allclose(kept.last, fresh.last, atol=1e-4)
        assert step_activations(tiny, episode, step, cache=cache).layers is not None


def _key(backend, episode, step):
    from studio.internals.activations import model_key

    return model_key(backend), episode.id, step.index, "last", ""
