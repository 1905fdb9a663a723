"""The studio's own per-step overhead, measured through the running app on the default model.

Starts ``app.py serve`` (default model in slot A, gridworld seed 0) on a free port and takes
20 steps two ways, each timed from the request to the result minus the model's own time
(the policy's ``policy_s``, recorded on the step):

- click: Chromium (Playwright) presses Step and waits until the new step card is rendered
  (trace, frame, plots and store write included) -> ``ui_overhead_ms_median`` (target <= 150);
  and from the press until the step's first token is drawn in the live card, minus the
  model's own time to that token (the step's ``first_token_s``) -> ``first_token_ms_median``
  (target <= 150);
- API: ``gradio_client`` calls ``/step`` -> ``api_overhead_ms_median``.

Prints one JSON object.

    python bench/ui.py [--steps N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.live_server import CHROMIUM, CHROMIUM_ARGS, running_studio  # noqa: E402


FIRST_TOKEN_OR_STEP = """(count) => document.querySelector('#as-live .as-live .as-tok') !== null
    || document.querySelectorAll('#as-timeline .as-step').length === count"""


def click_overheads(url: str, steps: int) -> tuple[list[float], list[float], list[float]]:
    from playwright.sync_api import sync_playwright

    overheads, model, first_tokens = [], [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url)
        page.locator("#as-timeline .as-empty").wait_for(timeout=120_000)
        for count in range(1, steps + 1):
            started = time.perf_counter()
            page.click("#as-step")
            page.wait_for_function(FIRST_TOKEN_OR_STEP, arg=count, timeout=120_000, polling="raf")
            first_ms = (time.perf_counter() - started) * 1000
            streamed = page.locator("#as-live .as-live .as-tok").count() > 0
            page.wait_for_function(
                f"document.querySelectorAll('#as-timeline .as-step').length === {count}", timeout=120_000, polling="raf"
            )
            elapsed_ms = (time.perf_counter() - started) * 1000
            card = page.locator("#as-timeline .as-step").nth(count - 1)
            policy_ms = float(card.get_attribute("data-policy-ms"))
            overheads.append(elapsed_ms - policy_ms)
            model.append(policy_ms)
            if streamed:  # a step too quick to stream has no first token on screen to time
                first_tokens.append(first_ms - float(card.get_attribute("data-first-token-ms")))
        browser.close()
    return overheads, model, first_tokens


def api_overheads(url: str, steps: int) -> tuple[list[float], list[float]]:
    from gradio_client import Client

    client = Client(url, verbose=False)
    client.predict("gridworld", "{}", 0, "react-a", api_name="/reset")
    overheads, model = [], []
    for _ in range(steps):
        started = time.perf_counter()
        result = client.predict("", api_name="/step")
        elapsed_ms = (time.perf_counter() - started) * 1000
        policy_ms = 1000 * result["step"]["timing"]["policy_s"]
        overheads.append(elapsed_ms - policy_ms)
        model.append(policy_ms)
    return overheads, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    db = Path(tempfile.mkdtemp(prefix="agent-studio-ui-")) / "bench.db"
    with running_studio("--db", str(db), timeout=300) as url:
        clicks, click_model, first_tokens = click_overheads(url, args.steps)
        api, api_model = api_overheads(url, args.steps)
    print(
        json.dumps(
            {
                "ui_overhead_ms_median": round(statistics.median(clicks), 1),
                "ui_overhead_ms_p90": round(sorted(clicks)[int(0.9 * (len(clicks) - 1))], 1),
                "first_token_ms_median": round(statistics.median(first_tokens), 1) if first_tokens else None,
                "first_token_samples": len(first_tokens),
                "api_overhead_ms_median": round(statistics.median(api), 1),
                "model_ms_median": round(statistics.median(click_model + api_model), 1),
                "steps": args.steps,
                "target": {"ui_overhead_ms_median": "<= 150", "first_token_ms_median": "<= 150"},
            }
        )
    )


if __name__ == "__main__":
    main()
