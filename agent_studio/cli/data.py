"""Judgements and training data: ``import``, ``pairs``, ``values``, ``judge``, ``export`` and ``stats``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from studio.plugins import RegisteredNames
from agent_studio.cli.options import (
    Command,
    add_db_argument,
    add_executor_arguments,
    executor_from_args,
    open_cli_store,
    output_file,
    plural,
    positive_int,
    print_progress,
)
from studio.errors import StudioError


def import_arguments(load: argparse.ArgumentParser) -> None:
    """``import``'s flags."""
    load.add_argument("file", metavar="PATH", help="a file or folder (FILE.jsonl of episodes without --from)")
    load.add_argument(
        "--from",
        dest="source",
        default="trace",
        metavar="FORMAT",
        help="what PATH holds: trace (the studio's episodes JSONL, the default), inspect (an Inspect AI .eval/.json "
        "log), chat (JSONL of OpenAI messages, or a Hugging Face dataset folder), agentlab (an AgentLab/BrowserGym "
        "experiment folder), lerobot (a LeRobot v3 dataset folder), or an installed importer's name",
    )
    load.add_argument(
        "--replace",
        action="store_true",
        help="overwrite stored episodes whose content differs (judgements on unchanged steps are kept)",
    )
    add_db_argument(load)


def pairs_arguments(pairs: argparse.ArgumentParser) -> None:
    """``pairs``'s flags."""
    add_db_argument(pairs)
    source = pairs.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--from",
        dest="source",
        choices=[
            "candidates",
            "episodes",
            "values",
        ],  # PAIR_SOURCES less "manual" (values makes source mc); not imported: the parser starts without the store
        help="candidates: the outputs sampled at each step; episodes: finished episodes on the same env, options and seed; "
        "values: at each step with Monte Carlo values (agent-studio values), the best output against the worst (source mc)",
    )
    source.add_argument(
        "--left", metavar="ID", help="by hand: an episode id, a candidate id or EPISODE_ID:STEP (with --right)"
    )
    pairs.add_argument("--right", metavar="ID", help="the other side of a pair made by hand")
    pairs.add_argument("--env", default=None, help="only this environment")
    pairs.add_argument(
        "--episode",
        action="append",
        default=None,
        metavar="ID",
        help="only these episodes (repeatable; with --from candidates)",
    )
    pairs.add_argument(
        "--different-actions",
        action="store_true",
        help="skip two outputs with the same action (with --from candidates)",
    )
    pairs.add_argument(
        "--min-gap",
        type=float,
        default=0.0,
        help="with --from values: the smallest Q gap that makes a pair (default 0)",
    )
    pairs.add_argument(
        "--min-rollouts", type=int, default=1, help="with --from values: only estimates with this many rollouts or more"
    )
    pairs.add_argument("--settings", default=None, help="with --from values: only estimates with these settings")


def values_arguments(values: argparse.ArgumentParser) -> None:
    """``values``'s flags."""
    add_db_argument(values)
    values.add_argument("--episode", required=True, metavar="ID", help="a stored episode")
    values.add_argument("--step", type=int, default=None, help="one step (default: every step)")
    values.add_argument("--rollouts", type=int, default=4, help="rollouts per output (default 4)")
    values.add_argument(
        "--rollout-policy",
        choices=["expert", "random", "react"],
        default="expert",
        help="who acts in the rollouts (react: --model)",
    )
    values.add_argument("--horizon", type=int, default=None, help="steps a rollout may take (default: to the end)")
    values.add_argument(
        "--max-steps",
        type=positive_int,
        default=None,
        metavar="N",
        help="the step limit rollouts end at, as for run (default: the episode's own)",
    )
    values.add_argument("--seed", type=int, default=0, help="rollout i uses seed+i (default 0)")
    values.add_argument(
        "--discount",
        type=float,
        default=1.0,
        help="reward t steps after the action counts discount**t (default 1: none)",
    )
    values.add_argument(
        "--mc-labels",
        type=float,
        default=None,
        metavar="THRESHOLD",
        help="also label each step good/bad by its taken output's success fraction (annotator mc:SETTINGS)",
    )
    values.add_argument("--model", default="default", help="with --rollout-policy react: the model")
    values.add_argument(
        "--parallel",
        type=positive_int,
        default=1,
        help="rollouts run side by side (default 1); a model's calls then decode in lockstep, one batch per token",
    )
    values.add_argument("--json", action="store_true", help="one JSON object per estimate")
    add_executor_arguments(values)


