"""From pairs to a better agent, measured: ``evaluate`` (best-of-K arms, or a trained policy against its base,
on held-out seeds: success with Wilson intervals and McNemar's exact test against a baseline, and what each
trained model was trained on) and ``loop`` (MC values on training seeds, pairs from values, a Q-value model
trained on them, evaluated on held-out seeds: each stage stored, the whole resumable)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

from agent_studio.cli.options import (
    Command,
    add_db_argument,
    add_executor_arguments,
    add_model_load_arguments,
    bounded_number,
    cli_executor,
    open_cli_store,
    positive_int,
    sweep_env_option,
)
from studio.errors import StudioError


def add_evaluation_flags(parser: argparse.ArgumentParser) -> None:
    """What ``evaluate`` and ``loop`` share: the environment, K, the sampling, the step limit."""
    parser.add_argument("--env", required=True, help="a registered environment")
    parser.add_argument("--env-opt", action="append", default=[], metavar="NAME=VALUE", help="an environment option")
    parser.add_argument("--k", type=bounded_number(int, 1, 16), default=4, help="outputs sampled a step (default 4)")
    parser.add_argument("--temperature", type=bounded_number(float, 0, 2), default=0.7, help="sampling (default 0.7)")
    parser.add_argument("--max-steps", type=bounded_number(int, 0, 10_000), default=0, help="0: the environment's")
    parser.add_argument("--parallel", type=positive_int, default=4, help="episodes side by side (default 4)")
    parser.add_argument("--json", action="store_true", help="the results as one JSON object")


def evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", required=True, metavar="200-249", help="held-out seeds (a range, a list, or both)")
    parser.add_argument("--models", default="default", metavar="A,B",
                        help="policies: the base and trained ones, e.g. default,default+lora:NAME")  # fmt: skip
    parser.add_argument("--verifiers", default="first,likelihood,oracle", metavar="V1,V2",
                        help="best-of-K arms, e.g. first,likelihood,model:NAME,oracle")  # fmt: skip
    parser.add_argument("--baseline", default=None, help="the arm the others are tested against (default: likelihood, "
                        "else the first model)")  # fmt: skip
    parser.add_argument("--name", default=None, help="the evaluation sweep's name (again: resumes it)")
    add_evaluation_flags(parser)
    add_model_load_arguments(parser)
    add_executor_arguments(parser)
    add_db_argument(parser)


def env_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--env-opt NAME=VALUE`` as the options of ``--env``."""
    return {name: value for _env, name, value in (sweep_env_option(f"{args.env}:{text}") for text in args.env_opt)}


def evaluation_spec(args: argparse.Namespace, models: list[str], verifiers: list[str], seeds: Any) -> Any:
    """The sweep an evaluation runs: every policy, with every verifier, on ``seeds``, K outputs a step."""
    from studio.evaluation.sweep import SweepSpec

    settings: dict[str, Any] = {"candidates": args.k, "temperature": args.temperature}
    if args.max_steps:
        settings["max_steps"] = args.max_steps
    vary = {"verifier": verifiers} if len(verifiers) > 1 else {}
    if len(verifiers) == 1 and verifiers[0] != "first":  # first is the default: the spec leaves it out
        settings["verifier"] = verifiers[0]
    return SweepSpec.build(models, [args.env], seeds, settings, 10, {args.env: env_options(args)}, vary)


def run_stored_sweep(args: argparse.Namespace, store: Any, spec: Any, name: str, executor: Any = None) -> Any:
    """Run the sweep ``name`` (made from ``spec`` the first time; again, the cells it lacks) on ``executor``
    (None: here): its record. A stored sweep of that name with another spec is refused."""
    from agent_studio.cli.evaluate import run_sweep_cells
    from agent_studio.storage.sweeps import SweepLease
    from studio.models.registry import ModelRegistry

    registry, stop = ModelRegistry(), threading.Event()
    lease = SweepLease(store.sweeps, on_lost=stop.set)
    existing = {record.name: record for record in store.sweeps.list()}.get(name)
    if existing is not None:
        if existing.spec.to_dict() != spec.to_dict():
            raise StudioError(f"A sweep named {name!r} exists with other settings: give another --name.")
        record = existing
        lease.acquire(record.id)
    else:
        spec.check_envs()
        spec.check_verifiers()
        for model in spec.models:
            registry.check(model)
        record = store.sweeps.create(spec, name, lease=lease)
        lease.hold(record.id)
    try:
        run_sweep_cells(args, store, registry, record, stop, show_results=False, executor=executor)
    finally:
        lease.release()
    return record


