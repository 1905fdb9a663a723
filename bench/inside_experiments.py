"""The insides, measured on the default model (what docs/inside.md reports), through the command line.

1. **EAST in miniature.** Score-mode episodes on training seeds (100+) make one EAST vector per
   environment (``steer make``); a sweep then steers the agent on seeds 0..N-1 with ALPHA varied
   (``--vary steer=...``). Per ALPHA: the mean action entropy per episode (nats, with a 95 %
   t-interval across episodes) and the success rate (Wilson 95 %).
2. **Probes.** On the unsteered gridworld episodes of the sweep: per layer, held-out R² of linear
   probes for the agent's and the goal's row and column, beside the shuffled-label control.

Prints one JSON object. Takes about half an hour on 2 CPU cores.

    python bench/inside_experiments.py [--seeds 20] [--alphas 0,4,8,16] [--steps 8] [--db FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def cli(*args: str, check: bool = True) -> str:
    """``agent-studio ARGS``' output (with ``check=False``, its error line as ``{"error": ...}``)."""
    done = subprocess.run([sys.executable, str(ROOT / "app.py"), *args], capture_output=True, text=True)
    if done.returncode != 0:
        if not check:
            return json.dumps({"error": done.stderr.strip().splitlines()[-1][:300]})
        raise SystemExit(f"agent-studio {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


def t_interval(values: list[float]) -> dict[str, float]:
    from scipy import stats

    mean = sum(values) / len(values)
    if len(values) < 2:
        return {"mean": mean, "low": mean, "high": mean}
    sem = stats.sem(values)
    half = float(sem * stats.t.ppf(0.975, len(values) - 1)) if sem > 0 else 0.0
    return {"mean": round(mean, 4), "low": round(mean - half, 4), "high": round(mean + half, 4)}


def by_alpha(db: str, sweep: str) -> dict[float, list[Any]]:
    """The sweep's episodes by the ALPHA their steps were steered with."""
    from agent_studio.storage import open_store

    with open_store(db) as store:
        episodes = store.sweeps.episodes_of(store.sweeps.get(sweep).id)
    groups: dict[float, list[Any]] = {}
    for episode in episodes:
        steering = episode.policy_config.get("steering") or {}
        groups.setdefault(float(steering.get("alpha", 0.0)), []).append(episode)
    return groups


def per_alpha(groups: dict[float, list[Any]]) -> list[dict[str, Any]]:
    from studio.evaluation.stats import wilson_interval

    rows = []
    for alpha, group in sorted(groups.items()):
        entropies = []
        for episode in group:
            values = [s.extra["action_entropy"] for s in episode.steps if "action_entropy" in s.extra]
            if values:
                entropies.append(sum(values) / len(values))
        wins = sum(1 for e in group if e.success)
        low, high = wilson_interval(wins, len(group))
        rows.append(
            {
                "alpha": alpha,
                "episodes": len(group),
                "action_entropy": t_interval(entropies) if entropies else None,
                "success": {"rate": round(wins / len(group), 4), "low": round(low, 4), "high": round(high, 4)},
                "steps_per_episode": round(sum(len(e.steps) for e in group) / len(group), 2),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--train-seeds", type=int, default=10)
    parser.add_argument("--alphas", default="0,4,8,16")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--envs", default="gridworld,household")
    parser.add_argument("--db", help="keep the episodes here (default: a temporary file)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="inside-"))
    os.environ["AGENT_STUDIO_VECTORS"] = str(folder / "vectors")
    db = args.db or str(folder / "inside.db")
    common = ["--model", "default", "--action-mode", "score", "--max-steps", str(args.steps), "--db", db]
    unsteered: list[str] = []
    report: dict[str, Any] = {"model": "default", "alphas": args.alphas, "steps": args.steps, "east": {}}
    for env in args.envs.split(","):
        cli("run", "--env", env, "--policy", "react", "--episodes", str(args.train_seeds), "--seed", "100",
            "--parallel", "4", *common)  # fmt: skip
        name = f"east-{env}"
        made = json.loads(cli("steer", "make", name, "--env", env, "--db", db, "--json"))
        layer = made["layer"]
        base = f"{name}:{layer}:1"
        cli("sweep", "--models", "default", "--envs", env, "--seeds", f"0-{args.seeds - 1}",
            "--action-mode", "score", "--max-steps", str(args.steps), "--steer", base,
            "--vary", f"steer={args.alphas}", "--name", f"east-{env}", "--parallel", "4", "--db", db)  # fmt: skip
        groups = by_alpha(db, f"east-{env}")
        report["east"][env] = {
            "vector": {"layer": layer, "steps": made["made_from"]["steps"], "norm": made["norms"][str(layer)]},
            "per_alpha": per_alpha(groups),
        }
        if env == "gridworld":
            unsteered = [e.id for e in groups.get(0.0, [])]
    probes = {}
    for target in ("agent_row", "agent_col", "goal_row", "goal_col"):
        out = cli("probe", "--target", target, "--episodes", ",".join(unsteered), "--db", db, "--json", check=False)
        probes[target] = json.loads(out)
    report["probes"] = probes
    report["finite"] = all(math.isfinite(v) for p in probes.values() for v in p.get("scores", []))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
