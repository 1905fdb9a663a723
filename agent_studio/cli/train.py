"""Training from the store: ``train`` (a Q-value model or the policy, from the rows ``export`` writes) and
``trained`` (the registered models, and how each was made)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from agent_studio.cli.options import Command, add_db_argument, bounded_number, open_cli_store, positive_int
from studio.errors import StudioError


def add_training_flags(parser: Any, what: bool = True) -> None:
    """The flags of a training run (``train``; ``loop``'s training stage, without ``what``: the kind and the
    sources, which the loop fixes: a reward model on Monte Carlo pairs)."""
    from studio.training.spec import KINDS

    parser.add_argument("--model", default="default", help="the base model (default, a hub id, a folder)")
    if not what:
        parser.set_defaults(kind="reward", sources="mc")
    else:
        _add_what_flags(parser, KINDS)
    parser.add_argument("--full", action="store_true", help="train every weight (default: LoRA adapters, PEFT)")
    parser.add_argument("--lora-rank", type=positive_int, default=16, help="LoRA's rank (default 16)")
    parser.add_argument("--epochs", type=bounded_number(float, 0.01, 100), default=1.0, help="passes over the rows")
    parser.add_argument("--learning-rate", type=bounded_number(float, 1e-8, 1), default=None,
                        help="default 2e-4 with LoRA, 2e-5 without")  # fmt: skip
    parser.add_argument("--batch-size", type=positive_int, default=4, help="rows per optimizer step (default 4)")
    parser.add_argument("--seed", type=bounded_number(int, 0, 2**31 - 1), default=0, help="the training seed")
    parser.add_argument("--held-out", type=bounded_number(float, 0, 0.9), default=0.2,
                        help="share of episode seeds held out for the held-out pair accuracy (default 0.2)")  # fmt: skip
    parser.add_argument("--max-length", type=bounded_number(int, 16, 32768), default=1024, help="tokens per row")
    parser.add_argument("--beta", type=bounded_number(float, 1e-4, 100), default=0.1, help="DPO's and KTO's β")
    parser.add_argument("--train-steps", type=bounded_number(int, 0, 1_000_000), default=0,
                        help="optimizer steps at most (0: as --epochs say)")  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda")


def _add_what_flags(parser: Any, kinds: Any) -> None:
    parser.add_argument("--kind", default="reward", choices=list(kinds), help="reward: the step-level Q-value model "
                        "(a verifier, model:NAME); dpo, kto, sft: the policy itself (BASE+lora:NAME)")  # fmt: skip
    parser.add_argument(
        "--sources",
        default="all",
        help="whose judgements: human, mc, mc:SETTINGS, judge, judge:NAME or all (comma-separated)",
    )
    parser.add_argument("--sweep", metavar="NAME", help="only the pairs of this sweep's episodes (reward, dpo, kto)")


def train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the name to register the result under")
    add_training_flags(parser)
    parser.add_argument("--json", action="store_true", help="the run's record as one JSON object")
    add_db_argument(parser)


def spec_from_args(args: argparse.Namespace, name: str, **overrides: Any) -> Any:
    """The :class:`~studio.training.spec.TrainingSpec` the training flags describe."""
    from studio.training.spec import TrainingSpec, parse_sources

    values = dict(
        name=name, kind=args.kind, base=args.model, sources=parse_sources(args.sources), lora=not args.full,
        lora_rank=args.lora_rank, epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
        seed=args.seed, held_out=args.held_out, max_length=args.max_length, beta=args.beta, max_steps=args.train_steps,
        sweep=getattr(args, "sweep", None),
    )  # fmt: skip
    return TrainingSpec(**{**values, **overrides})


def progress_printer(every_s: float = 10.0) -> Any:
    """A progress callback that prints a line on stderr at most every ``every_s`` seconds (and the last step)."""
    last = [0.0]

    def show(progress: Any) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s or progress.step == progress.total:
            last[0] = now
            print(f"training: {progress.line()}", file=sys.stderr, flush=True)

    return show


def run_train(store: Any, spec: Any, device: str) -> Any:
    """Train ``spec`` from ``store``, with progress on stderr: the outcome. A termination signal (kill, a
    scheduler's preemption) ends the run as an exception would: its staging folder goes, the run is recorded
    as failed, and nothing is registered."""
    import signal

    from agent_studio.storage.training import run_training

    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return run_training(store, spec, progress=progress_printer(), device=device)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def describe_outcome(outcome: Any) -> dict[str, Any]:
    """What ``train`` prints: the model, how to use it, its data and its held-out accuracy."""
    record = outcome.record
    return {
        **outcome.model.describe(),
        "steps": record["steps"],
        "train_loss": record["train_loss"],
        "train_seconds": record["train_seconds"],
        "data": record["data"] | {"held_out_seeds": len(record["data"]["held_out_seeds"])},
    }


def cmd_train(args: argparse.Namespace) -> int:
    spec = spec_from_args(args, args.name)
    store = open_cli_store(args, create=False)
    outcome = run_train(store, spec, args.device)
    described = describe_outcome(outcome)
    if args.json:
        print(json.dumps(described))
    else:
        accuracy = described["held_out_accuracy"]
        shown = "n/a" if accuracy is None else f"{accuracy:.1%}"
        data = described["data"]
        print(
            f"{spec.name}: {spec.kind} on {data['train_rows']} rows ({data['held_out_rows']} held out), "
            f"{described['steps']} steps, loss {described['train_loss']:.4f}, held-out pair accuracy {shown}; "
            f"use: {'; '.join(described['use'])}"
        )
    return 0


def trained_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", default=None, metavar="NAME", help="one model: its whole record")
    parser.add_argument("--remove", action="store_true", help="remove the model NAME (its folder)")
    parser.add_argument("--json", action="store_true", help="one JSON object per model")


def cmd_trained(args: argparse.Namespace) -> int:
    from studio.training.registry import TrainedModels

    models = TrainedModels()
    if args.remove:
        if args.name is None:
            raise StudioError("Give the NAME of the trained model to remove.")
        models.remove(args.name)
        print(f"removed {args.name}", file=sys.stderr)
        return 0
    if args.name is not None:
        print(json.dumps(models.get(args.name).manifest, indent=None if args.json else 1))
        return 0
    for model in models.all():
        row = model.describe()
        if args.json:
            print(json.dumps(row))
        else:
            accuracy = row["held_out_accuracy"]
            shown = "" if accuracy is None else f"  held-out pair accuracy {accuracy:.1%}"
            print(
                f"{row['name']}  {row['kind']} of {row['base']}  rows {row['rows']}{shown}  use: {'; '.join(row['use'])}"
            )
    if not models.names() and not args.json:
        print(f"no trained models in {models.root} (agent-studio train NAME)", file=sys.stderr)
    return 0


TRAIN = Command(
    "train",
    "train a step-level Q-value model (reward) or the policy (dpo, kto, sft) on the store's rows; LoRA by default",
    train_arguments,
    cmd_train,
)
TRAINED = Command("trained", "the registered trained models, what each was trained on, how to use it",
                  trained_arguments, cmd_trained)  # fmt: skip