def lift(store: Any, record: Any, baseline: str | None) -> dict[str, Any]:
    """Each arm's success (Wilson interval) and McNemar's exact test against the baseline arm, and what
    every trained model in the sweep was trained on."""
    from studio.evaluation.sweep import sweep_results

    results = sweep_results(record.spec, store.sweeps.episodes_of(record.id))
    labels = [row["model"] for row in results["results"]]
    chosen = _baseline(labels, baseline)
    tests = {}
    for paired in results["paired"]:
        if chosen in (paired["first"], paired["second"]):
            other = paired["second"] if paired["first"] == chosen else paired["first"]
            tests[other] = paired
    arms = []
    for row in results["results"]:
        test = tests.get(row["model"])
        arms.append({
            "arm": row["model"], "successes": row["successes"], "episodes": row["success_known"],
            "rate": row["success_rate"], "low": row["success_low"], "high": row["success_high"],
            "mcnemar_p": None if test is None else test["mcnemar_p"],
            "only_arm": None if test is None else test["only_second" if test["first"] == chosen else "only_first"],
            "only_baseline": None if test is None else test["only_first" if test["first"] == chosen else "only_second"],
        })  # fmt: skip
    return {"sweep": record.name, "baseline": chosen, "arms": arms, "trained": results.get("trained", {})}


def _baseline(labels: list[str], wanted: str | None) -> str | None:
    if not labels:
        return None
    if wanted is None:
        return next((label for label in labels if "verifier=likelihood" in label), labels[0])
    for label in labels:
        if label == wanted or f"verifier={wanted})" in label or f"verifier={wanted}," in label:
            return label
    raise StudioError(f"No arm {wanted!r} to test against: the arms are {', '.join(labels)}.")


def print_lift(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    from studio.evaluation.stats import p_text

    width = max([len(arm["arm"]) for arm in result["arms"]] + [3])
    print(f"{'arm':<{width}}  success        95% CI        vs {result['baseline']}")
    for arm in result["arms"]:
        rate = "n/a" if arm["rate"] is None else f"{arm['successes']}/{arm['episodes']} = {arm['rate']:.0%}"
        interval = "" if arm["low"] is None else f"[{arm['low']:.0%}, {arm['high']:.0%}]"
        test = "" if arm["mcnemar_p"] is None else (
            f"only this {arm['only_arm']}, only baseline {arm['only_baseline']}, McNemar p = {p_text(arm['mcnemar_p'])}"
        )  # fmt: skip
        print(f"{arm['arm']:<{width}}  {rate:<13}  {interval:<12}  {test}")
    for name, trained in result["trained"].items():
        print(f"{name}: {trained['line']}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from studio.evaluation.sweep import parse_seeds

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    verifiers = list(dict.fromkeys(v.strip() for v in args.verifiers.split(",") if v.strip()))
    if not verifiers:
        raise StudioError("Give at least one verifier (--verifiers first,likelihood,...).")
    spec = evaluation_spec(args, models, verifiers, parse_seeds(args.seeds))
    store = open_cli_store(args)
    name = args.name or f"evaluate-{args.env.replace(':', '-').replace('/', '-')}-{spec.size}"
    with cli_executor(args) as executor:
        record = run_stored_sweep(args, store, spec, name, executor)
    print_lift(lift(store, record, args.baseline), args.json)
    print(f"stored in {store.url} as sweep {record.name}", file=sys.stderr)
    return 0


EVALUATE = Command(
    "evaluate",
    "best-of-K with each verifier (a trained one too), or trained policies against their base, on held-out seeds:"
    " success, Wilson intervals, McNemar p",
    evaluate_arguments,
    cmd_evaluate,
)


def loop_arguments(parser: argparse.ArgumentParser) -> None:
    from agent_studio.cli.train import add_training_flags

    parser.add_argument(
        "--seeds", required=True, metavar="0-199", help="every seed: the first part trains, the rest evaluates"
    )
    parser.add_argument("--eval-share", type=bounded_number(float, 0.05, 0.95), default=0.25,
                        help="the share of --seeds (the last ones) held out for the evaluation (default 0.25)")  # fmt: skip
    parser.add_argument("--name", default=None, help="the loop's name (stages are stored under it; again: resumes)")
    parser.add_argument("--acting-model", default=None, metavar="MODEL",
                        help="who acts in the collection and the evaluation (default: --model, the Q model's base), "
                        "e.g. a served model")  # fmt: skip
    parser.add_argument("--rollouts", type=bounded_number(int, 1, 1000), default=8, help="MC rollouts per output")
    parser.add_argument("--rollout-policy", default="random", choices=["random", "expert"], help="who acts in them")
    parser.add_argument("--horizon", type=bounded_number(int, 0, 10_000), default=10, help="steps after the action")
    parser.add_argument("--discount", type=bounded_number(float, 0.01, 1), default=0.95, help="per step")
    add_evaluation_flags(parser)
    group = parser.add_argument_group("training the Q-value model (a reward model on the Monte Carlo pairs)")
    add_training_flags(group, what=False)
    add_executor_arguments(parser)
    add_db_argument(parser)


def cmd_loop(args: argparse.Namespace) -> int:
    from agent_studio.cli.loop_stages import run_loop

    with cli_executor(args) as executor:
        result = run_loop(args, executor)
    print_lift(result, args.json)
    return 0


LOOP = Command(
    "loop",
    "the whole loop for a demo: MC values on training seeds, pairs, a trained Q-value model, evaluated on held-out "
    "seeds (resumable)",
    loop_arguments,
    cmd_loop,
)
