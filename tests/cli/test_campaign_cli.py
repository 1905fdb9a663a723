"""``agent-studio campaign``: make a campaign (annotators from a login file too), follow it, hand items
out, settle a disagreement, close it; every mistake one line, exit 2, nothing stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_studio.cli.main import main
from agent_studio.storage import open_store
from tests.support.store_helpers import run_react


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    path = tmp_path / "studio.db"
    with open_store(path) as store:
        run_react(store, seed=0, steps=2)
        store.preferences.pairs_from_candidates()
    return path


def _json(capsys, *args: str) -> object:
    assert main(["campaign", *args, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_a_campaign_from_the_command_line(db: Path, tmp_path: Path, capsys) -> None:
    logins = tmp_path / "logins.txt"
    logins.write_text("# team\nada:pw-a\nbob:pbkdf2_sha256$1000$00$ff\n", encoding="utf-8")
    guide = tmp_path / "guide.md"
    guide.write_text("# Prefer progress\n", encoding="utf-8")
    made = _json(capsys, "create", "team", "--auth-file", str(logins), "--annotators", "cy", "--overlap", "2",
                 "--guidelines", str(guide), "--taxonomy", "progress,loop", "--db", str(db))  # fmt: skip
    assert made["annotators"] == ["cy", "ada", "bob"] and made["overlap"] == 2 and made["guidelines_version"] == 1
    with open_store(db) as store:
        items = store.campaigns.pair_ids("team")
        assert store.campaigns.get("team").guidelines == "# Prefer progress\n"
        for who in ("ada", "bob"):
            for item in store.campaigns.queue("team", who, limit=100):
                store.campaigns.judge("team", who, item.pair_id, "left" if who == "ada" else "right", as_shown=False)
    shown = _json(capsys, "show", "team", "--db", str(db))
    assert shown["items"] == len(items) and set(shown["quality"]) == {"ada", "bob"}
    disputed = _json(capsys, "disagreements", "team", "--db", str(db))
    assert disputed and all({j["annotator"] for j in d["judgements"]} == {"ada", "bob"} for d in disputed)
    pair = disputed[0]["pair_id"]
    decided = _json(
        capsys, "adjudicate", "team", "--pair", pair, "--choice", "right", "--adjudicator", "lead", "--db", str(db)
    )
    assert (decided["pair_id"], decided["choice"], decided["adjudicator"]) == (pair, "right", "lead")
    guide.write_text("# Prefer safe progress\n", encoding="utf-8")
    assert _json(capsys, "guidelines", "team", "--guidelines", str(guide), "--db", str(db)) == {"version": 2}
    assert _json(capsys, "close", "team", "--db", str(db))["status"] == "closed"
    assert [c["name"] for c in _json(capsys, "list", "--db", str(db))] == ["team"]


def test_mistakes_are_one_line_and_store_nothing(db: Path, tmp_path: Path, capsys) -> None:
    binary = tmp_path / "guide.bin"
    binary.write_bytes(b"\xff\xfe\x00")
    for args, said in [
        (["create", "bad name"], "campaign name"),
        (["create", "x", "--overlap", "2", "--annotators", "ada"], "needs at least 2 annotators"),
        (["create", "x", "--gold", "nothing"], "PAIR=CHOICE"),
        (["create", "x", "--guidelines", str(binary)], "not UTF-8"),
        (["create", "x", "--guidelines", str(tmp_path / "missing.md")], "No guidelines file"),
        (["create", "x", "--auth-file", str(tmp_path / "missing.txt")], "Cannot read the auth file"),
        (["create", "x", "--env", "nowhere", "--annotators", "ada"], "No pairs match"),
        (["create", "x"], "give them (--annotators, or --auth-file)"),
        (["show"], "needs the campaign's name"),
        (["show", "nope"], "No campaign named"),
        (["assign", "nope", "--annotator", "ada", "--pairs", "p"], "No campaign named"),
        (["adjudicate", "nope"], "needs --pair and --choice"),
    ]:
        assert main(["campaign", *args, "--db", str(db)]) == 2, args
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1, (args, err)
    with open_store(db) as store:
        assert store.campaigns.list() == []
