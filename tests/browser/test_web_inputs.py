"""Hostile inputs to a running studio, through the named API and through the browser's own handlers:
every answer is one line, nothing runs, and nothing is stored by a refused call."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest

from agent_studio.storage import open_store
from tests.support.live_server import running_studio
from tests.support.raw_client import handler_of

DEEP = "[" * 100_000 + "]" * 100_000
SETTINGS = '"gridworld", "{}", 0, "react-a", "generate", 0, 0.95, 64, 1, 0, true, "", false, "first", "random", 4, 0'  # env, options, seed, policy, mode, T, top-p, tokens, K, limit, few-shot, steer, record activations, verifier, mc policy, mc rollouts, mc horizon (the schema order)


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory):
    db = tmp_path_factory.mktemp("inputs") / "studio.db"
    with running_studio("--model", "scripted:tests/data/xss_model.json", "--db", str(db)) as url:
        yield {"url": url, "db": db}


def stored_steps(db: Path) -> int:
    with open_store(db) as store:
        return store.episodes.count()["steps"]


API_CASES = [
    ("/load_model", ("A", "a" * 1_000_000, "auto", "auto"), "at most 1,000 characters"),
    ("/load_model", ("A", "default", "tpu:7", "auto"), "Unknown device"),
    ("/load_model", ("A", "default", "auto", "int3"), "Unknown dtype"),
    ("/load_model", ("C", "default", "auto", "auto"), "Unknown model slot"),
    ("/reset", ("gridworld", DEEP, 0, "expert"), "Options has at most"),
    ("/reset", ("gridworld", "[" * 500 + "]" * 500, 0, "expert"), "nested"),
    ("/reset", ("gridworld", "{}", 2**63, "expert"), "from 0 to 2147483647"),
    ("/reset", ("gridworld", "{}", 0, "<b>x</b>"), "Unknown policy"),
    ("/reset", ("<img src=x>", "{}", 0, "expert"), "Unknown environment"),
    ("/reset", ("gym:FrozenLake-v1", '{"map_name": "99x99"}', 0, "random"), "does not accept these options"),
    ("/reset", ("gym:FrozenLake-v1", '{"desc": [1, 2]}', 0, "random"), "does not accept these options"),
    ("/step", ("x" * 10_000_000,), "at most 1,000 characters"),
    ("/run", (1e300,), "max_steps must be a whole number"),
]


def test_the_named_api_answers_hostile_inputs_in_one_line(studio) -> None:
    from gradio_client import Client

    client = Client(studio["url"], verbose=False)
    assert "episode_id" in client.predict("gridworld", "{}", 0, "expert", api_name="/reset")
    for api, args, refusal in API_CASES:
        answer = client.predict(*args, api_name=api)
        assert set(answer) == {"error"} and refusal in answer["error"] and "\n" not in answer["error"], (api, answer)
    assert stored_steps(studio["db"]) == 0  # the refused steps and runs stored nothing
    assert client.predict("", api_name="/step")["step"]["index"] == 0  # and the session still works


def raw(url: str, fn_index: int, data_json: str, session: str) -> dict:
    """Send JSON text as it is (NaN, Infinity, wrong types): what a hand-written client can do."""
    body = '{"data": %s, "fn_index": %d, "session_hash": "%s", "event_data": null, "trigger_id": null}' % (
        data_json,
        fn_index,
        session,
    )
    with httpx.Client(timeout=60) as client:
        joined = client.post(f"{url}gradio_api/queue/join", content=body, headers={"content-type": "application/json"})
        assert joined.status_code == 200, joined.text
        with client.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:") and json.loads(line[5:]).get("msg") == "process_completed":
                    return json.loads(line[5:])
    raise AssertionError("no answer")


UI_CASES = {  # button -> (inputs after the session state, what the answer must say)
    "seed NaN": (
        "as-reset",
        '"logprob", "gridworld", "{}", NaN, "react-a", "generate", 0, 0.95, 64, 1, 0, true, "", false, "first", "random", 4, 0',
        None,
    ),
    "seed text": (
        "as-reset",
        '"logprob", "gridworld", "{}", "<b>", "react-a", "generate", 0, 0.95, 64, 1, 0, true, "", false, "first", "random", 4, 0',
        None,
    ),
    "temperature infinite": (
        "as-reset",
        '"logprob", "gridworld", "{}", 0, "react-a", "generate", Infinity, 0.95, 64, 1, 0, true, "", false, "first", "random", 4, 0',
        None,
    ),
    "options not text": (
        "as-reset",
        '"logprob", "gridworld", {"size": 9}, 0, "react-a", "generate", 0, 0.95, 64, 1, 0, true, "", false, "first", "random", 4, 0',
        "not valid JSON",
    ),
    "options deep": (
        "as-reset",
        f'"logprob", "gridworld", {json.dumps("[" * 400 + "]" * 400)}, 0, "react-a", "generate", 0, 0.95, 64, 1, 0, true, "", false, "first", "random", 4, 0',
        "nested",
    ),
    "K huge": (
        "as-reset",
        '"logprob", "gridworld", "{}", 0, "react-a", "generate", 0, 0.95, 64, 1000000000, 0, true, "", false, "first", "random", 4, 0',
        None,
    ),
    "fork at NaN": ("as-fork", f'"logprob", NaN, {SETTINGS}', "whole number"),
    "run N text": ("as-run-n", f'"logprob", "x", {SETTINGS}', None),
    "5 MB action": (
        "as-take-action",
        f'"logprob", "{"x" * 5_000_000}", "gridworld", "{{}}", 0, "human", "generate", 0, 0.95, 64, 1, 0, true, "", false, "first", "random", 4, 0',
        "at most 1,000 characters",
    ),
    "colour markup": ("as-step", f'"<script>", {SETTINGS}', None),
    "verifier markup": (
        "as-reset",
        '"logprob", "gridworld", "{}", 0, "react-a", "generate", 0, 0.95, 64, 1, 0, true, "", false, "<b>x", "random", 4, 0',
        None,
    ),
    "steer a path": (
        "as-reset",
        '"logprob", "gridworld", "{}", 0, "react-a", "generate", 0, 0.95, 64, 1, 0, true, "../<b>x:1", false, "first", "random", 4, 0',
        "A vector name is",
    ),
    "mc rollouts huge": (
        "as-reset",
        '"logprob", "gridworld", "{}", 0, "react-a", "generate", 0, 0.95, 64, 1, 0, true, "", false, "mc", "random", 1e300, 0',
        "MC rollouts per action",
    ),
}


def test_the_browser_handlers_answer_hostile_inputs_in_one_line(studio) -> None:
    """Refused by Gradio's own input checks (one line, never run) or by ours (one line in the status)."""
    url = studio["url"]
    config = httpx.get(f"{url}config").json()
    session = uuid.uuid4().hex[:10]
    before = stored_steps(studio["db"])
    for name, (button, inputs, refusal) in UI_CASES.items():
        answer = raw(url, handler_of(config, button), f"[null, {inputs}]", session)
        if refusal is None:  # Gradio's own input check refuses the value before our handler runs
            error = answer["output"].get("error")  # no text: the studio runs with show_error=False
            assert answer["success"] is False and (error is None or "Traceback" not in error), (name, answer)
        else:
            assert answer["success"] is True, (name, answer)
            status = answer["output"]["data"][3]
            assert refusal in status and "as-error" in status and "\n" not in status, (name, status)
    assert stored_steps(studio["db"]) == before
