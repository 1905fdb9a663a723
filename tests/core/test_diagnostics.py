"""What went wrong, counted across episodes: reasons folded by their words, counted per model and
environment (checked against a count by hand), with links to example steps, shown escaped, and in the
CLI's compare."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent_studio.storage import open_store
from studio.evaluation.compare import comparison
from studio.evaluation.diagnostics import EXAMPLES, reason_group
from studio.trace import Episode, Step
from studio.viz.results import diagnostics_html

ROOT = Path(__file__).resolve().parents[2]


def _episode(policy: str, seed: int, steps: list[tuple[str | None, str | None]], end: str) -> Episode:
    """An ended episode of ``web:miniwob.click-button``: per step (invalid reason, action error)."""
    made = []
    for index, (invalid, error) in enumerate(steps):
        info = {"action_error": error} if error else {}
        made.append(
            Step(index=index, observation="o", action="click('1')", valid=invalid is None, invalid_reason=invalid,
                 info=info, terminated=index == len(steps) - 1)
        )  # fmt: skip
    episode = Episode(env="web:miniwob.click-button", seed=seed, policy=policy, steps=made)
    episode.success, episode.end_reason, episode.ended_at = False, end, "2026-12-05T00:00:00+00:00"
    return episode


def _corpus() -> list[Episode]:
    missing = "there is no element [{}] on the page now (element missing)."
    covered = "timed out after 500 ms: another element covers it (a dialog or overlay is in front)"
    return [
        _episode("alpha", 0, [(missing.format(999), None), (None, covered), (missing.format(12), None)], "terminated"),
        _episode("alpha", 1, [(missing.format(7), None), (None, None)], "browser stopped: Target closed"),
        _episode("alpha", 2, [(None, covered)], "terminated"),
        _episode("alpha", 3, [(missing.format(3), None), (missing.format(4), None)], "too many invalid actions"),
        _episode("beta", 0, [("'<script>x</script>' is not an action call like click('13').", None)], "terminated"),
    ]


def test_reasons_fold_their_particulars() -> None:
    assert reason_group("there is no element [999] on the page now.") == reason_group(
        "there is no element [1] on the page now"
    )
    assert reason_group("'goto' is not an action here") == "'…' is not an action here"
    assert reason_group("timed out after 500 ms: x") == "timed out after N ms: x"


def test_reasons_are_counted_per_model_with_example_steps() -> None:
    episodes = _corpus()
    rows = {row["model"]: row for row in comparison(episodes, lambda e: e.policy)["diagnostics"]}
    alpha = {(r["kind"], r["reason"]): r for r in rows["alpha"]["reasons"]}
    # By hand: five refused clicks on missing elements, two covered clicks, one crash, one cut for invalid actions.
    missing = alpha[("invalid", "there is no element […] on the page now (element missing)")]
    assert missing["count"] == 5 and len(missing["examples"]) == EXAMPLES
    assert missing["examples"][0] == {"episode": episodes[0].id, "step": 0}
    assert (
        alpha[("error", "timed out after N ms: another element covers it (a dialog or overlay is in front)")]["count"]
        == 2
    )
    assert alpha[("ended", "browser stopped: Target closed")]["count"] == 1
    assert alpha[("ended", "too many invalid actions")]["examples"] == [{"episode": episodes[3].id, "step": 1}]
    assert [r["count"] for r in rows["alpha"]["reasons"]] == sorted(
        (r["count"] for r in rows["alpha"]["reasons"]), reverse=True
    )
    assert rows["alpha"]["steps"] == 8 and rows["beta"]["reasons"][0]["count"] == 1


def test_the_view_escapes_reasons_and_links_to_the_steps() -> None:
    episodes = _corpus()
    html = diagnostics_html(comparison(episodes, lambda e: e.policy))
    assert "<script>" not in html and "&lt;script&gt;" not in html  # folded to '…' and escaped either way
    assert f'href="?present={episodes[0].id}&amp;step=0"' in html
    hostile = _episode("<b>m</b>", 0, [("<img src=x onerror=alert(1)>", None)], "terminated")
    shown = diagnostics_html(comparison([hostile], lambda e: e.policy))
    assert "<img" not in shown and "&lt;img src=x onerror=alert(N)&gt;" in shown and "<b>" not in shown


def test_the_cli_compare_says_what_went_wrong(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    for episode in _corpus():
        store.episodes.save(episode)
    run = subprocess.run(
        [sys.executable, "app.py", "compare", "--models", "alpha,beta", "--db", f"sqlite:///{tmp_path / 's.db'}"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "what went wrong: alpha" in run.stdout and "5  invalid there is no element […]" in run.stdout
    as_json = subprocess.run(
        [sys.executable, "app.py", "compare", "--models", "alpha,beta", "--json", "--db", f"sqlite:///{tmp_path / 's.db'}"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert json.loads(as_json.stdout)["diagnostics"][0]["model"] == "alpha"
