"""The stages of ``agent-studio loop``, each stored so that running the same command again goes on where
it stopped: (1) the acting model's episodes on the training seeds, K outputs a step (a sweep); (2) Monte
Carlo values of every step's outputs, then best-vs-worst pairs judged by them (annotator ``mc:...``); (3) a
Q-value model trained on those pairs; (4) best-of-K with first, likelihood, the Q-value model and the oracle
on the held-out seeds (a sweep), and the lift."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from agent_studio.cli.options import open_cli_store, plural
from studio.errors import StudioError


def split_seeds(seeds: tuple[int, ...], eval_share: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The training seeds (the first ones) and the held-out seeds (the last ``eval_share``)."""
    held = max(1, round(len(seeds) * eval_share))
    if len(seeds) - held < 1:
        raise StudioError(f"--seeds gives {len(seeds)} seeds: too few to train on some and hold out the rest.")
    return seeds[:-held], seeds[-held:]


def value_steps(args: argparse.Namespace, store: Any, episode_ids: list[str], executor: Any = None) -> str:
    """Stage 2a: the MC values of each step with two or more different valid actions, unless stored already
    with these settings (on ``--executor``); the settings' name (the annotator ``mc:NAME`` judges with)."""
    from studio.executors.values import step_values_with
    from studio.scaling.values import settings_name as name_of

    options = {"rollout_policy": args.rollout_policy, "rollouts": args.rollouts, "horizon": args.horizon or None,
               "seed": args.seed, "discount": args.discount}  # fmt: skip
    settings_name = name_of(args.rollout_policy, args.rollouts, options["horizon"], float(args.discount))
    todo, done = [], 0
    for episode_id in episode_ids:
        episode = store.episodes.get(episode_id)
        for step in episode.steps:
            actions = {output.action for output in step.outputs() if output.action}
            if step.state is None or len(actions) < 2:
                continue
            if store.preferences.step_values(episode.id, step.index, settings_name):
                done += 1  # stored by an earlier run: keep those
                continue
            todo.append((episode, step.index))
    if not todo and not done:
        raise StudioError("No step of the training episodes had two different valid actions to value: raise --k.")
    failed: list[str] = []
    stored: list[int] = []

    def keep(episode: Any, index: int, values: Any) -> None:
        if isinstance(values, StudioError):
            failed.append(f"episode {episode.id[:12]} step {index}: {values}")
            return
        store.preferences.save_values(values)
        stored.append(index)
        if len(stored) % 50 == 0:
            print(f"loop: valued {len(stored)}/{len(todo)} steps", file=sys.stderr, flush=True)

    step_values_with(executor, todo, options, keep)
    print(f"loop: valued {plural(len(stored), 'step')} ({done} already stored)", file=sys.stderr, flush=True)
    if failed:
        raise StudioError(f"{len(failed)} steps could not be valued (the others are stored; run again): {failed[0]}")
    return settings_name


def run_loop(args: argparse.Namespace, executor: Any = None) -> dict[str, Any]:
    """Every stage of the loop (see the module's docstring), the sweeps and values on ``executor`` (None:
    here); the evaluation's lift."""
    from agent_studio.cli.loop import evaluation_spec, lift, run_stored_sweep
    from agent_studio.cli.train import describe_outcome, run_train, spec_from_args
    from studio.evaluation.sweep import parse_seeds
    from studio.training.registry import TrainedModels

    args.dtype, args.trust_remote_code = getattr(args, "dtype", "auto"), getattr(args, "trust_remote_code", False)
    train_seeds, eval_seeds = split_seeds(parse_seeds(args.seeds), args.eval_share)
    name = args.name or f"loop-{args.env.replace(':', '-').replace('/', '-')}"
    q_name = f"{name}-q"
    spec = spec_from_args(args, q_name, kind="reward", sources=("mc",))  # checked before anything runs
    store = open_cli_store(args)
    print(f"loop {name}: {len(train_seeds)} training seeds, {len(eval_seeds)} held out", file=sys.stderr)
    actor = args.acting_model or args.model
    collect = run_stored_sweep(
        args, store, evaluation_spec(args, [actor], ["first"], train_seeds), f"{name}-collect", executor
    )
    episodes = [e.id for e in store.sweeps.episodes_of(collect.id) if e.complete]
    settings = value_steps(args, store, episodes, executor)
    made = store.preferences.pairs_from_values(settings=settings, env=args.env)
    print(f"loop: pairs from values: {made.created} new, {made.judged} judged by mc:{settings}", file=sys.stderr)
    if q_name in TrainedModels().names():
        print(f"loop: {q_name} is trained already (agent-studio trained {q_name})", file=sys.stderr)
    else:
        # This loop's pairs only: its own estimate's, of its own collection (a store may hold other loops' pairs,
        # of other environments or of these very evaluation seeds).
        spec = dataclasses.replace(spec, sources=(f"mc:{settings}",), sweep=collect.name)
        outcome = run_train(store, spec, args.device)
        described = describe_outcome(outcome)
        print(f"loop: trained {q_name}: held-out pair accuracy {described['held_out_accuracy']}", file=sys.stderr)
    verifiers = ["first", "likelihood", f"model:{q_name}", "oracle"]
    evaluation = run_stored_sweep(
        args, store, evaluation_spec(args, [actor], verifiers, eval_seeds), f"{name}-eval", executor
    )
    return lift(store, evaluation, "likelihood")
