"""The command line, run as a user runs it: in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from agent_studio.storage import open_store
from studio.envs.registry import builtin_names
from studio.trace import read_episodes_jsonl
from tests.support.live_server import running_studio

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "app.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("env", builtin_names())
def test_expert_succeeds_on_seeds_0_to_19(env: str) -> None:
    result = cli("run", "--env", env, "--policy", "expert", "--seed", "0", "--episodes", "20", "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["seed"] for line in lines] == list(range(20))
    assert all(line["success"] is True and line["env"] == env and line["policy"] == "expert" for line in lines)
    assert all(line["steps"] >= 1 and line["return"] == 1.0 and len(line["episode_id"]) == 32 for line in lines)


def test_single_seed_flag_as_in_the_readme() -> None:
    result = cli("run", "--env", "gridworld", "--policy", "expert", "--seed", "7", "--json")
    (line,) = [json.loads(x) for x in result.stdout.splitlines()]
    assert line["seed"] == 7 and line["success"] is True


def test_frozenlake_runs_with_the_random_policy_and_writes_episodes(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "frozen.jsonl"
    result = cli(
        "run", "--env", "gym:FrozenLake-v1", "--policy", "random", "--episodes", "3", "--out", str(out), "--frames"
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3 and "gym:FrozenLake-v1 seed=0 policy=random" in result.stdout
    episodes = read_episodes_jsonl(str(out))
    assert len(episodes) == 3 and all(e.env == "gym:FrozenLake-v1" and e.done for e in episodes)
    assert all(s.frame is not None for e in episodes for s in e.steps)


def test_env_options_are_applied() -> None:
    result = cli("run", "--env", "gridworld", "--env-opt", "size=11", "--env-opt", "difficulty=hard", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["success"] is True


def test_envs_lists_every_environment() -> None:
    result = cli("envs", "--json")
    described = [json.loads(line) for line in result.stdout.splitlines()]
    assert (
        [d["name"] for d in described]
        == [*builtin_names(), "gym:<id>", "twx:<id>", "web:<id>"]
        == ["gridworld", "household", "wikihop", "gym:<id>", "twx:<id>", "web:<id>"]
    )
    assert described[-1]["fork"] == "replay" and "web:miniwob.click-button" in described[-1]["members"]
    gridworld = described[0]
    assert {o["name"] for o in gridworld["options"]} == {"size", "difficulty"} and gridworld["expert"] is True
    assert "go north" in gridworld["action_space"]
    text = cli("envs").stdout
    assert "--env-opt hops=" in text and "household" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--env", "nope"], "Unknown environment 'nope'"),
        (["run", "--env", "gridworld", "--env-opt", "size=abc"], "Option 'size' must be int"),
        (["run", "--env", "gridworld", "--env-opt", "size=99"], "at most 15"),
        (["run", "--env", "gridworld", "--env-opt", "colour=red"], "Unknown option 'colour'"),
        (["run", "--env", "gridworld", "--env-opt", "size"], "expected name=value"),
        (["run", "--env", "gridworld", "--seed", "-1"], "a seed from 0 to 2147483647"),
        (["run", "--env", "gridworld", "--seed", "abc"], "a seed from 0 to 2147483647"),
        (["run", "--env", "gridworld", "--seed", str(2**63)], "a seed from 0 to 2147483647"),
        (
            ["run", "--env", "gym:FrozenLake-v1", "--policy", "random", "--env-opt", "map_name=99x99"],
            "does not accept these options",
        ),
        (
            ["run", "--env", "gym:FrozenLake-v1", "--policy", "random", "--env-opt", "desc=[1,2]"],
            "does not accept these options",
        ),
        (["run", "--env", "gridworld", "--env-opt", "size=" + "[" * 3000 + "]" * 3000], "nested too deeply"),
        (["run", "--env", "gridworld", "--policy", "react", "--top-p", "nan"], "expected a number from 0.01 to 1"),
        (["run", "--env", "gridworld", "--policy", "react", "--temperature", "inf"], "expected a temperature"),
        (["run", "--env", "gym:FrozenLake-v1"], "has no expert policy"),
        (["run", "--env", "gym:FrozenLake-v1", "--env-opt", "bins=8", "--policy", "random"], "for continuous"),
        (["run", "--env", "gridworld", "--policy", "genius"], "invalid choice"),
        (["serve", "--port", "99999"], "port"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_help_is_available_everywhere() -> None:
    for args in (["--help"], ["run", "--help"], ["envs", "--help"], ["serve", "--help"]):
        result = cli(*args)
        assert result.returncode == 0 and "usage:" in result.stdout


def test_serve_starts_with_the_default_model_and_the_first_step_needs_no_setup(tmp_path: Path) -> None:
    """The README's run command: the default model in slot A, gridworld reset, Step just works."""
    from gradio_client import Client

    with running_studio("--db", str(tmp_path / "s.db")) as url:
        with urllib.request.urlopen(url, timeout=5) as response:
            assert "Agent Studio" in response.read().decode("utf-8", "replace")
        client = Client(url, verbose=False)
        first = client.predict("", api_name="/step")  # a new session, nothing configured
        assert first["step"]["actor"] == "react" and first["step"]["index"] == 0 and first["step"]["tokens"]
        assert first["episode"]["env"] == "gridworld" and first["episode"]["seed"] == 0
        episode = client.predict(api_name="/get_episode")
        assert episode["model"]["id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_runs_are_stored_and_become_trajectory_pairs(tmp_path: Path) -> None:
    db = str(tmp_path / "runs.db")
    expert = cli(
        "run", "--env", "gridworld", "--policy", "expert", "--seed", "3", "--episodes", "2", "--db", db, "--json"
    )
    random_run = cli(
        "run", "--env", "gridworld", "--policy", "random", "--seed", "3", "--max-steps", "5", "--db", db, "--json"
    )
    assert expert.returncode == 0 and random_run.returncode == 0, expert.stderr + random_run.stderr
    ids = [json.loads(line)["episode_id"] for line in expert.stdout.splitlines() + random_run.stdout.splitlines()]
    result = cli("pairs", "--db", db, "--from", "episodes")
    assert result.stdout.strip() == "made 1 pairs (0 already there, 0 skipped as identical)"  # only seed 3 has two runs
    by_hand = cli("pairs", "--db", db, "--left", ids[0], "--right", ids[1])
    assert by_hand.returncode == 0 and json.loads(by_hand.stdout)["kind"] == "trajectory"
    stats = cli("stats", "--db", db)
    assert "episodes: 3 (3 finished)" in stats.stdout and "pairs: 2 (trajectory 2)" in stats.stdout
    assert "agreement: no pair has two annotators yet" in stats.stdout
    data = json.loads(cli("stats", "--db", db, "--json").stdout)
    assert data["episodes"] == 3 and data["pairs"] == 2 and data["annotations"] == 0

    from agent_studio.storage import open_store

    preferences = open_store(db).preferences
    for pair, choices in zip(preferences.pairs(), (("left", "left", "right"), ("right", "right", "right"))):
        for name, choice in zip(("ada", "bob", "cy"), choices):
            preferences.annotate(pair.id, name, choice, as_shown=False)
    stats = cli("stats", "--db", db)
    # L L R | R R R: o_LL 1, o_LR = o_RL 1, o_RR 4 -> n_L 2, n_R 4, alpha = 1 - 5 * 2 / 16 = 0.375.
    assert "66.7% over 2 pairs with two or more annotators, Krippendorff's alpha 0.375" in stats.stdout
    exported = cli("export", "--db", db, "--format", "episodes", "--out", str(tmp_path / "all.jsonl"))
    assert json.loads(exported.stdout)["records"] == 3
    assert {e.id for e in read_episodes_jsonl(str(tmp_path / "all.jsonl"))} == set(ids)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pairs", "--left", "abc"], "needs both --left and --right"),
        (["pairs", "--left", "abc", "--right", "def"], "No stored episode or candidate with id 'abc'"),
        (["pairs"], "one of the arguments --from --left is required"),
        (["export", "--format", "sft2", "--out", "x.jsonl"], "invalid choice: 'sft2'"),
    ],
)
def test_store_command_errors_are_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    result = cli(*args, "--db", str(tmp_path / "s.db"))
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_import_stores_a_trace_file_and_refuses_a_bad_one(tmp_path: Path) -> None:
    runs, db = tmp_path / "runs.jsonl", str(tmp_path / "s.db")
    assert (
        cli(
            "run",
            "--env",
            "household",
            "--policy",
            "expert",
            "--episodes",
            "2",
            "--out",
            str(runs),
            "--db",
            str(tmp_path / "other.db"),
        ).returncode
        == 0
    )
    result = cli("import", str(runs), "--db", db)
    assert result.returncode == 0 and result.stdout.startswith("stored 2 episodes")
    assert cli("import", str(runs), "--db", db).returncode == 0  # again: replaced, not duplicated
    assert json.loads(cli("stats", "--db", db, "--json").stdout)["episodes"] == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(runs.read_text().splitlines()[0] + "\n{not json\n")
    result = cli("import", str(bad), "--db", str(tmp_path / "fresh.db"))
    assert (
        result.returncode == 2 and "bad.jsonl, line 2" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    )
    missing = cli("import", str(tmp_path / "nope.jsonl"), "--db", db)
    assert missing.returncode == 2 and "Cannot read" in missing.stderr


