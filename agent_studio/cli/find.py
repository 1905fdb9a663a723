"""Finding behaviours across stored episodes: ``search``, ``tag``, ``note``, ``rubric``, ``diff``, ``aggregates``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agent_studio.cli.options import (
    Command,
    add_db_argument,
    add_model_load_arguments,
    load_cli_model,
    open_cli_store,
    plural,
)
from studio.errors import StudioError


def add_filters(parser: argparse.ArgumentParser, model: str = "--model") -> None:
    """The episode filters every command here takes (``model``: the flag of the model filter, where
    ``--model`` names the model a command loads)."""
    group = parser.add_argument_group("which episodes")
    group.add_argument("--env", help="only this environment")
    group.add_argument(model, dest="filter_model", metavar="MODEL", help="only episodes of this model (its name)")
    group.add_argument("--policy", help="only this policy")
    group.add_argument("--sweep", help="only the episodes of this sweep (its id)")
    group.add_argument("--outcome", choices=["success", "failure", "unknown", "running"])
    group.add_argument("--source", help="studio (run here) or an importer's name: inspect, chat, agentlab, lerobot")
    group.add_argument("--tag", help="tagged so (on the episode or a step)")
    group.add_argument("--judged", choices=["yes", "no"], help="with (or without) rubric or step labels")
    group.add_argument("--setting", metavar="KEY=VALUE", help="a policy setting, e.g. temperature=0.7")


def episode_filter(args: argparse.Namespace, text: str | None = None) -> Any:
    from agent_studio.storage.search import EpisodeFilter

    return EpisodeFilter(
        env=args.env,
        model=args.filter_model,
        policy=args.policy,
        sweep=args.sweep,
        outcome=args.outcome,
        source=args.source,
        tag=args.tag,
        judged=None if args.judged is None else args.judged == "yes",
        setting=args.setting,
        text=text,
    )


# -- search ------------------------------------------------------------------------------------------
def search_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "query",
        nargs="?",
        default="",
        help="words a step's thought, action or observation (or a note) has; none: list episodes",
    )
    add_filters(parser)
    parser.add_argument("--limit", type=int, default=50, help="at most this many rows (default 50)")
    parser.add_argument("--offset", type=int, default=0, help="skip this many episodes (pages of episodes)")
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    add_db_argument(parser)


def cmd_search(args: argparse.Namespace) -> int:
    store = open_cli_store(args, create=False)
    where = episode_filter(args)
    if args.query.strip():
        hits = store.search.search(args.query, where, limit=args.limit)
        for hit in hits:
            if args.json:
                print(json.dumps(hit.__dict__))
            else:
                at = "" if hit.step_index is None else f" step {hit.step_index}"
                print(f"{hit.episode_id}{at} [{hit.where}] {hit.snippet}")
        print(f"{len(hits)} match{'' if len(hits) == 1 else 'es'}", file=sys.stderr)
        return 0
    total = store.search.count(where)
    for row in store.search.page(where, limit=args.limit, offset=args.offset):
        if args.json:
            print(json.dumps(row.__dict__))
        else:
            outcome = {True: "success", False: "failure", None: "-"}[row.success]
            print(f"{row.id}  {row.env}  {row.model or row.policy}  {outcome}  {plural(row.steps, 'step')}")
    print(f"{plural(total, 'episode')} match", file=sys.stderr)
    return 0


# -- tags and notes ----------------------------------------------------------------------------------
def target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("episode", metavar="EPISODE[:STEP]", help="an episode id, or EPISODE:STEP for one of its steps")


def target(value: str) -> tuple[str, int | None]:
    episode, sep, step = value.partition(":")
    if not sep:
        return episode, None
    if not step.isdigit():
        raise StudioError(f"A step is EPISODE:STEP with STEP a number (got {value[:60]!r}).")
    return episode, int(step)


def tag_arguments(parser: argparse.ArgumentParser) -> None:
    target_arguments(parser)
    parser.add_argument("tags", nargs="+", metavar="TAG", help="words to put on it")
    parser.add_argument("--remove", action="store_true", help="take the tags off instead")
    parser.add_argument("--author", default="cli", help="who tags (default cli)")
    add_db_argument(parser)


def cmd_tag(args: argparse.Namespace) -> int:
    store = open_cli_store(args, create=False)
    episode, step = target(args.episode)
    if args.remove:
        removed = sum(store.search.untag(episode, tag, step) for tag in args.tags)
        print(f"removed {plural(removed, 'tag')}")
        return 0
    added = sum(store.search.tag(episode, tag, args.author, step) for tag in args.tags)
    print(f"added {plural(added, 'tag')} ({len(args.tags) - added} already there)")
    return 0


def note_arguments(parser: argparse.ArgumentParser) -> None:
    target_arguments(parser)
    parser.add_argument("text", help="the note")
    parser.add_argument("--author", default="cli", help="who writes it (default cli)")
    add_db_argument(parser)


def cmd_note(args: argparse.Namespace) -> int:
    store = open_cli_store(args, create=False)
    episode, step = target(args.episode)
    print(f"note {store.search.note(episode, args.text, args.author, step)} stored")
    return 0


# -- rubric judges -----------------------------------------------------------------------------------
def rubric_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the rubric's name (one word)")
    parser.add_argument("--question", help="what to ask of each episode, in plain words")
    parser.add_argument("--labels", help="the labels an answer may take, comma-separated (e.g. yes,no)")
    parser.add_argument("--judge", metavar="MODEL", help="judge the filtered episodes with this model")
    parser.add_argument("--episode", action="append", metavar="ID", help="only these episodes (repeatable)")
    parser.add_argument("--limit", type=int, default=100, help="judge at most this many episodes (default 100)")
    parser.add_argument("--label", metavar="EPISODE=LABEL", action="append", help="a person's label (with --annotator)")
    parser.add_argument("--annotator", help="who labels by hand, or whose labels --validate compares against")
    parser.add_argument(
        "--validate", metavar="MODEL", help="compare MODEL's labels with --annotator's (accuracy, kappa)"
    )
    add_filters(parser)
    add_model_load_arguments(parser.add_argument_group("the judge model"))
    add_db_argument(parser)


def rubric_of(args: argparse.Namespace) -> Any:
    from studio.evaluation.rubric import Rubric

    if not args.question or not args.labels:
        raise StudioError("A rubric needs --question and --labels (e.g. --labels yes,no).")
    return Rubric(args.name, args.question, tuple(x for x in args.labels.split(",") if x.strip()))


def cmd_rubric(args: argparse.Namespace) -> int:
    from studio.evaluation.rubric import agreement, judge_episode

    store = open_cli_store(args, create=False)
    if args.validate:
        if not args.annotator:
            raise StudioError("--validate needs --annotator: whose labels are the truth.")
        machine = store.rubrics.labels_by_episode(args.name, args.validate)
        human = store.rubrics.labels_by_episode(args.name, f"human:{args.annotator}")
        report = agreement(machine, human)
        kappa = "n/a (one label throughout)" if report["kappa"] is None else f"{report['kappa']:.3f}"
        print(
            f"{args.validate} against {args.annotator} on {plural(report['episodes'], 'episode')}: accuracy {report['accuracy']:.1%}, Cohen's kappa {kappa}"
        )
        print(json.dumps(report["confusion"], sort_keys=True))
        return 0
    rubric = rubric_of(args)
    if args.label:
        if not args.annotator:
            raise StudioError("Labels by hand need --annotator NAME.")
        pairs = [value.partition("=") for value in args.label]
        if any(not sep for _, sep, _ in pairs):
            raise StudioError("A label by hand is EPISODE=LABEL.")
        for episode, _, label in pairs:
            store.rubrics.label_by_hand(episode, rubric.name, label, args.annotator, rubric.labels)
        print(f"stored {plural(len(pairs), 'label')} of {args.annotator} under {rubric.name}")
        return 0
    if not args.judge:
        raise StudioError("Say what to do: --judge MODEL, --label EPISODE=LABEL, or --validate MODEL.")
    ids = args.episode or [row.id for row in store.search.page(episode_filter(args), limit=args.limit)]
    episodes = [store.episodes.get(i) for i in ids]  # a wrong id fails before the model loads
    from studio.models.registry import ModelRegistry

    backend = load_cli_model(ModelRegistry(), args.judge, args)
    for episode in episodes:
        verdict = judge_episode(backend, rubric, episode)
        store.rubrics.save(verdict)
        cites = ", ".join(str(n) for n in verdict.citations) or "none"
        print(f"{episode.id}: {verdict.label} (cites steps {cites}) {verdict.explanation[:200]}")
    print(f"stored {plural(len(episodes), 'verdict')} of {backend.card.id} under {rubric.name}", file=sys.stderr)
    return 0


# -- diff and aggregates -----------------------------------------------------------------------------
def diff_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("left", metavar="EPISODE")
    parser.add_argument("right", metavar="EPISODE")
    add_db_argument(parser)


def cmd_diff(args: argparse.Namespace) -> int:
    from studio.evaluation.trajectory_diff import diff_episodes

    store = open_cli_store(args, create=False)
    diff = diff_episodes(store.episodes.get(args.left), store.episodes.get(args.right))
    for row in diff.rows:
        mark = ">>" if row.index == diff.first_divergence else ("  " if row.same else " ~")
        left = "—" if row.left is None else (row.left.action or "—")
        right = "—" if row.right is None else (row.right.action or "—")
        print(f"{mark} {row.index:>3}  {left[:50]:<50}  {right[:50]}")
    print(f"first divergence: {diff.reason}")
    return 0


def aggregates_arguments(parser: argparse.ArgumentParser) -> None:
    add_filters(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object")
    add_db_argument(parser)


def cmd_aggregates(args: argparse.Namespace) -> int:
    from agent_studio.storage.aggregates import aggregates

    store = open_cli_store(args, create=False)
    found = aggregates(store.db, episode_filter(args))
    if args.json:
        print(json.dumps(found.__dict__))
        return 0
    print(f"{plural(found.episodes, 'episode')}")
    for reason, count, examples in found.invalid_reasons:
        where = ", ".join(f"{e}:{i}" for e, i in examples[:3])
        print(f"invalid x{count}: {reason[:100]}  (e.g. {where})")
    for episode, index, action in found.loops[:20]:
        print(f"loop: {episode}:{index} repeats {action[:60]!r}")
    return 0


SEARCH = Command(
    "search", "full-text search of stored steps and notes, or a filtered page of episodes", search_arguments, cmd_search
)
TAG = Command("tag", "put tags on an episode or a step (or take them off)", tag_arguments, cmd_tag)
NOTE = Command("note", "write a free note on an episode or a step (found by search)", note_arguments, cmd_note)
RUBRIC = Command(
    "rubric",
    "a rubric judge labels whole episodes (label, explanation, cited steps); people's labels; validation (accuracy, kappa)",
    rubric_arguments,
    cmd_rubric,
)
DIFF = Command(
    "diff", "two episodes of the same task side by side, the first divergent step marked", diff_arguments, cmd_diff
)
AGGREGATES = Command(
    "aggregates",
    "invalid-action reasons and repeated-action loops across filtered episodes",
    aggregates_arguments,
    cmd_aggregates,
)
