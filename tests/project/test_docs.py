"""The documentation: the site builds with ``mkdocs build --strict`` (its own check of every link and
anchor between pages), its reference lists every command and every setting, the README stays a
newcomer's page whose commands run as written, and no source file grows past 500 lines unexplained."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")

#: Files allowed past 500 lines, each with its reason (a split would scatter one idea).
LONG_FILES = {
    "studio/envs/gym_adapter.py": "the Gymnasium adapter: action spaces, the families' hooks and success rules are one "
    "idea that every gym: id goes through; its snapshots and their checker are in snapshots.py",
    "studio/models/hf_decode.py": "the transformers decode loop: prefill, decode, packed candidates and scoring share "
    "the cache layout and masks, and are measured together (bench/inference.py)",
}


def build_site(target: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(target)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    built = build_site(target)
    assert built.returncode == 0, built.stderr[-3000:]
    return target


def test_the_site_builds_strictly_with_its_screenshots(site: Path) -> None:
    assert (site / "index.html").exists() and (site / "assets" / "panel-episode.png").exists()
    page = (site / "getting-started" / "index.html").read_text(encoding="utf-8")
    assert "../assets/panel-episode.png" in page


def test_the_reference_lists_every_command_and_every_setting(site: Path) -> None:
    from agent_studio.cli.main import COMMANDS
    from studio.settings import EpisodeSettings, schema

    cli = (site / "cli" / "index.html").read_text(encoding="utf-8")
    missing = [c.name for c in COMMANDS if f'id="{c.name}"' not in cli]
    settings = (site / "reference" / "settings" / "index.html").read_text(encoding="utf-8")
    unlisted = [spec.name for spec, _ in schema(EpisodeSettings) if f"<code>{spec.name}</code>" not in settings]
    flags = [
        f"--{spec.name.replace('_', '-')}"
        for spec, setting in schema(EpisodeSettings)
        if setting.cli and not setting.custom and f"--{spec.name.replace('_', '-')}" not in cli
    ]
    assert missing == [] and unlisted == [] and flags == []
    registries = (site / "reference" / "registries" / "index.html").read_text(encoding="utf-8")
    assert all(f"<code>{name}</code>" in registries for name in ("gridworld", "vote", "dpo", "scripted:FILE.json"))
    architecture = (site / "architecture" / "index.html").read_text(encoding="utf-8")
    assert "studio.scaling" in architecture and "studio.evaluation.stats" in architecture


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    """The build's link check is real: a page linking to a missing page or anchor fails it."""
    broken = ROOT / "docs" / "zz-broken-link-test.md"
    broken.write_text("# Broken\n\n[nowhere](missing-page.md) and [no anchor](cli.md#no-such-anchor)\n")
    try:
        built = build_site(tmp_path / "site")
    finally:
        broken.unlink()
    assert built.returncode != 0
    assert "missing-page.md" in built.stderr and "no-such-anchor" in built.stderr


def test_the_readme_is_a_newcomers_page_whose_links_exist() -> None:
    assert len(README.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert local and [link for link in local if not (ROOT / link).exists()] == []
    assert "bash scripts/setup.sh && .venv/bin/python app.py" in README
    assert "bash scripts/setup.sh --test && .venv/bin/python -m pytest" in README


def _block(after: str, language: str) -> str:
    """The first ``language`` code block after the heading ``after`` in the README."""
    section = README.split(after, 1)[1]
    return section.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_the_readmes_commands_run_as_written(tmp_path: Path) -> None:
    """The README's command-line taste, line by line, in a fresh folder with its own store."""
    env = {
        **os.environ,
        "AGENT_STUDIO_DB": str(tmp_path / "studio.db"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    lines = [line for line in _block("## A taste of the command line", "bash").splitlines() if line.strip()]
    assert lines and all(line.startswith("agent-studio ") for line in lines)
    for line in lines:
        done = subprocess.run(line, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, f"{line}: {done.stderr[-2000:]}"
    assert (tmp_path / "sft.jsonl").read_text().strip(), "export wrote no row"


def test_the_readmes_python_runs_as_written(tmp_path: Path) -> None:
    """The README's API taste: the default model, best-of-4 with a vote, five steps of gridworld."""
    code = _block("## A taste of the Python API", "python")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "AGENT_STUDIO_DB": str(tmp_path / "s.db")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    success, actions = done.stdout.strip().split(" ", 1)
    assert success in ("True", "False") and 1 <= len(eval(actions)) <= 5  # noqa: S307 - our own print of a list


def test_no_source_file_grows_past_500_lines_without_a_reason() -> None:
    listed = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    long = {
        path
        for path in listed
        if not path.startswith("tests/") and (ROOT / path).exists()
        and len((ROOT / path).read_text(encoding="utf-8").splitlines()) > 500
    }  # fmt: skip
    assert long - set(LONG_FILES) == set(), "split these, or say in LONG_FILES why they are one idea"
    assert set(LONG_FILES) - long == set(), "these are no longer long: take them off LONG_FILES"


def test_the_command_lines_overview_names_every_command() -> None:
    """docs/cli.md's hand-written overview (above the generated reference) names every command of COMMANDS."""
    from agent_studio.cli.main import COMMANDS

    overview = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8").split("```bash\n", 1)[1].split("```", 1)[0]
    named = set(re.findall(r"^agent-studio \[?([a-z-]+)", overview, flags=re.M))
    assert {command.name for command in COMMANDS} - named == set()