def judge_arguments(judge: argparse.ArgumentParser) -> None:
    """``judge``'s flags."""
    add_db_argument(judge)
    judge.add_argument(
        "--model", required=True, help="the judge: any model that can score text (default, a hub id, a URL...)"
    )
    judge.add_argument("--limit", type=positive_int, default=None, help="at most this many pairs (default: all)")
    judge.add_argument("--kind", choices=["step", "trajectory"], default=None, help="only pairs of this kind")
    judge.add_argument("--env", default=None, help="only pairs on this environment")
    judge.add_argument("--source", default=None, help="only pairs from this source (candidates, episodes, manual, mc)")


def export_arguments(export: argparse.ArgumentParser) -> None:
    """``export``'s flags."""
    add_db_argument(export)
    # The registry (built-ins and installed packages' formats) is read when an export is parsed or
    # its help shown, not to build the parser: every other command starts without the store.
    export.add_argument(
        "--format", required=True, choices=RegisteredNames(_format_names), metavar="FORMAT", help="formats"
    )
    export.add_argument(
        "--out", type=output_file, required=True, metavar="FILE.jsonl", help="JSONL file to write (replaced)"
    )
    export.add_argument(
        "--hf-dataset", default=None, metavar="DIR", help="also save a Hugging Face datasets folder (needs `datasets`)"
    )
    export.add_argument(
        "--images",
        choices=("none", "paths"),
        default="none",
        help="observation frames: none (text models; the default) or paths (PNG files by absolute path, for VLMs)",
    )
    export.add_argument(
        "--prompt",
        choices=("compact", "full"),
        default="compact",
        help="compact: prompts without the few-shot example (the default; rows fit TRL's max_length 512); full: as the model saw them",
    )
    export.add_argument(
        "--annotators",
        default="default",
        metavar="WHO",
        help="whose judgements and step labels count: default (people where any person judged, machines "
        "elsewhere), humans, machines, all, or NAME,NAME (written in the summary)",
    )
    export.add_argument("--campaign", metavar="NAME", help="only this annotation campaign's pairs (dpo, reward, kto)")


def stats_arguments(stats: argparse.ArgumentParser) -> None:
    """``stats``'s flags."""
    add_db_argument(stats)
    stats.add_argument("--json", action="store_true", help="one JSON object (with per-pair agreement)")


def _format_names() -> list[str]:
    """The export registry's names (imported when argparse first asks: other commands start without the store)."""
    from agent_studio.storage.export import format_names

    return format_names()


class ExportHelp(argparse.HelpFormatter):
    """``export --help`` lists each registered format with its one-line summary."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.dest != "format":
            return action.help
        from agent_studio.storage.export import export_formats

        return "; ".join(f"{f.name}: {f.summary}" for f in export_formats()).replace("%", "%%")


def cmd_import(args: argparse.Namespace) -> int:
    if args.source != "trace":
        return import_from(args)
    from studio.trace import read_episodes_jsonl

    episodes = read_episodes_jsonl(args.file)  # read and check all first: a bad line stores nothing
    store = open_cli_store(args)
    results = store.episodes.save_all(episodes, replace=args.replace)  # one transaction
    outcomes = {outcome: sum(r.outcome == outcome for r in results) for outcome in ("stored", "unchanged", "replaced")}
    print(
        f"stored {plural(outcomes['stored'], 'episode')}, {outcomes['unchanged']} already stored unchanged, {outcomes['replaced']} replaced, in {store.url}"
    )
    for result in results:
        if result.outcome == "replaced":
            print(
                f"  {result.episode_id}: kept steps 0-{result.kept_steps - 1} with their labels and pairs; "
                f"dropped {plural(result.dropped_pairs, 'pair')} and {plural(result.dropped_labels, 'step label')} of changed steps"
                if result.kept_steps
                else f"  {result.episode_id}: every step changed; dropped {plural(result.dropped_pairs, 'pair')} and {plural(result.dropped_labels, 'step label')}"
            )
    return 0


def import_from(args: argparse.Namespace) -> int:
    """``import --from FORMAT PATH``: an importer's episodes streamed into the store in one transaction."""
    import time

    from studio.importers.registry import read_episodes

    episodes = read_episodes(args.source, args.file)  # the format and the path are checked before the store opens
    store = open_cli_store(args)
    started = last = time.perf_counter()

    def progress(done: int) -> None:  # a big log takes minutes: a line every 10 s says how far it is
        nonlocal last
        if time.perf_counter() - last >= 10:
            last = time.perf_counter()
            print(f"  {done:,} episodes read ({last - started:.0f} s)", file=sys.stderr, flush=True)

    counts = store.episodes.save_stream(episodes, replace=args.replace, progress=progress)
    print(
        f"stored {plural(counts['stored'], 'episode')} ({plural(counts['steps'], 'step')} read) from {args.source} in "
        f"{time.perf_counter() - started:.1f} s, {counts['unchanged']} already stored unchanged, "
        f"{counts['replaced']} replaced, in {store.url}"
    )
    return 0


