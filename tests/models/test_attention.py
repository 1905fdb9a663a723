"""Attention extraction: the kept rows equal a plain eager pass with output_attentions=True."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studio.analysis.attention import capture_rows, query_rows
from studio.models.hf import TransformersBackend
from tests.support.tiny_models import tiny_gpt2, tiny_llama, tiny_llava, tiny_tokenizer

OUTPUT = "Thought: the key is west.\nAction: go west"


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def messages(observation: str = "#####\n#@.K#\n#####") -> list[dict]:
    return [
        {"role": "system", "content": "You are an agent.\nTask: fetch the key K."},
        {"role": "user", "content": "Observation: start"},
        {"role": "assistant", "content": "Thought: look.\nAction: look"},
        {"role": "user", "content": f"Observation: {observation}"},
    ]


def reference(model, inputs: dict) -> np.ndarray:
    """Every layer's full attention, the plain way (eager, output_attentions=True)."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(**inputs, use_cache=False, output_attentions=True)
    model.set_attn_implementation(previous)
    return torch.stack([a[0] for a in out.attentions]).float().numpy()  # (L, H, T, T)


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2])
def test_rows_equal_a_plain_eager_pass(build, tokenizer) -> None:
    backend = TransformersBackend(build(tokenizer), tokenizer)
    result = backend.attention(
        messages(), OUTPUT, span="generated", instruction="fetch the key K.", observation="#####\n#@.K#\n#####"
    )
    ids = tokenizer(backend.render(messages()) + OUTPUT, add_special_tokens=False)["input_ids"]
    full = reference(backend.model, {"input_ids": torch.tensor([ids])})
    assert result.weights.shape == (full.shape[0], full.shape[1], len(result.rows), len(ids))
    np.testing.assert_allclose(result.weights, full[:, :, result.rows, :], atol=1e-5)
    assert backend.model.config._attn_implementation == "sdpa" or build is tiny_gpt2  # switched back after the pass
    assert (
        result.rows == list(range(result.prompt_length, len(ids)))
        and "".join(result.tokens[result.prompt_length :]) == OUTPUT
    )


def test_rows_equal_a_plain_eager_pass_for_an_image_text_model(tokenizer) -> None:
    model, processor = tiny_llava(tokenizer)
    backend = TransformersBackend(model, tokenizer, processor)
    frame = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    chat = messages()
    chat[-1] = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Observation: what now?"}]}
    result = backend.attention(chat, OUTPUT, images=[frame], span="action", observation="what now?")
    batch = processor(text=[backend.render(chat) + OUTPUT], images=[frame], return_tensors="pt")
    full = reference(model, {"input_ids": batch["input_ids"], "pixel_values": batch["pixel_values"]})
    np.testing.assert_allclose(result.weights, full[:, :, result.rows, :], atol=1e-5)
    assert len(result.segments["image"]) == 16 and result.image_grid == (4, 4)  # 32 px / 8 px patches
    assert "".join(result.tokens[r] for r in result.rows).strip() == "go west"


def test_each_row_is_a_distribution_and_segments_are_found(tokenizer) -> None:
    backend = TransformersBackend(tiny_llama(tokenizer), tokenizer)
    observation = "#####\n#@.K#\n#####"
    result = backend.attention(
        messages(observation), OUTPUT, span="action", instruction="fetch the key K.", observation=observation
    )
    np.testing.assert_allclose(result.weights.sum(axis=-1), 1.0, atol=1e-5)
    text = result.text
    for name, expected in (("task", "fetch the key K."), ("observation", observation), ("output", OUTPUT)):
        assert "".join(result.tokens[p] for p in result.segments[name]) == expected
    assert "Observation: start" in "".join(result.tokens[p] for p in result.segments["history"])
    shares = result.segment_shares()
    assert shares["observation"].shape == (result.layers, result.heads) and np.all(shares["observation"] <= 1.0 + 1e-6)
    assert result.perception().shape == (len(result.rows),)
    assert text.endswith(OUTPUT)


def test_aggregations_and_rollout(tokenizer) -> None:
    backend = TransformersBackend(tiny_llama(tokenizer), tokenizer)
    result = backend.attention(messages(), OUTPUT, span="thought", rollout=True)
    mean, peak = result.aggregate("mean"), result.aggregate("max")
    assert mean.shape == (result.length,) and np.all(peak >= mean - 1e-7)
    np.testing.assert_allclose(result.aggregate("head", layer=1, head=2), result.weights[1, 2].mean(axis=0))
    rolled = result.aggregate("rollout")
    assert rolled.shape == (result.length,) and abs(rolled.sum() - 1.0) < 1e-4
    assert all(p < result.rows[-1] + 1 for p in np.nonzero(rolled)[0])  # causal: nothing after the rows


def test_span_selection() -> None:
    offsets = [(i, i + 1) for i in range(len(OUTPUT))]
    action = query_rows(offsets, OUTPUT, "action", 100)
    assert "".join(OUTPUT[p - 100] for p in action).strip() == "go west"
    thought = query_rows(offsets, OUTPUT, "thought", 100)
    assert "".join(OUTPUT[p - 100] for p in thought) == "Thought: the key is west.\n"
    assert query_rows(offsets, "no marker here", "action", 0) == []  # no action: no action span (never all tokens)
    written = [(0, len("Thought:"))]  # the forced prefix: the model did not choose it
    thought_only = query_rows(offsets, OUTPUT, "thought", 100, written)
    assert "".join(OUTPUT[p - 100] for p in thought_only) == " the key is west.\n"
    assert 100 not in query_rows(offsets, OUTPUT, "generated", 100, written)


def test_the_implementation_is_restored_even_when_the_pass_fails(tokenizer) -> None:
    model = tiny_llama(tokenizer)
    with pytest.raises(Exception):
        capture_rows(model, {"input_ids": torch.tensor([[10_000_000]])}, [0])
    assert model.config._attn_implementation == "sdpa"
