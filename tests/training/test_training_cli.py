"""``train``, ``trained`` and ``evaluate`` as a user runs them: a Q-value model trained from a store's judged
pairs, used as a best-of-K arm on held-out seeds; each arm's success and McNemar p recomputed here (scipy);
refusals in one line (exit 2) that store nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from scipy.stats import binomtest

from agent_studio.storage import open_store
from tests.core.test_verifiers import EVERY_ACTION
from tests.support.store_helpers import judged_pairs, run_react

ROOT = Path(__file__).resolve().parents[2]


def cli(trained: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AGENT_STUDIO_TRAINED": str(trained), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "app.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env
    )


def test_train_then_evaluate_the_trained_verifier_against_the_others(tiny_base: str, tmp_path: Path) -> None:
    db, trained = tmp_path / "studio.db", tmp_path / "trained"
    empty = cli(trained, "train", "q", "--model", tiny_base, "--sources", "human", "--db", str(tmp_path / "none.db"))
    assert empty.returncode == 2 and empty.stderr.count("\n") == 1 and "No database at" in empty.stderr
    with open_store(db) as store:
        judged_pairs(store)
    made = cli(trained, "train", "q", "--model", tiny_base, "--sources", "human", "--train-steps", "2", "--db", str(db))
    assert made.returncode == 0, made.stderr[-2000:]
    assert "use: --verifier model:q" in made.stdout
    again = cli(trained, "train", "q", "--model", tiny_base, "--sources", "human", "--db", str(db))
    assert again.returncode == 2 and "exists already" in again.stderr and again.stderr.count("\n") == 1
    listed = cli(trained, "trained", "--json")
    assert json.loads(listed.stdout)["name"] == "q"

    outputs = tmp_path / "every.json"
    outputs.write_text(json.dumps({"outputs": EVERY_ACTION}))
    arms = ["--env", "gridworld", "--seeds", "10-13", "--k", "3", "--max-steps", "3", "--db", str(db)]
    judge = cli(trained, "evaluate", "--models", f"scripted:{outputs}", "--verifiers", "first,judge", *arms)
    assert judge.returncode == 2 and "no judge model" in judge.stderr and judge.stderr.count("\n") == 1
    result = cli(trained, "evaluate", "--models", f"scripted:{outputs}", "--verifiers", "first,model:q,oracle",
                 "--baseline", "first", "--name", "eval-q", "--json", *arms)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lift = json.loads(result.stdout.splitlines()[-1])
    assert [a["arm"].split("verifier=")[1].rstrip(")") for a in lift["arms"]] == ["first", "model:q", "oracle"]
    assert "reward model of" in lift["trained"]["model:q"]["line"]
    with open_store(db) as store:  # read without the trained model registered here: the sweep stays readable
        record = store.sweeps.get("eval-q")
        episodes = store.sweeps.episodes_of(record.id)
    won = {}
    for episode in episodes:
        won.setdefault(episode.policy_config.get("verifier", "first"), {})[episode.seed] = bool(episode.success)
    assert all(len(seeds) == 4 for seeds in won.values())
    for arm in lift["arms"]:
        verifier = arm["arm"].split("verifier=")[1].rstrip(")")
        assert arm["successes"] == sum(won[verifier].values()) and arm["episodes"] == 4
        if verifier == "first":
            assert arm["mcnemar_p"] is None
            continue
        only_arm = sum(won[verifier][s] and not won["first"][s] for s in range(10, 14))
        only_first = sum(won["first"][s] and not won[verifier][s] for s in range(10, 14))
        assert (arm["only_arm"], arm["only_baseline"]) == (only_arm, only_first)
        expected = 1.0 if only_arm + only_first == 0 else binomtest(only_arm, only_arm + only_first).pvalue
        assert abs(arm["mcnemar_p"] - expected) < 1e-12
    steps = [s for e in episodes if e.policy_config.get("verifier") == "model:q" for s in e.steps]
    assert steps and all(s.extra["verifier"]["name"] == "model:q" for s in steps if s.candidates)


def test_the_loop_collects_values_trains_and_evaluates_and_resumes(tiny_base: str, tmp_path: Path) -> None:
    """``loop`` end to end: a scripted model that offers every action acts (K = 3), its steps are valued by
    expert rollouts, the Q model is trained on the pairs (a tiny base), and the four arms are evaluated on
    the held-out seeds; the same command again runs nothing new."""
    db, trained = tmp_path / "loop.db", tmp_path / "trained"
    outputs = tmp_path / "every.json"
    outputs.write_text(json.dumps({"outputs": EVERY_ACTION}))
    command = ["loop", "--env", "gridworld", "--env-opt", "size=5", "--env-opt", "difficulty=easy", "--seeds", "0-5", "--eval-share", "0.34", "--k", "3", "--max-steps", "3",
               "--acting-model", f"scripted:{outputs}", "--model", tiny_base, "--rollouts", "1",
               "--rollout-policy", "expert", "--horizon", "12", "--train-steps", "2", "--name", "mini", "--json",
               "--db", str(db)]  # fmt: skip
    with open_store(db) as store:  # another loop's Monte Carlo pairs in the same store: not this loop's data
        run_react(store, seed=4, steps=2)
        store.preferences.pairs_from_candidates()
        for pair in store.preferences.pairs():
            store.preferences.annotate(pair.id, "mc:decoy", "left", as_shown=False)
    first = cli(trained, *command)
    assert first.returncode == 0, first.stderr[-2000:]
    lift = json.loads(first.stdout.splitlines()[-1])
    verifiers = [arm["arm"].split("verifier=")[1].rstrip(")") for arm in lift["arms"]]
    assert verifiers == ["first", "likelihood", "model:mini-q", "oracle"] and lift["sweep"] == "mini-eval"
    assert all(arm["episodes"] == 2 for arm in lift["arms"])  # seeds 4 and 5 held out
    with open_store(db) as store:
        collected = store.sweeps.episodes_of(store.sweeps.get("mini-collect").id)
        assert sorted(e.seed for e in collected) == [0, 1, 2, 3]
        valued = store.preferences.step_values(settings="expert-m1-h12-g0.95")
        assert valued and {v.episode_id for v in valued} <= {e.id for e in collected}
        (run,) = store.training.runs()
        assert run.status == "done" and run.base == tiny_base and run.name == "mini-q"
        # Trained on this loop's pairs only: its own estimate's, of its own collection.
        ids = {e.id for e in collected}
        mine = [
            a
            for a in store.preferences.annotations()
            if a.annotator == "mc:expert-m1-h12-g0.95"
            and a.choice in ("left", "right")
            and store.preferences.pair(a.pair_id).left.episode_id in ids
        ]
        assert mine and run.data["rows"] == len(mine)
        assert run.data["rows_by_source"] == {"mc:expert-m1-h12-g0.95": len(mine)}
        assert (run.spec["sources"], run.spec["sweep"]) == (["mc:expert-m1-h12-g0.95"], "mini-collect")
        counts = (len(collected), len(valued))
    again = cli(trained, *command)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "mini-q is trained already" in again.stderr and "0 of 4 episodes already done" not in again.stderr
    with open_store(db) as store:
        assert (len(store.sweeps.episodes_of(store.sweeps.get("mini-collect").id)), len(store.preferences.step_values(settings="expert-m1-h12-g0.95"))) == counts  # fmt: skip
        assert len(store.training.runs()) == 1
