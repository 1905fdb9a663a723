"""``results``: a sweep's metrics or a campaign's statistics where teams keep them: a CSV or Parquet file
(loads in pandas and spreadsheets) and an experiment tracker (MLflow, W&B offline, trackio), with a link
back to each episode in the studio."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agent_studio.cli.options import Command, add_db_argument, open_cli_store, output_file
from studio.errors import StudioError


def results_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--sweep", metavar="NAME", help="a stored sweep: a row per episode (or per arm, --table arms)")
    which.add_argument("--campaign", metavar="NAME", help="an annotation campaign: a row per annotator")
    parser.add_argument("--out", type=output_file, metavar="FILE", help="write the table to FILE.csv or FILE.parquet")
    parser.add_argument("--table", choices=("episodes", "arms"), default="episodes",
                        help="a sweep's rows: one per episode (default) or per arm and environment")  # fmt: skip
    parser.add_argument("--tracker", metavar="NAME", help="also log to a tracker: mlflow, wandb (offline), trackio")
    parser.add_argument("--tracker-dir", metavar="DIR", help="the tracker's local folder (default: its own)")
    parser.add_argument("--project", default="agent-studio", help="the tracker's project (default agent-studio)")
    parser.add_argument("--studio-url", metavar="URL", help="the studio's address, for links back to each episode")
    add_db_argument(parser)


def sweep_tables(store: Any, name: str, studio_url: str | None) -> tuple[Any, dict[str, list[dict[str, Any]]]]:
    """The sweep's record and its two tables (episodes, arms)."""
    from studio.results.tables import sweep_arm_rows, sweep_episode_rows

    record = store.sweeps.get(name)
    episodes = store.sweeps.episodes_of(record.id)
    return record, {
        "episodes": sweep_episode_rows(record.name, record.spec, episodes, studio_url),
        "arms": sweep_arm_rows(record.name, record.spec, episodes),
    }


def cmd_results(args: argparse.Namespace) -> int:
    from studio.results.tables import campaign_rows, check_studio_url, write_table
    from studio.results.trackers import TrackedResults, log_results, tracker_names

    if args.tracker and args.tracker not in tracker_names():
        raise StudioError(f"Unknown tracker {args.tracker[:40]!r}: use one of {', '.join(tracker_names())}.")
    if not args.out and not args.tracker:
        raise StudioError("Say where the results go: --out FILE.csv|FILE.parquet, --tracker NAME, or both.")
    studio_url = check_studio_url(args.studio_url)
    store = open_cli_store(args, create=False)
    if args.sweep:
        record, tables = sweep_tables(store, args.sweep, studio_url)
        run_name, config, rows = record.name, record.spec.to_dict(), tables[args.table]
        metrics = {
            f"{key}/{arm['model']}/{arm['env']}": arm[key]
            for arm in tables["arms"]
            for key in ("success_rate", "mean_return", "mean_steps", "invalid_rate")
            if isinstance(arm.get(key), (int, float))
        }
    else:
        campaigns = store.campaigns
        progress, quality = campaigns.progress(args.campaign), campaigns.quality(args.campaign)
        rows = campaign_rows(progress, quality)
        tables = {"annotators": rows}
        campaign = campaigns.get(args.campaign)
        run_name = campaign.name
        config = {k: getattr(campaign, k) for k in ("assignment", "overlap", "annotators", "taxonomy", "filters")}
        config["guidelines_version"] = campaign.guidelines_version
        alpha = quality["agreement"].get("krippendorff_alpha")
        metrics = {"items": progress["items"], "complete": progress["complete"], "gold_items": progress["gold_items"]}
        if alpha is not None:
            metrics["krippendorff_alpha"] = alpha
    said: dict[str, Any] = {"rows": len(rows)}
    if args.out:
        said["out"] = str(write_table(rows, args.out))
    if args.tracker:
        tracked = TrackedResults(args.project, run_name, config, metrics, tables, args.tracker_dir)
        said["tracker"] = {"name": args.tracker, "where": log_results(args.tracker, tracked)}
    print(json.dumps(said))
    return 0


RESULTS = Command(
    "results",
    "a sweep's metrics or a campaign's statistics to CSV or Parquet and to MLflow, W&B (offline) or trackio",
    results_arguments,
    cmd_results,
)
