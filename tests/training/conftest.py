"""A tiny random Llama saved as a model folder (the base every training test trains), and a trained-models
folder of the test's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tiny_models import tiny_llama, tiny_tokenizer


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("tiny-base") / "tiny"
    tokenizer = tiny_tokenizer()
    tiny_llama(tokenizer, seed=0).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return str(folder)


@pytest.fixture
def trained_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "trained"
    monkeypatch.setenv("AGENT_STUDIO_TRAINED", str(root))
    return root
