"""A running studio, attacked as any HTTP client could: no code from the web, no uploads, no open
network port without logins, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx

from tests.support.live_server import ROOT, free_port, running_studio
from tests.support.raw_client import call, handler_index


def serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "app.py", "serve", "--model", "none", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line_refusal(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, done
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


def test_serving_beyond_this_machine_needs_logins_and_bad_addresses_are_one_line() -> None:
    one_line_refusal(serve("--host", "0.0.0.0"), "without authentication", "--auth")
    one_line_refusal(serve("--host", "not..a..host"), "not an address")
    one_line_refusal(serve("--host", "0.0.0.0", "--auth", "nocolon"), "USER:PASSWORD")
    one_line_refusal(serve("--auth-file", "/no/such/file"), "Cannot read the auth file")
    one_line_refusal(serve("--models-dir", "/tmp"), "upload folder")
    one_line_refusal(serve("--models-dir", "/no/such/folder"), "is not a folder")
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        one_line_refusal(serve("--port", str(busy.getsockname()[1])), "is in use")


def hostile_model(folder: Path, marker: Path, code_home: Path) -> Path:
    """A model folder whose configuration class lives in ``code_home`` and creates ``marker`` when imported.

    With ``code_home`` elsewhere, ``auto_map`` points across folders the way transformers
    allows (``"<folder>--module.Class"``): the chain an uploaded file would be run through.
    """
    folder.mkdir(parents=True, exist_ok=True)
    code_home.mkdir(parents=True, exist_ok=True)
    (code_home / "configuration_x.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import PretrainedConfig\nclass XConfig(PretrainedConfig):\n    model_type = 'x'\n",
        encoding="utf-8",
    )
    target = "configuration_x.XConfig" if code_home == folder else f"{code_home}--configuration_x.XConfig"
    (folder / "config.json").write_text(
        json.dumps({"model_type": "x", "auto_map": {"AutoConfig": target, "AutoModelForCausalLM": target}}),
        encoding="utf-8",
    )
    return folder


def test_no_web_client_can_make_the_server_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    allowed = tmp_path / "models"
    outside = hostile_model(tmp_path / "outside", marker, tmp_path / "outside")
    crossing = hostile_model(allowed / "crossing", marker, tmp_path / "elsewhere")  # allowed folder, code elsewhere
    local_code = hostile_model(tmp_path / "own-code", marker, tmp_path / "own-code")
    # Even an operator who trusts remote code and allows a folder of models is safe from the web.
    with running_studio("--model", "none", "--trust-remote-code", "--models-dir", str(allowed)) as url:
        config = json.load(urllib.request.urlopen(url + "config"))
        labels = [str(c.get("props", {}).get("label") or "") for c in config["components"]]
        assert not any("trust" in label.lower() for label in labels)  # no widget offers it
        with httpx.Client(timeout=60) as client:
            # 1. Nothing can be uploaded (no panel takes a file).
            upload = client.post(
                f"{url}gradio_api/upload", files={"files": ("modeling_x.py", b"import os\nos.system('touch /tmp/x')\n")}
            )
            assert upload.status_code == 413, upload.text
            # 2. The Models tab's own handler (called as the browser does), with every path.
            load = handler_index(config, "load")
            refusals = {
                str(outside): "not under a folder the studio allows",
                str(crossing): "points its code at another repository or folder",
                f"{tmp_path}/uploaded/../outside": "not under a folder the studio allows",
                "scripted:/etc/passwd": "not under a folder the studio allows",
            }
            for name, refusal in refusals.items():
                reply = call(url, load, [None, name, "auto", "auto", True], client)  # a trust flag appended: ignored
                assert refusal in reply["output"]["data"][1], (name, reply)
            # 3. The named API too.
            from gradio_client import Client

            api = Client(url, verbose=False)
            for name, refusal in refusals.items():
                assert refusal in api.predict("A", name, "auto", "auto", api_name="/load_model")["error"]
    assert not marker.exists()
    # The operator's own command line still decides for itself: without --trust-remote-code nothing runs there either.
    refused = subprocess.run(
        [
            sys.executable,
            "app.py",
            "run",
            "--env",
            "gridworld",
            "--policy",
            "react",
            "--model",
            str(local_code),
            "--max-steps",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 2 and not marker.exists(), refused.stderr


def test_sigterm_stops_the_server_after_a_gymnasium_frame() -> None:
    """pygame (SDL) takes over SIGTERM when it starts; the studio must still stop (docker stop, systemd)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "app.py", "serve", "--model", "none", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "the studio did not start"
                time.sleep(0.5)
        from gradio_client import Client

        client = Client(url, verbose=False)
        assert client.predict("gym:FrozenLake-v1", "{}", 0, "random", api_name="/reset")["env"] == "gym:FrozenLake-v1"
        assert client.predict("", api_name="/step")["step"]["index"] == 0  # pygame has drawn a frame by now
        started = time.time()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=5)
        assert time.time() - started < 5
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
