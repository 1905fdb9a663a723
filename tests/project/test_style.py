"""The code keeps one format (``ruff format``, 120 columns: pyproject.toml) and no unused or
undefined names (``ruff check --select F``): run ``ruff format .`` before committing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_code_is_formatted() -> None:
    done = ruff("format", "--check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_unused_or_undefined_names() -> None:
    done = ruff("check", "--select", "F", ".")
    assert done.returncode == 0, done.stdout + done.stderr
