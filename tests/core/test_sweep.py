"""Sweeps: the spec and its cells, runs stored as tagged episodes, stop and resume without duplicates
(in process and after a killed CLI), subgoal progress rates, and the results view."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from agent_studio.storage import open_store
from studio.evaluation.compare import episode_progress, results_rows
from studio.envs.registry import make_env
from studio.errors import StudioError
from studio.models.hf import TransformersBackend
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from studio.agents.scripted import ExpertPolicy, RandomPolicy
from studio.evaluation.sweep import STOPPED, SweepSpec, parse_seeds, parse_vary, run_sweep, sweep_results
from studio.viz.results import paired_html, progress_html, results_table_html
from tests.support.tiny_models import tiny_llama, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]


def no_model(name: str):
    raise AssertionError(f"no model should load, asked for {name}")


def test_seeds_parse_as_ranges_and_lists() -> None:
    assert parse_seeds("0-4") == (0, 1, 2, 3, 4)
    assert parse_seeds("7, 0-2,2") == (0, 1, 2, 7)
    for bad, words in [("", "Give seeds"), ("a-b", "whole numbers"), ("5-2", "upwards"), ("0-5000", "at most")]:
        with pytest.raises(StudioError, match=words):
            parse_seeds(bad)


def test_a_spec_is_checked_and_its_cells_have_a_fixed_order() -> None:
    spec = SweepSpec.build(["expert", "random", "expert"], ["gridworld", "household"], "0-2", {"max_steps": 9})
    assert spec.models == ("expert", "random") and spec.size == 12
    cells = spec.cells()
    assert [c.index for c in cells] == list(range(12))
    assert [(c.model, c.env, c.seed) for c in cells[:4]] == [
        ("expert", "gridworld", 0),
        ("expert", "gridworld", 1),
        ("expert", "gridworld", 2),
        ("expert", "household", 0),
    ]
    assert SweepSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.episode_settings().temperature == 0.0  # greedy, as run is, for one output a step
    sampled = SweepSpec.build(["default"], ["gridworld"], "0", {"candidates": 4}).episode_settings()
    assert sampled.temperature == 0.7 and sampled.candidates == 4
    arms = SweepSpec.build(["default"], ["gridworld"], "0-1", {"candidates": 4}, vary={"verifier": ["first", "oracle"]})
    assert [c.label for c in arms.cells()] == ["default (verifier=first)"] * 2 + ["default (verifier=oracle)"] * 2
    assert arms.episode_settings(arms.cells()[2].variant).verifier == "oracle"
    for args, words in [
        (([], ["gridworld"], "0"), "at least one model"),
        ((["expert"], ["gridworld"], "0", {"verifier": "judge"}), "A sweep has no judge model"),
        ((["expert"], ["gridworld"], "0", {"seed": 3}), "does not take the setting 'seed'"),
        ((["expert"], ["gridworld"], "0", {"max_steps": -1}), "Step limit"),
        ((["m\x00"], ["gridworld"], "0"), "control characters"),
        (([f"m{i}" for i in range(9)], ["gridworld"], "0"), "at most 8 models"),
    ]:
        with pytest.raises(StudioError, match=words):
            SweepSpec.build(*args)
    unregistered = SweepSpec.build(["default"], ["gridworld"], "0", {"verifier": "model:nope"})  # stored sweeps read
    with pytest.raises(StudioError, match="No trained model named 'nope'"):
        unregistered.check_verifiers()  # before one runs
    with pytest.raises(StudioError, match="not one of the sweep's environments"):
        SweepSpec.build(["expert"], ["gridworld"], "0", env_options={"household": {"rooms": 2}})
    with pytest.raises(StudioError, match="Unknown environment"):
        SweepSpec.build(["expert"], ["nowhere"], "0").check_envs()


def test_varied_settings_make_a_model_per_combination(tmp_path: Path) -> None:
    tokenizer = tiny_tokenizer()
    backend = TransformersBackend(tiny_llama(tokenizer), tokenizer)
    spec = SweepSpec.build(
        ["expert", "tiny"],
        ["gridworld"],
        "0-1",
        {"max_steps": 2, "max_new_tokens": 10},
        vary=parse_vary("temperature=0,0.7; action_mode=generate,score"),
    )
    assert spec.vary == {"temperature": (0.0, 0.7), "action_mode": ("generate", "score")}
    assert spec.size == 2 + 4 * 2  # the expert once; the model once per combination
    labels = list(dict.fromkeys(cell.label for cell in spec.cells()))
    assert labels == [
        "expert",
        "tiny (temperature=0.0, action_mode=generate)",
        "tiny (temperature=0.0, action_mode=score)",
        "tiny (temperature=0.7, action_mode=generate)",
        "tiny (temperature=0.7, action_mode=score)",
    ]
    assert SweepSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    store = open_store(tmp_path / "s.db")
    record = store.sweeps.create(spec)
    run_sweep(spec, record.id, [store.episodes.sink()], lambda name: backend, parallel=2)
    episodes = store.sweeps.episodes_of(record.id)
    for episode, cell in zip(episodes, spec.cells(), strict=True):
        if cell.model == "tiny":
            config = episode.policy_config
            assert (config["temperature"], config["action_mode"]) == tuple(dict(cell.variant).values())
    results = sweep_results(spec, episodes)
    assert [row["model"] for row in results["results"]] == sorted(labels)
    assert len(results["paired"]) == 10  # every two of the five
    for bad, words in [
        ({"seed": ["1", "2"]}, "cannot vary 'seed'"),
        ({"temperature": ["0", "0.0"]}, "at least two different values"),
        ({"temperature": ["0", "9"]}, "Temperature"),
        ({"candidates": [str(k) for k in range(1, 6)], "top_p": ["0.5", "0.6", "0.7", "0.8"]}, "20 combinations"),
    ]:
        with pytest.raises(StudioError, match=words):
            SweepSpec.build(["tiny"], ["gridworld"], "0", vary=bad)
    with pytest.raises(StudioError, match="NAME=VALUE,VALUE"):
        parse_vary("temperature")


def test_model_names_from_the_browser_are_checked_before_anything_loads() -> None:
    from studio.models.access import ModelAccess
    from studio.models.registry import ModelRegistry

    registry, access = ModelRegistry(), ModelAccess()
    for fine in ("default", "HuggingFaceTB/SmolLM2-135M-Instruct", "gpt2"):
        registry.check(fine, access=access)
    for bad, words in [("<img src=x>", "not a valid Hugging Face hub id"), ("/etc", "Loading local files")]:
        with pytest.raises(StudioError, match=words):
            registry.check(bad, access=access)
    assert registry.loaded() == []


def test_a_sweep_stores_one_tagged_episode_per_cell_and_its_results(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    spec = SweepSpec.build(
        ["expert", "random"],
        ["gridworld", "household"],
        "0-3",
        {"max_steps": 12},
        env_options={"gridworld": {"difficulty": "medium"}},
    )
    record = store.sweeps.create(spec, "first")
    heard = []
    outcome = run_sweep(
        spec, record.id, [store.episodes.sink()], no_model, parallel=3, on_done=lambda c, r: heard.append(c)
    )
    assert outcome.completed == 16 and not outcome.failed and not outcome.stopped
    assert sorted(c.index for c in heard) == list(range(16))
    assert store.sweeps.complete_cells(record.id) == set(range(16))
    episodes = store.sweeps.episodes_of(record.id)
    assert [e.sweep_cell for e in episodes] == list(range(16)) and {e.sweep for e in episodes} == {record.id}
    for episode, cell in zip(episodes, spec.cells()):
        assert (episode.policy, episode.env, episode.seed) == (cell.model, cell.env, cell.seed)
        if cell.env == "gridworld":
            assert episode.env_options["difficulty"] == "medium"
    results = sweep_results(spec, episodes)
    assert results["complete"] == 16 and results["cells"] == 16
    rows = {(r["model"], r["env"]): r for r in results["results"]}
    assert (
        rows[("expert", "gridworld")]["success_rate"] == 1.0 and rows[("expert", "gridworld")]["progress_rate"] == 1.0
    )
    (paired,) = results["paired"]
    assert paired["pairs"] == 8 and paired["only_first"] == 8 - paired["both_succeeded"]
    # The sweep reloads by name or id, and a second sweep of the same name is refused in one line.
    assert store.sweeps.get("first").spec == spec == store.sweeps.get(record.id).spec
    with pytest.raises(StudioError, match="already exists"):
        store.sweeps.create(spec, "first")
    with pytest.raises(StudioError, match="No sweep named 'nope'"):
        store.sweeps.get("nope")


def test_a_stopped_sweep_resumes_with_exactly_the_missing_cells(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    spec = SweepSpec.build(["random"], ["gridworld"], "0-9", {"max_steps": 40})
    record = store.sweeps.create(spec)
    stop = threading.Event()
    finished = []

    def stop_after_three(cell, result) -> None:
        finished.append(result)
        if len(finished) == 3:
            stop.set()

    first = run_sweep(
        spec, record.id, [store.episodes.sink()], no_model, parallel=2, stop=stop, on_done=stop_after_three
    )
    assert first.stopped and first.completed < 10
    stopped = [e for e in finished if e.end_reason == STOPPED]
    complete = store.sweeps.complete_cells(record.id)
    assert len(complete) == first.completed and all(e.success is None for e in stopped)
    # A crash leaves an episode with no end at all: one taken step of cell 9, never finished.
    crashed = EpisodeRunner("gridworld", RandomPolicy(seed=9), sinks=[store.episodes.sink()])
    episode = crashed.reset(seed=9)
    episode.sweep, episode.sweep_cell = record.id, 9
    crashed.step()
    incomplete = len(stopped) + 1
    assert store.sweeps.discard_incomplete(record.id) == incomplete
    second = run_sweep(spec, record.id, [store.episodes.sink()], no_model, skip=store.sweeps.complete_cells(record.id))
    assert second.completed == 10 - len(complete)
    counts = Counter(e.sweep_cell for e in store.sweeps.episodes_of(record.id))
    assert counts == Counter(range(10))
    assert store.episodes.count_episodes() == 10  # nothing incomplete left over, no cell twice


def test_an_incomplete_episode_someone_judged_is_kept_and_untagged(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    spec = SweepSpec.build(["random"], ["gridworld"], "0")
    record = store.sweeps.create(spec)
    runner = EpisodeRunner("gridworld", RandomPolicy(seed=0), sinks=[store.episodes.sink()])
    episode = runner.reset(seed=0)
    episode.sweep, episode.sweep_cell = record.id, 0
    runner.step()
    store.preferences.label_step(episode.id, 0, "ada", "good")
    assert store.sweeps.discard_incomplete(record.id) == 0
    kept = store.episodes.get(episode.id)
    assert kept.sweep is None and kept.ended_at is not None and "interrupted" in kept.end_reason
    assert store.sweeps.complete_cells(record.id) == set()


def test_sweep_cells_of_a_model_run_in_lockstep_and_match_one_by_one(tmp_path: Path) -> None:
    tokenizer = tiny_tokenizer()
    backend = TransformersBackend(tiny_llama(tokenizer), tokenizer)
    spec = SweepSpec.build(["tiny"], ["gridworld"], "0-3", {"max_steps": 2, "max_new_tokens": 12})
    runs = {}
    for parallel in (1, 4):
        store = open_store(tmp_path / f"p{parallel}.db")
        record = store.sweeps.create(spec)
        asked = []
        run_sweep(
            spec, record.id, [store.episodes.sink()], lambda name: asked.append(name) or backend, parallel=parallel
        )
        assert asked == ["tiny"]  # one load per model
        runs[parallel] = store.sweeps.episodes_of(record.id)
    for alone, together in zip(runs[1], runs[4], strict=True):
        assert [s.raw for s in alone.steps] == [s.raw for s in together.steps]
        assert [s.action for s in alone.steps] == [s.action for s in together.steps]


def test_subgoals_give_progress_rates() -> None:
    env = make_env("gridworld", {"difficulty": "medium"})
    runner = EpisodeRunner(env, ExpertPolicy())
    runner.reset(seed=3)
    episode = runner.run()
    seen = [tuple(step.info["subgoals"].values()) for step in episode.steps]
    assert list(episode.steps[-1].info["subgoals"]) == ["key picked up", "door opened", "goal reached"]
    assert seen[-1] == (True, True, True) and (True, False, False) in seen and (True, True, False) in seen
    assert episode_progress(episode) == 1.0
    lost = EpisodeRunner(
        make_env("gridworld", {"difficulty": "medium"}), RandomPolicy(seed=1), config=RunnerConfig(max_steps=3)
    )
    lost.reset(seed=3)
    short = lost.run()
    assert episode_progress(short) in (0.0, 1 / 3) and not short.success
    easy = EpisodeRunner(make_env("gridworld", {"difficulty": "easy"}), ExpertPolicy())
    easy.reset(seed=0)
    assert episode_progress(easy.run()) is None  # easy has one goal and no subgoals
    house = EpisodeRunner(make_env("household", {"task": "heat"}), ExpertPolicy())
    house.reset(seed=2)
    done = house.run()
    names = list(done.steps[-1].info["subgoals"])
    assert len(names) == 3 and names[1].startswith("a hot ") and names[2].startswith("put a hot ")
    assert all(done.steps[-1].info["subgoals"].values())
    rows = results_rows([short, done])
    assert {row["env"]: row["progress_rate"] for row in rows} == {
        "gridworld": episode_progress(short),
        "household": 1.0,
    }


def test_results_html_escapes_every_value() -> None:
    hostile = "<img src=x onerror=alert(1)>"
    row = {
        "model": hostile,
        "env": "<script>x()</script>",
        "env_label": "<script>x()</script> (size=<b>1</b>)",
        "episodes": 3,
        "successes": 1,
        "success_rate": 1 / 3,
        "success_low": 0.06,
        "success_high": 0.79,
        "mean_return": "<b>1</b>",
        "mean_steps": 4.0,
        "invalid_rate": 0.0,
        "progress_rate": None,
        "tokens_per_step": None,
        "seconds_per_step": 0.5,
    }
    paired = {
        "first": hostile,
        "second": "b",
        "pairs": 3,
        "only_first": 1,
        "only_second": 0,
        "both_succeeded": 0,
        "neither": 2,
        "mcnemar_p": 1.0,
        "mcnemar_p_text": "<b>1</b>",
        "returns": None,
    }
    text = results_table_html({"results": [row]}) + paired_html({"paired": [paired]}) + progress_html(1, 3, hostile)
    assert "<img" not in text and "<script" not in text and "<b>1" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and "33%" in text and "[6%, 79%]" in text


def cli(*args: str, db: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "app.py", *args, "--db", str(db)], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_the_cli_sweep_errors_are_one_line(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    for args, words in [
        (["sweep", "--models", "expert"], "A new sweep needs --envs, --seeds"),
        (["sweep", "--models", "expert", "--envs", "nowhere", "--seeds", "0"], "Unknown environment"),
        (["sweep", "--resume", "ghost"], "No sweep named 'ghost'"),
        (["sweep", "--resume", "ghost", "--seeds", "0"], "--resume goes on with the stored sweep"),
        (["sweep", "--models", "expert", "--envs", "gridworld", "--seeds", "x"], "Seeds are whole numbers"),
        (
            ["sweep", "--models", "default", "--envs", "gridworld", "--seeds", "0", "--vary", "seed=1,2"],
            "A sweep cannot vary 'seed'",
        ),
    ]:
        result = cli(*args, db=db)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith(f"error: {words}"), result.stderr
    assert cli("compare", "ghost", db=db).stderr.strip().endswith("(agent-studio sweeps lists them).")


def test_a_killed_cli_sweep_resumes_without_duplicates(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    args = ["sweep", "--models", "random,expert", "--envs", "gridworld,household", "--seeds", "0-24"]
    process = subprocess.Popen(
        [sys.executable, "app.py", *args, "--name", "killed", "--max-steps", "60", "--parallel", "2", "--db", str(db)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    lines = 0
    deadline = time.monotonic() + 120
    while lines < 5 and time.monotonic() < deadline:
        if process.stdout.readline():
            lines += 1
    os.killpg(process.pid, signal.SIGKILL)  # mid-sweep, as a crash or a lost machine would
    process.wait()
    with open_store(db) as store:
        record = store.sweeps.get("killed")
        before = len(store.sweeps.complete_cells(record.id))
    assert 5 <= before < 100
    resumed = cli("sweep", "--resume", "killed", "--json", db=db)
    assert resumed.returncode == 0, resumed.stderr
    assert f"sweep killed: {before} of 100 episodes already done; running {100 - before}" in resumed.stderr
    results = json.loads(resumed.stdout.splitlines()[-1])
    assert results["complete"] == 100 and sum(row["episodes"] for row in results["results"]) == 100
    with open_store(db) as store:
        assert store.episodes.count_episodes() == 100
        assert Counter(e.sweep_cell for e in store.sweeps.episodes_of(record.id)) == Counter(range(100))
    listed = cli("sweeps", "--json", db=db)
    assert json.loads(listed.stdout)["complete"] == 100
    compared = cli("compare", "killed", db=db)
    assert "random vs expert, paired on 50 (env, options, seed)" in compared.stdout