def cmd_pairs(args: argparse.Namespace) -> int:
    if args.left is not None or args.right is not None:
        if not (args.left and args.right):
            raise StudioError("A pair by hand needs both --left and --right.")
        pair = open_cli_store(args).preferences.add_pair(args.left, args.right)
        print(json.dumps({"pair_id": pair.id, "kind": pair.kind, "env": pair.env}))
        return 0
    preferences = open_cli_store(args).preferences
    if args.source == "candidates":
        made = preferences.pairs_from_candidates(
            env=args.env, episode_ids=args.episode, different_actions=args.different_actions
        )
    elif args.source == "values":
        episode = args.episode[0] if args.episode and len(args.episode) == 1 else None
        if args.episode and len(args.episode) > 1:
            raise StudioError("--from values takes at most one --episode.")
        made = preferences.pairs_from_values(
            min_gap=args.min_gap,
            min_rollouts=args.min_rollouts,
            settings=args.settings,
            env=args.env,
            episode_id=episode,
        )
        print(f"{made.judged} pairs judged by the values ({', '.join(made.annotators) or 'none'})", file=sys.stderr)
    else:
        made = preferences.pairs_from_episodes(env=args.env)
    print(f"made {made.created} pairs ({made.already_there} already there, {made.identical} skipped as identical)")
    return 0


def check_values_arguments(args: argparse.Namespace, episode: Any) -> list[int]:
    """Every argument of ``values`` checked before anything is computed or stored (one line each):
    the steps to value."""
    if args.mc_labels is not None and not 0 <= args.mc_labels <= 1:
        raise StudioError(f"--mc-labels is a fraction of rollouts from 0 to 1, got {args.mc_labels:g}.")
    if not 1 <= args.rollouts <= 1000:
        raise StudioError(f"--rollouts must be from 1 to 1000, got {args.rollouts}.")
    if args.horizon is not None and args.horizon < 0:
        raise StudioError(f"--horizon must be 0 or more steps, got {args.horizon}.")
    if not 0 < args.discount <= 1:
        raise StudioError(f"--discount must be in (0, 1], got {args.discount:g}.")
    if not 0 <= args.seed <= 2**31 - 1:
        raise StudioError(f"--seed must be from 0 to {2**31 - 1}, got {args.seed}.")
    if not episode.steps:
        raise StudioError(f"Episode {episode.id} has no steps to value.")
    if args.step is not None and not 0 <= args.step < episode.length:
        raise StudioError(f"Episode {episode.id} has no step {args.step} (steps 0 to {episode.length - 1}).")
    steps = [args.step] if args.step is not None else list(range(episode.length))
    missing = [index for index in steps if episode.steps[index].state is None]
    if missing:
        raise StudioError(f"Step {missing[0]} has no environment snapshot: its values cannot be estimated.")
    return steps


