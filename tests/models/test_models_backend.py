"""The transformers backend on tiny random models: signals, cache reuse, batching, scoring, images."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
import torch

from studio.errors import StudioError
from studio.models.base import PrefixSession, SamplingParams
from studio.models.hf import TransformersBackend
from studio.models.tokens import stop_boundary
from tests.support.tiny_models import tiny_gpt2, tiny_llama, tiny_llava, tiny_tokenizer

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=24)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def backend(request, tokenizer):
    model = tiny_llama(tokenizer) if request.param == "llama" else tiny_gpt2(tokenizer)
    return TransformersBackend(model, tokenizer)


@pytest.fixture(scope="module")
def llava(tokenizer):
    model, processor = tiny_llava(tokenizer)
    return TransformersBackend(model, tokenizer, processor)


def chat(turns: int) -> list[dict]:
    messages = [
        {"role": "system", "content": "You are an agent in a grid."},
        {"role": "user", "content": "Observation: #@.G#"},
    ]
    for index in range(turns):
        messages += [
            {"role": "assistant", "content": f"Thought: step {index}\nAction: go east"},
            {"role": "user", "content": f"Observation: moved {index}"},
        ]
    return messages


def reference_signals(
    backend: TransformersBackend, prompt_ids: list[int], generated: list[int]
) -> tuple[list[float], list[float]]:
    """Logprob and entropy of each generated token from one plain forward pass over everything."""
    with torch.no_grad():
        logits = backend.model(torch.tensor([prompt_ids + generated])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    rows = range(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(generated))
    values = [float(logprobs[row, token]) for row, token in zip(rows, generated)]
    entropies = [float(-(logprobs[row].exp() * logprobs[row]).sum()) for row in rows]
    return values, entropies


def test_token_logprobs_and_entropies_match_an_independent_forward_pass(backend) -> None:
    session = PrefixSession()
    backend.generate(chat(1), sampling=GREEDY, session=session)  # warm the cache: the next call reuses it
    messages = chat(2)
    result = backend.generate(
        messages, n=3, sampling=SamplingParams(temperature=1.0, max_new_tokens=16, seed=3), session=session
    )
    assert result.cache.reused_tokens > 0
    prompt_ids, _ = backend.encode(messages)
    for generation in result.generations:
        ids = [t.id for t in generation.tokens]
        assert ids, "each sample produced tokens"
        values, entropies = reference_signals(backend, prompt_ids, ids)
        np.testing.assert_allclose([t.logprob for t in generation.tokens], values, atol=1e-4)
        np.testing.assert_allclose([t.entropy for t in generation.tokens], entropies, atol=1e-4)
        assert "".join(t.text for t in generation.tokens) == generation.text


def test_greedy_with_cache_reuse_equals_full_reencoding(backend) -> None:
    reused = PrefixSession()
    for turns in range(4):
        messages = chat(turns)
        with_reuse = backend.generate(messages, sampling=GREEDY, session=reused)
        from_scratch = backend.generate(messages, sampling=GREEDY, session=PrefixSession())
        assert [t.id for t in with_reuse.generations[0].tokens] == [t.id for t in from_scratch.generations[0].tokens]
        assert from_scratch.cache.full_encode
        if turns:
            assert (
                with_reuse.cache.reused_tokens > 0 and with_reuse.cache.encoded_tokens < with_reuse.cache.prompt_tokens
            )


def test_changed_prefix_falls_back_and_says_so(backend) -> None:
    session = PrefixSession()
    backend.generate(chat(2), sampling=GREEDY, session=session)
    changed = chat(2)
    changed[0] = {"role": "system", "content": "A different system prompt."}
    result = backend.generate(changed, sampling=GREEDY, session=session)
    assert result.cache.prefix_changed
    assert result.cache.reused_tokens < 20  # only the chat template's opening tokens match
    expected = backend.generate(changed, sampling=GREEDY, session=PrefixSession())
    assert result.generations[0].text == expected.generations[0].text


def test_stop_strings_cut_the_text_and_tokens(backend) -> None:
    full = backend.generate(chat(0), sampling=GREEDY).generations[0]
    marker = full.text[5]
    cut = backend.generate(chat(0), sampling=GREEDY, stop=[marker]).generations[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(marker)]
    assert "".join(t.text for t in cut.tokens) == cut.text


def test_stop_patterns_cut_where_their_group_starts(backend) -> None:
    """A pattern ends a continuation at its first match, cut where its group starts (the group is
    the stop text); the earliest of several stops wins, strings and patterns alike."""
    full = backend.generate(chat(0), sampling=GREEDY).generations[0]
    pattern = re.compile(re.escape(full.text[3:5]) + "(" + re.escape(full.text[5:7]) + ")")
    boundary = stop_boundary(full.text, [pattern])
    assert boundary is not None and boundary <= 5
    cut = backend.generate(chat(0), sampling=GREEDY, stop=[pattern]).generations[0]
    assert cut.finish_reason == "stop" and cut.text == full.text[:boundary]
    assert "".join(t.text for t in cut.tokens) == cut.text
    text, line_end = "go.\nAction: east\n#.#\nObservation: x", re.compile(r"Action:[^\n]*(\n)")
    assert stop_boundary(text, [line_end, "Observation"]) == stop_boundary(text, ["Observation", line_end]) == 16
    assert stop_boundary(text, [line_end, "go"]) == 0 and stop_boundary(text, [re.compile("#")]) == 17
    assert stop_boundary(text, [re.compile("z"), "q", ""]) is None


def test_generation_can_be_interrupted(backend) -> None:
    calls = {"n": 0}

    def stop_after_two() -> bool:
        calls["n"] += 1
        return calls["n"] >= 2

    result = backend.generate(
        chat(0), sampling=SamplingParams(temperature=0.0, max_new_tokens=200), should_stop=stop_after_two
    )
    assert result.generations[0].finish_reason == "interrupted" and len(result.generations[0].tokens) <= 2


def test_seeded_sampling_is_reproducible_and_tiny_top_p_is_greedy(backend) -> None:
    params = SamplingParams(temperature=1.2, top_p=0.9, max_new_tokens=12, seed=7)
    first = backend.generate(chat(0), n=2, sampling=params).generations
    second = backend.generate(chat(0), n=2, sampling=params).generations
    assert [g.text for g in first] == [g.text for g in second]
    nucleus = backend.generate(
        chat(0), sampling=SamplingParams(temperature=1.0, top_p=1e-9, max_new_tokens=12, seed=1)
    ).generations[0]
    assert (
        nucleus.text
        == backend.generate(chat(0), sampling=SamplingParams(temperature=0.0, max_new_tokens=12)).generations[0].text
    )


def test_scoring_all_continuations_in_one_pass_matches_separate_passes(backend) -> None:
    session = PrefixSession()
    messages = chat(1)
    prefix = "Thought: east\nAction:"
    continuations = [" go east", " go west", " pick up key", " x"]
    result = backend.score(messages, continuations, session=session, assistant_prefix=prefix, end_with_eos=True)
    prompt_ids, _ = backend.encode(messages, prefix)
    assert session.cache.get_seq_length() == len(prompt_ids)  # the packed tokens were dropped again
    for text, values, tokens in zip(continuations, result.token_logprobs, result.tokens):
        expected_tokens = backend.tokenizer(text, add_special_tokens=False)["input_ids"] + [
            backend.tokenizer.eos_token_id
        ]
        assert tokens == expected_tokens
        expected, _ = reference_signals(backend, prompt_ids, tokens)
        np.testing.assert_allclose(values, expected, atol=1e-4)
    assert result.totals == pytest.approx([sum(v) for v in result.token_logprobs])


def test_concurrent_sessions_queue_on_the_device_lock(backend) -> None:
    expected = [backend.generate(chat(turns), sampling=GREEDY).generations[0].text for turns in range(4)]
    outputs: dict[int, str] = {}

    def worker(turns: int) -> None:
        outputs[turns] = backend.generate(chat(turns), sampling=GREEDY, session=PrefixSession()).generations[0].text

    threads = [threading.Thread(target=worker, args=(turns,)) for turns in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [outputs[t] for t in range(4)] == expected


def test_model_card_describes_the_model(backend) -> None:
    info = backend.info
    assert info["layers"] == 2 and info["heads"] == 4 and info["parameters"] > 10_000
    assert info["device"] == "cpu" and info["dtype"] == "float32" and info["capabilities"]["images"] is False


def image_chat() -> list[dict]:
    return [
        {"role": "system", "content": [{"type": "text", "text": "You see the grid."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Observation: where now?"}]},
    ]


def test_image_text_model_reuses_the_cache_only_for_the_same_image(llava) -> None:
    first = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    second = np.random.default_rng(1).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    session = PrefixSession()
    llava.generate(image_chat(), images=[first], sampling=GREEDY, session=session)
    again = llava.generate(image_chat(), images=[first], sampling=GREEDY, session=session)
    ids, _ = llava.encode(image_chat(), images=[first])
    assert again.cache.reused_tokens == len(ids) - 1  # everything but the last token came from the cache
    other = llava.generate(image_chat(), images=[second], sampling=GREEDY, session=session)
    image_start = ids.index(llava.image_token_id)
    assert other.cache.reused_tokens == image_start  # cut where the picture differs
    fresh = llava.generate(image_chat(), images=[second], sampling=GREEDY, session=PrefixSession())
    assert other.generations[0].text == fresh.generations[0].text
    assert llava.capabilities.images and llava.info["kind"] == "image-text-to-text"


def test_image_text_scoring_matches_a_plain_forward_pass(llava) -> None:
    image = np.random.default_rng(2).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    result = llava.score(image_chat(), [" go east", " look"], images=[image])
    ids, extra = llava.encode(image_chat(), images=[image])
    for tokens, values in zip(result.tokens, result.token_logprobs):
        with torch.no_grad():
            logits = llava.model(input_ids=torch.tensor([ids + tokens]), **extra).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        expected = [float(logprobs[len(ids) - 1 + i, t]) for i, t in enumerate(tokens)]
        np.testing.assert_allclose(values, expected, atol=1e-4)


def test_empty_continuation_is_refused(backend) -> None:
    with pytest.raises(StudioError, match="empty continuation"):
        backend.score(chat(0), [""])


@pytest.mark.parametrize("vocabulary", [1000, 300])  # nucleus within the first 256 tokens / over them
def test_top_p_sampling_draws_the_nucleus_distribution(vocabulary: int) -> None:
    """Each row's draws stay in its nucleus (the fewest tokens holding top_p) with the renormalised
    temperature probabilities, and one generator seed gives the same draws."""
    from studio.models.hf_decode import _sample

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, vocabulary, generator=generator) * 2
    logits[1] = torch.linspace(0, 1, vocabulary)  # nearly flat: its nucleus is wider than 256
    sampling = SamplingParams(temperature=0.8, top_p=0.9)
    probs = torch.softmax(logits / 0.8, dim=-1).double()
    # Row by row (one row's nucleus wider than 256 tokens sends the whole batch to a full sort) and together.
    draws = torch.stack(
        [
            torch.cat([_sample(logits[:1], sampling, generator), _sample(logits[1:], sampling, generator)])
            for _ in range(10000)
        ]
        + [_sample(logits, sampling, generator) for _ in range(10000)]
    )
    for row in range(2):
        ordered, order = probs[row].sort(descending=True)
        size = int((ordered.cumsum(0) - ordered < 0.9).sum())
        nucleus = order[:size]
        assert set(draws[:, row].tolist()) <= set(nucleus.tolist())
        expected = ordered[:size] / ordered[:size].sum()
        observed = torch.bincount(draws[:, row], minlength=vocabulary)[nucleus].double() / len(draws)
        assert float((observed - expected).abs().max()) < 0.01
    again = [_sample(logits, sampling, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(again[0], again[1])