def test_files_that_cannot_be_written_or_read_are_one_line_before_anything_is_stored(tmp_path: Path) -> None:
    """Bad --out targets fail before the run (nothing stored); bad import files fail before the database is touched."""
    import pickle

    import torch

    from tests.support.tiny_models import tiny_gpt2, tiny_tokenizer

    db = tmp_path / "s.db"
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    hostile_index = json.dumps(
        {
            "env": "gridworld",
            "seed": 0,
            "steps": [{"index": "<img src=x onerror=alert(1)>", "observation": "o", "action": None}],
        }
    )
    bad_frame = json.dumps(
        {
            "env": "gridworld",
            "seed": 0,
            "steps": [{"index": 0, "observation": "o", "action": None, "frame": "iVBORw0KGgo="}],
        }
    )
    files = {
        "binary.jsonl": (bytes(range(256)) * 4, "not a UTF-8 text file"),
        "markup.jsonl": (hostile_index.encode(), "steps[0].index: expected an integer"),
        "frame.jsonl": (bad_frame.encode(), "steps[0].frame"),
        "seed.jsonl": (json.dumps({"env": "gridworld", "seed": "seven"}).encode(), "seed: expected an integer"),
        "options.jsonl": (
            json.dumps({"env": "gridworld", "seed": 1, "env_options": [1, 2]}).encode(),
            "env_options: expected an object",
        ),
        "deep.jsonl": (('{"env": ' + "[" * 100_000 + "]" * 100_000 + "}").encode(), "nested too deeply"),
    }
    cases = [
        (["run", "--env", "gridworld", "--out", str(tmp_path / "a-folder")], "is a folder"),
        (["run", "--env", "gridworld", "--out", str(tmp_path / "a-file" / "x.jsonl")], "is a file, not a folder"),
        (["export", "--format", "dpo", "--out", str(tmp_path / "a-folder")], "is a folder"),
    ]
    for name, (content, message) in files.items():
        (tmp_path / name).write_bytes(content)
        cases.append((["import", str(tmp_path / name)], message))
    model = tmp_path / "pickled-model"  # PyTorch weights that hold more than tensors
    tokenizer = tiny_tokenizer()
    tiny_gpt2(tokenizer).save_pretrained(model)
    tokenizer.save_pretrained(model)

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    from safetensors.torch import load_file

    weights = load_file(model / "model.safetensors")
    (model / "model.safetensors").unlink()
    torch.save({**weights, "x": Exploit()}, model / "pytorch_model.bin", pickle_module=pickle)
    cases.append((["run", "--env", "gridworld", "--policy", "react", "--model", str(model)], "holds more than tensors"))
    for args, message in cases:
        result = cli(*args, "--db", str(db))
        assert result.returncode == 2 and message in result.stderr, (args[:3], result.stderr[-500:])
        said = [
            line for line in result.stderr.splitlines() if line.strip() and not line.startswith("[")
        ]  # less the progress lines
        assert len(said) == 1 and said[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "ran").exists()
    if db.exists():
        with open_store(db) as store:
            assert store.episodes.count()["steps"] == 0


