"""The insides from the command line, on the default model, as a user runs them: score-mode episodes,
an EAST vector made from them, the same episodes run again under it (a zero ALPHA changes nothing,
the lanes are tests/internals/test_steering.py's), probes, the lens and the observation dependence of a step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent_studio.storage import open_store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("inside")
    env = {**os.environ, "AGENT_STUDIO_VECTORS": str(folder / "vectors"), "HF_HUB_OFFLINE": "1"}
    db = str(folder / "inside.db")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "app.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env
        )

    # One at a time: side by side, which calls share a forward depends on timing (float sums differ ~1e-5).
    episodes = "--policy react --model default --action-mode score --max-steps 2 --episodes 3 --parallel 1 --seed 0"
    made = cli("run", "--env", "gridworld", *episodes.split(), "--db", db, "--json")
    assert made.returncode == 0, made.stderr[-2000:]
    return {
        "cli": cli,
        "db": db,
        "folder": folder,
        "episodes": episodes,
        "first": [json.loads(l) for l in made.stdout.splitlines()],
    }


def steps_of(db: str, ids: list[str]) -> list:
    with open_store(db) as store:
        return [store.episodes.get(i) for i in ids]


def test_make_list_show_and_steer_with_a_vector(world) -> None:
    cli, db = world["cli"], world["db"]
    made = cli("steer", "make", "explore", "--env", "gridworld", "--db", db, "--json")
    assert made.returncode == 0, made.stderr[-2000:]
    summary = json.loads(made.stdout)
    assert summary["method"] == "east" and summary["made_from"]["steps"] == sum(e["steps"] for e in world["first"])
    assert summary["layers"] == list(range(30)) and summary["layer"] == 15
    listed = cli("steer", "list")
    assert listed.returncode == 0 and listed.stdout.startswith("explore ")
    assert "sha256 " + summary["sha256"] in cli("steer", "show", "explore").stdout
    again = cli(
        "run", "--env", "gridworld", *world["episodes"].split(), "--steer", "explore:15:0", "--db", db, "--json"
    )
    assert again.returncode == 0, again.stderr[-2000:]
    plain = steps_of(db, [e["episode_id"] for e in world["first"]])
    zero = steps_of(db, [json.loads(l)["episode_id"] for l in again.stdout.splitlines()])
    for a, b in zip(plain, zero, strict=True):
        assert [s.action for s in a.steps] == [s.action for s in b.steps]
        for sa, sb in zip(a.steps, b.steps):
            assert max(abs(sa.action_logprobs[k] - sb.action_logprobs[k]) for k in sa.action_logprobs) < 1e-6
            assert sb.extra["steering"] == {
                "vector": "explore",
                "sha256": summary["sha256"],
                "layers": [15],
                "alpha": 0.0,
                "positions": "all",
            }
        assert b.policy_config["steering"]["alpha"] == 0.0
    one = world["episodes"].replace("--episodes 3", "--episodes 1").split()
    pushed = cli("run", "--env", "gridworld", *one, "--steer", "explore:15:64", "--db", db, "--json")
    strong = steps_of(db, [json.loads(l)["episode_id"] for l in pushed.stdout.splitlines()])
    assert any(
        abs(sa.action_logprobs[k] - sb.action_logprobs[k]) > 1e-3
        for a, b in zip(plain, strong) for sa, sb in zip(a.steps, b.steps) for k in sa.action_logprobs
    )  # fmt: skip


def test_probe_lens_and_perception_of_stored_steps(world) -> None:
    cli, db = world["cli"], world["db"]
    ids = ",".join(e["episode_id"] for e in world["first"])
    probed = cli("probe", "--target", "distance", "--layers", "0,15,29", "--episodes", ids, "--db", db, "--json")
    assert probed.returncode == 0, probed.stderr[-2000:]
    result = json.loads(probed.stdout)
    assert result["layers"] == [0, 15, 29] and len(result["scores"]) == len(result["control"]) == 3
    assert result["test_steps"] > 0 and result["metric"] in ("R²", "accuracy")
    first = world["first"][0]["episode_id"]
    lens = json.loads(cli("lens", first, "0", "--db", db, "--json").stdout)
    assert len(lens["logprobs"]) == 30 and set(lens["actions"]) >= {"go north", "go south"}
    assert lens["chosen"] == lens["actions"][max(range(len(lens["actions"])), key=lambda i: lens["logprobs"][-1][i])]
    seen = json.loads(cli("perception", first, "0", "--ablate", "mask", "--db", db, "--json").stdout)
    assert len(seen["tokens"]) == len(seen["kl"]) > 0 and all(v >= 0 for v in seen["kl"]) and max(seen["kl"]) > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["steer", "make", "../x"], "A vector name is"),
        (["steer", "show", "missing"], "No steering vector named 'missing'"),
        (["probe", "--target", "colour", "--env", "gridworld"], "no probe target 'colour'"),
        (["run", "--env", "gridworld", "--policy", "react", "--steer", "explore:1:9999"], "from -1000 to 1000"),
        (["lens", "nope", "0"], "No stored episode"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(world, args, message) -> None:
    done = world["cli"](*args, "--db", world["db"])
    assert done.returncode == 2, done.stderr[-1000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last
