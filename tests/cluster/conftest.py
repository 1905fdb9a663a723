"""A real Ray cluster on loopback for the executor tests: a head started with ``ray start --head --block``
(4 logical CPUs: the module's two workers and a command line's two), connected to by this process; stopped with the module."""

from __future__ import annotations

import builtins
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from studio.models.engines import free_port


PRINT = builtins.print


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """The address (HOST:PORT) of a running local Ray cluster; fails with the reason if it cannot start."""
    import ray

    ray_bin = Path(sys.executable).with_name("ray")
    port = free_port()
    # Ray's socket paths must be short (a Unix socket name is at most 107 bytes): not under pytest's tmp_path.
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    # A cluster started by a plain ray.init() (``--ray-address local``) writes ~/.ray/auth_token, and a head
    # started later finds it and wants the token: this loopback cluster, its driver and workers say no auth.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_TQDM_PATCH_PRINT"] = "0"  # Ray's driver would replace builtins.print for the tests after these
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    command = [
        str(ray_bin),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--num-cpus=4",
        "--node-ip-address=127.0.0.1",
    ]
    command += ["--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"]
    head = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                ray.init(address=address, logging_level="ERROR", log_to_driver=False)
                break
            except (ConnectionError, RuntimeError) as exc:
                if head.poll() is not None or time.monotonic() > deadline:
                    output = head.stdout.read() if head.stdout and head.poll() is not None else ""
                    pytest.fail(f"The Ray head did not start at {address}: {exc} {output[-2000:]}")
                time.sleep(1)
        yield address
        assert builtins.print is PRINT, "Ray replaced builtins.print in this process"
    finally:
        ray.shutdown()
        head.terminate()
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
        shutil.rmtree(temp, ignore_errors=True)
