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

ROOT = Path(__file__).resolve().parents[2]


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
        [
            str(fresh_venv / "bin" / "python"),
            "-c",
            "import agent_studio.cli.main as cli, studio; print(cli.__file__, studio.__file__)",
        ],
        cwd=tmp_path,
    )
    assert where.stdout.split() == [
        str(ROOT / "agent_studio" / "cli" / "main.py"),
        str(ROOT / "studio" / "__init__.py"),
    ]


def test_serve_reads_gradio_server_name_and_port_and_refuses_a_bad_one(tmp_path: Path) -> None:
    from agent_studio.cli.main import build_parser
    from agent_studio.cli.serve import listen_address

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


def _copy_sources(target: Path) -> Path:
    """The project's files as a release would package them (no venvs, caches or build folders)."""
    import shutil

    skip = shutil.ignore_patterns(".venv*", ".git", "build", "dist", "__pycache__", "*.egg-info", ".pytest_cache")
    shutil.copytree(ROOT, target, ignore=skip)
    return target


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with the project installed from its wheel (``pip install`` of a built wheel, not
    editable): only what the wheel packages is there. Dependencies come from the test venv (a ``.pth``)."""
    work = tmp_path_factory.mktemp("wheel")
    source = _copy_sources(work / "source")
    built = run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "-w",
            "dist",
            str(source),
        ],
        cwd=work,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (work / "dist").glob("agent_studio-*.whl")
    venv = work / "venv"
    assert run([sys.executable, "-m", "venv", str(venv)], cwd=work).returncode == 0
    python = venv / "bin" / "python"
    site = Path(
        run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=work).stdout.strip()
    )
    (site / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check", str(wheel)],
        cwd=work,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    import shutil

    shutil.rmtree(source)  # nothing may be read from the source tree
    return venv


def test_a_wheel_install_serves_the_page_with_its_stylesheet(wheel_venv: Path, tmp_path: Path) -> None:
    import socket
    import time
    import urllib.request

    (tmp_path / "app.py").write_text("raise SystemExit('a stray app.py ran')\n")  # the user's own folder
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            str(wheel_venv / "bin" / "agent-studio"),
            "serve",
            "--model",
            "none",
            "--port",
            str(port),
            "--db",
            str(tmp_path / "s.db"),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
    )
    try:
        page = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as response:
                    page = response.read().decode("utf-8")
                break
            except OSError:
                time.sleep(0.5)
        assert page, server.stdout.read() if server.poll() is not None else "the studio did not answer"
        assert ".as-rate-bar" in page and ".as-present-stage" in page  # the packaged stylesheet is served
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_wheel_install_runs_its_own_cli_and_reports_carry_the_stylesheet(wheel_venv: Path, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("raise SystemExit('a stray app.py ran')\n")
    python = str(wheel_venv / "bin" / "python")
    version = run([python, "-m", "agent_studio", "--version"], cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"agent-studio {__version__}", version.stderr
    where = run([python, "-m", "agent_studio", "envs", "--json"], cwd=tmp_path)
    assert where.returncode == 0 and "gridworld" in where.stdout
    db = str(tmp_path / "s.db")
    ran = run(
        [python, "-m", "agent_studio", "run", "--env", "gridworld", "--policy", "expert", "--json", "--db", db],
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr  # the migrations are packaged: the database is made
    episode = json.loads(ran.stdout)["episode_id"]
    report = run([python, "-m", "agent_studio", "report", episode, "--out", "r.html", "--db", db], cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert ".as-timeline" in (tmp_path / "r.html").read_text(encoding="utf-8")
    # The importers are packaged, and the full-text index the migrations make answers.
    (tmp_path / "chat.jsonl").write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]})
        + "\n"
    )
    imported = run([python, "-m", "agent_studio", "import", "--from", "chat", "chat.jsonl", "--db", db], cwd=tmp_path)
    assert imported.returncode == 0 and "stored 1 episode" in imported.stdout, imported.stderr
    found = run([python, "-m", "agent_studio", "search", "hello", "--db", db], cwd=tmp_path)
    assert found.returncode == 0 and "[step] hello there" in found.stdout, found.stderr


def test_a_wheel_installs_one_namespace_and_every_source_file(wheel_venv: Path, tmp_path: Path) -> None:
    """The wheel installs ``studio`` and ``agent_studio`` (with ``agent_studio.storage`` and
    ``agent_studio.components`` inside it), no generic top-level ``app``, ``storage`` or
    ``components``, and every source file of the project's packages."""
    python = str(wheel_venv / "bin" / "python")
    found = run([python, "-c", "import importlib.util as u; print([n for n in ('app', 'storage', 'components') if u.find_spec(n)])"], cwd=tmp_path)  # fmt: skip
    assert found.returncode == 0 and found.stdout.strip() == "[]", found.stderr
    site = Path(run([python, "-c", "import agent_studio, os; print(os.path.dirname(os.path.dirname(agent_studio.__file__)))"], cwd=tmp_path).stdout.strip())  # fmt: skip
    listed = subprocess.run(["git", "ls-files", "studio", "storage", "components", "agent_studio"], cwd=ROOT,
                            capture_output=True, text=True).stdout.split()  # fmt: skip
    placed = {"storage": "agent_studio/storage", "components": "agent_studio/components"}
    missing = [
        path
        for path in listed
        if path.endswith((".py", ".css", ".ini", ".mako"))
        and not (site / placed.get(path.split("/")[0], path.split("/")[0]) / path.split("/", 1)[1]).exists()
    ]
    assert listed and missing == []