def test_the_cli_offers_the_stores_pair_sources_and_starts_without_the_store() -> None:
    """``pairs --from`` lists the store's sources made automatically; building the parser (every
    command) imports no database code."""
    from agent_studio.storage.records import PAIR_SOURCES

    pairs = cli("pairs", "--help").stdout
    # --from values makes pairs of source mc; manual pairs come from --left/--right.
    assert "{candidates,episodes,values}" in pairs and set(PAIR_SOURCES) - {"candidates", "episodes"} == {
        "manual",
        "mc",
    }
    code = "import sys, agent_studio.cli.main as cli; cli.build_parser(); print(sorted(m for m in ('sqlalchemy', 'storage', 'gradio') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert loaded.stdout.strip() == "[]", loaded.stderr


def test_small_cli_seams_are_one_line(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    assert cli("run", "--env", "gridworld", "--policy", "expert", "--episodes", "3", "--db", db).returncode == 0
    limit = cli("judge", "--model", "default", "--limit", "-1", "--db", db)
    assert limit.returncode == 2 and "--limit" in limit.stderr and "positive integer" in limit.stderr
    none = cli("run", "--env", "gridworld", "--policy", "react", "--model", "none", "--db", db)
    assert none.returncode == 2 and none.stderr.strip().splitlines()[-1].startswith("error: 'none' is not a model")
    assert "Hugging Face Hub" not in none.stderr  # never looked up there
    # A reader that goes away before reading (`stats --json | head`, `| true`): no traceback.
    reader = subprocess.Popen(
        f"{sys.executable} app.py stats --json --db {db} | true", shell=True, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_serve_on_port_0_picks_a_free_port_and_says_which(tmp_path: Path) -> None:
    import time

    server = subprocess.Popen(
        [sys.executable, "app.py", "serve", "--port", "0", "--model", "none", "--db", str(tmp_path / "s.db")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = ""
        while "Agent Studio on http://" not in line:
            line = server.stdout.readline()
            assert line or server.poll() is None, "the studio exited"
        url = line.split(" on ", 1)[1].split()[0]
        assert not url.endswith(":0") and int(url.rsplit(":", 1)[1]) > 0
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "not served where it said"
                time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(30)
