"""``campaign``: annotation campaigns from the command line (make one, hand items out, follow its
progress and each annotator's quality, settle disagreements, close it). Judging happens in the
studio's Annotate tab; exports of a campaign are ``export --campaign NAME``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from agent_studio.cli.options import Command, add_db_argument, bounded_number, open_cli_store
from studio.errors import StudioError

ACTIONS = ("create", "list", "show", "guidelines", "assign", "disagreements", "adjudicate", "close")
MAX_FILE = 1_000_000


def campaign_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS, help="what to do")
    parser.add_argument("name", nargs="?", help="the campaign (every action but list)")
    made = parser.add_argument_group("create")
    made.add_argument("--annotators", default="", help="who judges, comma-separated (round-robin needs them)")
    made.add_argument("--auth-file", metavar="FILE", help="also every user of this login file (`serve --auth-file`)")
    made.add_argument("--overlap", type=bounded_number(int, 1, 100), default=1, help="annotators per item (default 1)")
    made.add_argument("--assignment", default="round-robin", choices=("round-robin", "explicit", "open"),
                      help="round-robin: dealt now; explicit: `campaign assign`; open: claimed as people ask")  # fmt: skip
    for name in ("kind", "source", "env", "sweep", "model"):
        made.add_argument(f"--{name}", help=f"only pairs of this {name}")
    made.add_argument("--limit", type=bounded_number(int, 1, 100_000), help="at most this many pairs")
    made.add_argument("--taxonomy", default="", help="the labels annotators may attach, comma-separated")
    made.add_argument("--gold", action="append", default=[], metavar="PAIR=CHOICE",
                      help="a gold item: a pair whose answer is known (left/right/tie/both-bad of the stored pair)")  # fmt: skip
    made.add_argument("--hide-consequences", action="store_true",
                      help="annotators may not see what each action leads to (so as not to bias them)")  # fmt: skip
    parser.add_argument("--guidelines", metavar="FILE.md", help="the guidelines (markdown; a new version each time)")
    parser.add_argument("--annotator", help="assign: to whom")
    parser.add_argument("--pairs", default="", help="assign: pair ids, comma-separated")
    parser.add_argument("--pair", help="adjudicate: the pair")
    parser.add_argument("--choice", help="adjudicate: left, right, tie or both-bad (of the stored pair)")
    parser.add_argument("--adjudicator", default="adjudicator", help="adjudicate: who decides")
    parser.add_argument("--rationale", default="", help="adjudicate: why")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    add_db_argument(parser)


def _names(text: str) -> list[str]:
    return [part.strip() for part in str(text or "").split(",") if part.strip()]


def _read_text(path: str | None) -> str:
    if not path:
        return ""
    file = Path(path).expanduser()
    if not file.is_file():
        raise StudioError(f"No guidelines file at {file}.")
    if file.stat().st_size > MAX_FILE:
        raise StudioError(f"The guidelines file {file} is over {MAX_FILE:,} bytes.")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise StudioError(f"The guidelines file {file} is not UTF-8 text.") from None


def _gold(entries: list[str]) -> dict[str, str]:
    gold = {}
    for entry in entries:
        pair, sep, choice = entry.partition("=")
        if not sep or not pair.strip() or not choice.strip():
            raise StudioError(f"--gold takes PAIR=CHOICE, got {entry[:60]!r}.")
        gold[pair.strip()] = choice.strip()
    return gold


def _summary(record: Any) -> dict[str, Any]:
    keys = ("name", "status", "assignment", "overlap", "annotators", "items", "gold_items", "guidelines_version")
    return {key: getattr(record, key) for key in keys} | {"filters": record.filters, "taxonomy": record.taxonomy}


def cmd_campaign(args: argparse.Namespace) -> int:
    if args.action != "list" and not args.name:
        raise StudioError(f"`campaign {args.action}` needs the campaign's name.")
    annotators = _names(args.annotators)
    if args.action == "create" and args.auth_file:  # the studio's logged-in users judge under their login names
        from agent_studio.components.auth import load_credentials

        annotators += [
            user for user in load_credentials(file=args.auth_file, environ={}).users if user not in annotators
        ]
    store = open_cli_store(args, create=args.action == "create")
    campaigns = store.campaigns
    if args.action == "create":
        filters = {key: getattr(args, key) for key in ("kind", "source", "env", "sweep", "model")}
        record = campaigns.create(
            args.name, overlap=args.overlap, assignment=args.assignment, annotators=annotators,
            filters=filters, limit=args.limit, guidelines=_read_text(args.guidelines), taxonomy=_names(args.taxonomy),
            gold=_gold(args.gold), show_consequences=not args.hide_consequences,
        )  # fmt: skip
        result: Any = _summary(record)
    elif args.action == "list":
        result = [_summary(record) for record in campaigns.list()]
    elif args.action == "show":
        quality = campaigns.quality(args.name)
        result = {**campaigns.progress(args.name), "quality": quality["annotators"], "agreement": quality["agreement"]}
        result["disagreements"] = len(campaigns.disagreements(args.name, settled=False))
    elif args.action == "guidelines":
        if not args.guidelines:
            raise StudioError("`campaign guidelines` needs --guidelines FILE.md.")
        result = {"version": campaigns.set_guidelines(args.name, _read_text(args.guidelines), author="cli")}
    elif args.action == "assign":
        if not args.annotator or not _names(args.pairs):
            raise StudioError("`campaign assign` needs --annotator and --pairs ID,ID.")
        result = {"assigned": campaigns.assign(args.name, args.annotator, _names(args.pairs))}
    elif args.action == "disagreements":
        result = [
            {
                "pair_id": d.pair_id,
                "judgements": [
                    {"annotator": j.annotator, "choice": j.choice, "rationale": j.rationale} for j in d.judgements
                ],
                "adjudication": None if d.adjudication is None else d.adjudication.__dict__,
            }
            for d in campaigns.disagreements(args.name)
        ]
    elif args.action == "adjudicate":
        if not args.pair or not args.choice:
            raise StudioError("`campaign adjudicate` needs --pair and --choice.")
        decision = campaigns.adjudicate(
            args.name, args.pair, args.adjudicator, args.choice, rationale=args.rationale, as_shown=False
        )
        result = decision.__dict__
    else:
        result = _summary(campaigns.close(args.name))
    print(json.dumps(result, indent=None if args.json else 2, default=str))
    return 0


CAMPAIGN = Command(
    "campaign",
    "annotation campaigns: items by filters, overlap, assignments, guidelines, gold items, adjudication, quality",
    campaign_arguments,
    cmd_campaign,
)
