"""The project installs as a package: ``pip install -e .`` in a fresh venv gives an ``agent-studio``
command and ``python -m agent_studio`` that work from any folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from studio import __version__

ROOT = Path(__file__).resolve().parent.parent


def run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, env={**os.environ, **env})


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with the project installed editable (``pip install -e .``), nothing else.

    Its dependencies come from the test venv through a ``.pth`` line (no second download of
    torch): pip still builds the project (setuptools from pip's index, as for a user) and installs it.
    """
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    done = run([sys.executable, "-m", "venv", str(venv)], cwd=venv.parent)
    assert done.returncode == 0, done.stderr
    python = venv / "bin" / "python"
    site = Path(
        run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=venv.parent
        ).stdout.strip()
    )
    (site / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check", "-e", str(ROOT)],
        cwd=venv.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return venv


def test_the_command_works_from_another_folder(fresh_venv: Path, tmp_path: Path) -> None:
    command = fresh_venv / "bin" / "agent-studio"
    assert run([str(command), "--version"], cwd=tmp_path).stdout.strip() == f"agent-studio {__version__}"

    listed = run([str(command), "envs", "--json"], cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "gridworld" in [json.loads(line)["name"] for line in listed.stdout.splitlines()]

    db = tmp_path / "here.db"
    ran = run(
        [str(command), "run", "--env", "gridworld", "--policy", "expert", "--json", "--db", str(db)], cwd=tmp_path
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["success"] is True and db.exists()


def test_python_dash_m_runs_the_same_command_line(fresh_venv: Path, tmp_path: Path) -> None:
    done = run([str(fresh_venv / "bin" / "python"), "-m", "agent_studio", "--version"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"agent-studio {__version__}"
    # It is the installed project that answers, not a copy in the current folder.
    where = run(
        [str(fresh_venv / "bin" / "python"), "-c", "import app, studio; print(app.__file__, studio.__file__)"],
        cwd=tmp_path,
    )
    assert where.stdout.split() == [str(ROOT / "app.py"), str(ROOT / "studio" / "__init__.py")]


def test_serve_reads_gradio_server_name_and_port_and_refuses_a_bad_one(tmp_path: Path) -> None:
    from app import build_parser, listen_address

    args = build_parser().parse_args(["serve"])
    os.environ.update(GRADIO_SERVER_NAME="0.0.0.0", GRADIO_SERVER_PORT="7999")
    try:
        assert listen_address(args) == ("0.0.0.0", 7999)
        flags = build_parser().parse_args(["serve", "--host", "127.0.0.1", "--port", "7001"])
        assert listen_address(flags) == ("127.0.0.1", 7001)  # the flags win
    finally:
        del os.environ["GRADIO_SERVER_NAME"], os.environ["GRADIO_SERVER_PORT"]
    assert listen_address(build_parser().parse_args(["serve"])) == ("127.0.0.1", 7860)

    refused = run(
        [sys.executable, str(ROOT / "app.py"), "serve", "--model", "none"], cwd=tmp_path, GRADIO_SERVER_PORT="seventy"
    )
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "error: GRADIO_SERVER_PORT: expected a port between 0 and 65535, got 'seventy'."
    ]
    # Beyond loopback by the variable is still beyond loopback: logins required.
    open_to_all = run(
        [sys.executable, str(ROOT / "app.py"), "serve", "--model", "none"], cwd=tmp_path, GRADIO_SERVER_NAME="0.0.0.0"
    )
    assert open_to_all.returncode == 2 and "without authentication" in open_to_all.stderr
