"""Inside the network: ``steer`` (make, list, show steering vectors), ``probe``, ``lens``, ``perception``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from agent_studio.cli.find import add_filters, episode_filter
from agent_studio.cli.options import (
    Command,
    add_db_argument,
    add_model_load_arguments,
    load_cli_model,
    open_cli_store,
    plural,
)
from studio.errors import StudioError

#: Episodes read at most by one command.
MAX_EPISODES = 1000


def add_episode_choice(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--episodes", metavar="ID,ID", help="these episodes (else the filters choose)")
    add_filters(parser, model="--played-by")
    parser.add_argument(
        "--limit", type=int, default=200, help=f"at most this many episodes (default 200, most {MAX_EPISODES})"
    )


def chosen_episodes(store: Any, args: argparse.Namespace, **overrides: Any) -> list[Any]:
    """The episodes ``--episodes`` names, else the newest the filters select (``overrides``: filter fields)."""
    if args.episodes:
        ids = [i.strip() for i in args.episodes.split(",") if i.strip()]
    else:
        where = dataclasses.replace(episode_filter(args), **overrides)
        ids = [row.id for row in store.search.page(where, limit=max(1, min(args.limit, MAX_EPISODES)))]
    if not ids:
        raise StudioError("No episodes match: run some first, or loosen the filters.")
    return [store.episodes.get(i) for i in ids[:MAX_EPISODES]]


def add_model(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the model read")
    group.add_argument(
        "--model", default="default", help="the model whose insides are read (default: the embedded one)"
    )
    add_model_load_arguments(group)


def loaded(args: argparse.Namespace) -> Any:
    from studio.models.registry import ModelRegistry

    backend = load_cli_model(ModelRegistry(), args.model, args)
    if not backend.capabilities.internals:
        backend.internals()  # one line: why this model's insides cannot be read
    return backend


def library(args: argparse.Namespace) -> Any:
    from studio.internals.vectors import VectorLibrary

    return VectorLibrary(args.library)


def progress(done: int, total: int) -> None:
    if done == total or done % 25 == 0:
        print(f"read {done}/{total} steps", file=sys.stderr, flush=True)


# -- steer -------------------------------------------------------------------------------------------
def steer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["make", "list", "show"], help="make a vector, list the library, show one")
    parser.add_argument("name", nargs="?", help="the vector's name (make, show)")
    parser.add_argument(
        "--method", choices=["east", "contrastive"], default="east", help="how to make it (default east)"
    )
    parser.add_argument(
        "--positive-prompt", action="append", default=[], metavar="TEXT", help="contrastive from prompts: this side"
    )
    parser.add_argument(
        "--negative-prompt",
        action="append",
        default=[],
        metavar="TEXT",
        help="contrastive from prompts: the other side",
    )
    parser.add_argument("--replace", action="store_true", help="overwrite a vector of that name")
    parser.add_argument(
        "--library", metavar="DIR", help="the vector folder (default: AGENT_STUDIO_VECTORS or your data directory)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_episode_choice(parser)
    add_model(parser)
    add_db_argument(parser)


def cmd_steer(args: argparse.Namespace) -> int:
    vectors = library(args)
    if args.action == "list":
        rows = [vectors.load(name).summary() for name in vectors.names()]
        for row in rows:
            print(
                json.dumps(row)
                if args.json
                else f"{row['name']:<24} {row['method']:<12} layer {row['layer']:<3} {row['model']}"
            )
        print(f"{plural(len(rows), 'vector')} in {vectors.folder}", file=sys.stderr)
        return 0
    if not args.name:
        raise StudioError(f"steer {args.action} needs the vector's NAME.")
    if args.action == "show":
        summary = vectors.load(args.name).summary()
        if args.json:
            print(json.dumps(summary))
            return 0
        layers = summary["layers"]
        print(f"{summary['name']}: {summary['method']} vector of {summary['model']}, made {summary['created_at']}")
        print(
            f"  layers {layers[0]}-{layers[-1]} (steered by default: {summary['layer']}), hidden size {summary['hidden_size']}"
        )
        print("  norm per layer: " + ", ".join(f"{k}: {v:.3g}" for k, v in summary["norms"].items()))
        made = {k: v for k, v in summary["made_from"].items() if k not in ("refs", "episodes")}
        print(f"  made from: {json.dumps(made)}")
        print(f"  sha256 {summary['sha256']}")
        return 0
    from studio.internals.vectors import check_name

    check_name(args.name)
    if vectors.path(args.name).exists() and not args.replace:
        raise StudioError(f"A vector named {args.name!r} exists: choose another name (or --replace).")
    vector = _made(args, loaded(args))
    path = vectors.save(vector, replace=args.replace)
    print(
        json.dumps(vector.summary())
        if args.json
        else f"saved {vector.name} ({vector.method}, {len(vector.directions)} layers, default layer {vector.layer}) to {path}"
    )
    return 0


def _made(args: argparse.Namespace, backend: Any) -> Any:
    from studio.internals.activations import ActivationCache
    from studio.internals.making import make_contrastive, make_east, make_from_prompts

    if args.positive_prompt or args.negative_prompt:
        if args.method != "contrastive":
            raise StudioError("Prompts make a contrastive vector: add --method contrastive.")
        return make_from_prompts(args.name, backend, args.positive_prompt, args.negative_prompt)
    store = open_cli_store(args, create=False)
    cache = ActivationCache()
    if args.method == "east":
        return make_east(args.name, backend, chosen_episodes(store, args), cache, progress)
    if args.outcome:
        raise StudioError("A contrastive vector sets successes against failures itself: leave --outcome out.")
    good = chosen_episodes(store, args, outcome="success")
    bad = chosen_episodes(store, args, outcome="failure")
    return make_contrastive(args.name, backend, good, bad, cache, progress, labels=("success", "failure"))


# -- probe -------------------------------------------------------------------------------------------
def layer_list(text: str) -> list[int] | None:
    """``all`` (None) or the layers ``12``, ``8-16``, ``4,8,12`` name."""
    from studio.internals.vectors import parse_layers

    return None if text == "all" else list(parse_layers(text))


def probe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        required=True,
        help="what the environment says is true (gridworld: agent_row, goal_col, distance, ...)",
    )
    parser.add_argument("--layers", default="all", help="all (default), 12, 8-16 or 4,8,12")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_episode_choice(parser)
    add_model(parser)
    add_db_argument(parser)


def cmd_probe(args: argparse.Namespace) -> int:
    from studio.internals.activations import ActivationCache
    from studio.internals.probes import probe, probe_targets

    layers = layer_list(args.layers)
    store = open_cli_store(args, create=False)
    truth = probe_targets(chosen_episodes(store, args), args.target)  # a wrong target: before the model loads
    result = probe(loaded(args), truth, args.target, layers, ActivationCache(), progress)
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    print(
        f"{result.target}: {result.kind}, held-out {result.metric} per layer ({result.train_steps} steps to fit, {result.test_steps} held out on seeds {result.test_seeds[:8]})"
    )
    for layer, score, control in zip(result.layers, result.scores, result.control):
        print(f"  layer {layer:>3}  {score:7.3f}   shuffled {control:7.3f}")
    print(f"chance {result.chance:.3f}; best layer {result.best_layer}")
    return 0


# -- lens and perception -----------------------------------------------------------------------------
def step_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("episode", help="the episode's id")
    parser.add_argument("step", type=int, help="the step's index")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_model(parser)
    add_db_argument(parser)


def the_step(store: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    episode = store.episodes.get(args.episode)
    if not 0 <= args.step < len(episode.steps):
        raise StudioError(f"Episode {episode.id} has steps 0 to {len(episode.steps) - 1}, not {args.step}.")
    return episode, episode.steps[args.step]


def cmd_lens(args: argparse.Namespace) -> int:
    from studio.internals.lens import step_lens

    from studio.internals.vectors import recorded_steering

    episode, step = the_step(open_cli_store(args, create=False), args)
    view = step_lens(loaded(args), episode, step, recorded_steering(step.extra.get("steering")))
    if args.json:
        print(json.dumps(view.to_dict()))
        return 0
    print("layer  " + "  ".join(f"{a[:14]:>14}" for a in view.actions))
    for layer, row in enumerate(view.logprobs):
        print(f"{layer:>5}  " + "  ".join(f"{v:14.3f}" for v in row))
    print(f"chosen: {view.chosen}; the final choice leads from layer {view.leads_from}")
    return 0


def perception_arguments(parser: argparse.ArgumentParser) -> None:
    step_arguments(parser)
    parser.add_argument(
        "--ablate",
        default="mask",
        choices=["mask", "other", "blank", "noise"],
        help="how the observation is taken away",
    )
    parser.add_argument("--other-step", type=int, help="ablate=other: put this step's observation in its place")


def cmd_perception(args: argparse.Namespace) -> int:
    from studio.internals.perception import observation_dependence

    episode, step = the_step(open_cli_store(args, create=False), args)
    other = None
    if args.ablate == "other":
        if args.other_step is None or not 0 <= args.other_step < len(episode.steps):
            raise StudioError("--ablate other needs --other-step, a step of the same episode.")
        other = episode.steps[args.other_step].observation
    from studio.internals.vectors import recorded_steering

    steering = recorded_steering(step.extra.get("steering"))  # read as the step was steered
    result = observation_dependence(loaded(args), episode, step, args.ablate, other, steering)
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    for token, kl in zip(result.tokens, result.kl):
        print(f"{kl:10.5f}  {token!r}")
    return 0


STEER = Command(
    "steer",
    "make steering vectors (EAST or contrastive) from stored steps, list and show them",
    steer_arguments,
    cmd_steer,
)
PROBE = Command(
    "probe",
    "fit linear probes of what the agent represents (per layer, against shuffled labels)",
    probe_arguments,
    cmd_probe,
)
LENS = Command("lens", "the logit lens of a step: each layer's view of the candidate actions", step_arguments, cmd_lens)
PERCEPTION = Command(
    "perception",
    "how much each output token depends on the observation (KL against an ablated one)",
    perception_arguments,
    cmd_perception,
)