def cmd_values(args: argparse.Namespace) -> int:
    from studio.executors.values import step_values_with
    from studio.models.registry import ModelRegistry

    store = open_cli_store(args, create=False)
    episode = store.episodes.get(args.episode)
    steps = check_values_arguments(args, episode)
    options = {"rollout_policy": args.rollout_policy, "rollouts": args.rollouts, "horizon": args.horizon,
               "seed": args.seed, "discount": args.discount, "max_steps": args.max_steps, "parallel": args.parallel}  # fmt: skip
    model = args.model if args.rollout_policy == "react" else None
    stored, failed = [], []

    def keep(_episode: Any, index: int, values: Any) -> None:
        if isinstance(values, StudioError):
            failed.append(f"step {index}: {values}")
            print(f"step {index}: failed: {values}", file=sys.stderr, flush=True)
            return
        store.preferences.save_values(values)
        stored.extend(values)
        for value in values:
            if args.json:
                print(json.dumps(value.to_dict()))
            else:
                print(
                    f"step {value.step_index} {value.output:<12} Q={value.q:+.3f} ± {value.stderr:.3f}  "
                    f"success {sum(value.successes)}/{value.rollouts}  {value.action}"
                )

    executor = executor_from_args(args)
    try:
        step_values_with(executor, [(episode, index) for index in steps], options, keep, model, ModelRegistry().load)
    finally:
        if executor is not None:
            executor.close()
    if args.mc_labels is not None and stored:
        labelled = store.preferences.labels_from_values(
            args.mc_labels, settings=stored[0].settings, episode_id=episode.id
        )
        print(f"labelled {labelled} steps as mc:{stored[0].settings}", file=sys.stderr)
    if failed:
        raise StudioError(f"{len(failed)} steps could not be valued (the others are stored): {failed[0]}")
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    from studio.scaling.judge import judge_queue
    from studio.scaling.judge import judge_name
    from studio.models.registry import ModelRegistry

    store = open_cli_store(args, create=False)
    backend = ModelRegistry().load(args.model, progress=print_progress)
    done = judge_queue(
        store.preferences,
        backend,
        limit=args.limit,
        kind=args.kind,
        env=args.env,
        source=args.source,
        progress=lambda n, total: print(f"judged {n}/{total}", file=sys.stderr, flush=True),
    )
    print(json.dumps({"judge": judge_name(backend), "judged": done}))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from agent_studio.storage.export import export

    summary = export(
        open_cli_store(args, create=False),
        args.format,
        args.out,
        hf_dataset=args.hf_dataset,
        images=args.images,
        prompt=args.prompt,
        annotators=args.annotators,
        campaign=args.campaign,
    )
    print(json.dumps(summary.to_dict()))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    store = open_cli_store(args, create=False)
    counts = store.episodes.count()
    numbers = store.preferences.stats()
    if args.json:
        print(json.dumps({**counts, **numbers}))
        return 0
    agreement = numbers["agreement"]
    print(f"database: {store.url}")
    print(
        f"episodes: {counts['episodes']} ({counts['finished_episodes']} finished), steps: {counts['steps']}, candidates: {counts['candidates']}"
    )
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(numbers["pairs_by_kind"].items())) or "none"
    print(f"pairs: {numbers['pairs']} ({kinds})")
    choices = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in numbers["choices"].items())
    print(f"annotations: {numbers['annotations']} ({choices}); step labels: {numbers['step_labels']}")
    for name, count in sorted(numbers["annotations_by_annotator"].items()):
        print(f"  {name}: {count}")
    if agreement["percent_agreement"] is None:
        print("agreement: no pair has two annotators yet")
    else:
        print(
            f"agreement: {agreement['percent_agreement']:.1%} over {agreement['items_with_two_or_more']} pairs with two or more annotators, Krippendorff's alpha {_alpha_text(agreement)}"
        )
        for row in agreement["pairwise"]:
            kappa = "n/a" if row["cohen_kappa"] is None else f"{row['cohen_kappa']:.3f}"
            print(
                f"  {row['annotators'][0]} vs {row['annotators'][1]}: {row['percent_agreement']:.1%} on {row['items']} pairs, Cohen's kappa {kappa}"
            )
    labels = numbers["label_agreement"]
    if labels["percent_agreement"] is not None:
        print(
            f"step-label agreement: {labels['percent_agreement']:.1%} over {labels['items_with_two_or_more']} steps with two or more annotators, Krippendorff's alpha {_alpha_text(labels)}"
        )
    return 0


def _alpha_text(report: dict[str, Any]) -> str:
    alpha = report["krippendorff_alpha"]
    return "n/a (one label throughout)" if alpha is None else f"{alpha:.3f}"


IMPORT = Command(
    "import",
    "store episodes: the studio's JSONL, or --from inspect|chat|agentlab|lerobot (what other harnesses recorded)",
    import_arguments,
    cmd_import,
)
PAIRS = Command(
    "pairs", "make preference pairs from stored candidates or episodes, or one pair by hand", pairs_arguments, cmd_pairs
)
VALUES = Command(
    "values",
    "Monte Carlo step values: Q of each output of a stored step, by rollouts from its snapshot",
    values_arguments,
    cmd_values,
)
JUDGE = Command(
    "judge",
    "a model judges the queued pairs it has not judged (blind), as annotator judge:MODEL",
    judge_arguments,
    cmd_judge,
)
EXPORT = Command(
    "export",
    "write training data in a registered format (TRL's dpo, reward, prm, kto; episodes; ...)",
    export_arguments,
    cmd_export,
    formatter_class=ExportHelp,
)
STATS = Command(
    "stats", "counts of episodes, pairs and annotations, and agreement between annotators", stats_arguments, cmd_stats
)
