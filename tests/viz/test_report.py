"""Self-contained HTML reports: one file that opens from file:// with networking off, escaped throughout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent_studio.storage import open_store
from studio.agents.scripted import ExpertPolicy, RandomPolicy
from studio.errors import StudioError
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from studio.viz.report import episode_report, write_report
from tests.support.live_server import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


def _episode(policy, max_steps: int | None = None, sinks=()):
    runner = EpisodeRunner("gridworld", policy, sinks=list(sinks), config=RunnerConfig(max_steps=max_steps))
    runner.reset(seed=0)
    return runner.run()


def _hostile_episode():
    episode = _episode(ExpertPolicy())
    episode.steps[0].thought = HOSTILE
    episode.steps[0].raw = f"Thought: {HOSTILE}\nAction: {episode.steps[0].action}"
    episode.instruction = HOSTILE
    return episode


def test_the_page_inlines_everything_and_escapes_model_text() -> None:
    page = episode_report(_hostile_episode(), compare=_episode(RandomPolicy(seed=1), max_steps=3))
    assert "<script>window.__pwned" not in page and "<img src=x" not in page
    assert "&lt;img src=x onerror=" in page
    assert page.count("Plotly.newPlot") == 2 and page.count("data:image/png;base64,") >= 2 * 3
    body = page.split("</head>", 1)[1]  # (plotly.js itself holds attribution links, which it never loads)
    assert 'src="http' not in body and 'href="http' not in body  # nothing loaded from elsewhere


def test_bad_targets_are_one_line(tmp_path: Path) -> None:
    episode = _episode(ExpertPolicy())
    with pytest.raises(StudioError, match="as .html"):
        write_report(episode, tmp_path / "r.pdf")
    (tmp_path / "x.html").mkdir()
    with pytest.raises(StudioError, match="is a folder"):
        write_report(episode, tmp_path / "x.html")
    assert not any(p.is_file() for p in tmp_path.iterdir())


@pytest.mark.browser
def test_the_report_opens_offline_from_a_file_and_shows_the_trace_and_plots(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    db = tmp_path / "s.db"
    with open_store(db) as store:
        expert = _episode(ExpertPolicy(), sinks=[store.episodes.sink()])
        walker = _episode(RandomPolicy(seed=1), max_steps=3, sinks=[store.episodes.sink()])
    out = tmp_path / "report.html"
    result = subprocess.run(
        [sys.executable, "app.py", "report", expert.id, "--compare", walker.id, "--out", str(out), "--db", str(db)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["episodes"] == 2
    hostile = tmp_path / "hostile.html"
    write_report(_hostile_episode(), hostile)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(offline=True)  # networking disabled
            page = context.new_page()
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(out.as_uri())
            page.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=30_000)
            assert page.locator(".js-plotly-plot").count() == 2  # each side's signals, drawn
            assert page.locator(".as-step").count() == expert.length + walker.length
            assert page.locator(".as-report-frames img").count() == expert.length + walker.length + 2
            assert all(page.evaluate(f"document.images[{i}].naturalWidth > 0") for i in range(3))
            assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
            page.goto(hostile.as_uri())
            page.locator(".as-step").first.wait_for(timeout=30_000)
            assert page.evaluate("window.__pwned") is None and HOSTILE in page.inner_text("body")
        finally:
            browser.close()


def test_a_report_carries_the_stored_values_and_cross_scores(tmp_path: Path) -> None:
    from studio.evaluation.crossscore import CrossScore
    from studio.trace import TokenInfo
    from studio.scaling.values import estimate_step_values
    from agent_studio.storage.reports import report_extras

    with open_store(tmp_path / "s.db") as store:
        episode = _episode(ExpertPolicy(), sinks=[store.episodes.sink()])
        values = estimate_step_values(episode, 0, lambda i, _b: ExpertPolicy(), rollout_policy="expert", rollouts=1)
        store.preferences.save_values(values)
        score = CrossScore(episode.id, 0, "judge-model", [TokenInfo(id=1, text=HOSTILE, logprob=-2.0)], None, "go east")
        store.cross_scores.save([score])
        other = _episode(RandomPolicy(seed=2), max_steps=3, sinks=[store.episodes.sink()])
        pair = store.preferences.add_pair(episode.id, other.id)
        store.preferences.annotate(pair.id, "ada", "left", rationale=HOSTILE)
        store.preferences.label_step(episode.id, 1, "bo", "good", note="<b>fine</b>")
        extras = report_extras(store, episode.id)
        (stored,) = store.preferences.annotations(pair.id)  # the choice as stored (the view may swap sides)
    assert [s.scorer for s in extras["cross_scores"]] == ["judge-model"] and extras["values"]
    left_is_this = pair.left.episode_id == episode.id
    this_won = (stored.choice == "left") == left_is_this
    assert extras["judgements"] == [
        {
            "step": None,
            "compared": "this episode vs episode " + other.id[:8]
            if left_is_this
            else f"episode {other.id[:8]} vs this episode",
            "annotator": "ada",
            "verdict": ("this episode" if this_won else f"episode {other.id[:8]}") + " better",
            "rationale": HOSTILE,
        }
    ]
    assert extras["labels"] == [{"step": 1, "annotator": "bo", "label": "good", "note": "<b>fine</b>"}]
    page = episode_report(episode, **extras)
    assert "Judgements of its pairs" in page and "Step labels" in page and "<b>fine" not in page
    assert "Step values (Monte Carlo)" in page and "Another model&#x27;s view" not in page
    assert "Another model's view of these outputs" in page and "judge-model" in page
    assert page.count("Plotly.newPlot") == 3 and "<script>window.__pwned" not in page


@pytest.mark.browser
def test_a_sweeps_report_opens_offline_with_its_table_and_plot(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    db = tmp_path / "s.db"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "app.py", *args, "--db", str(db)], cwd=ROOT, capture_output=True, text=True, timeout=120
        )

    ran = cli(
        "sweep", "--models", "expert,random", "--envs", "gridworld", "--seeds", "0-3", "--name", "r", "--max-steps", "8"
    )
    assert ran.returncode == 0, ran.stderr
    out = tmp_path / "sweep.html"
    written = cli("report", "--sweep", "r", "--out", str(out))
    assert written.returncode == 0 and json.loads(written.stdout)["bytes"] > 1e6
    assert (
        cli("report", "--out", str(out)).stderr.strip() == "error: Give an episode's id, or --sweep NAME, to report on."
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(offline=True).new_page()
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(out.as_uri())
            page.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=30_000)
            assert page.locator("table.as-results tbody tr").count() == 2
            assert "expert vs random on 4 shared (environment, options, seed)" in page.inner_text("body")
            assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
        finally:
            browser.close()
