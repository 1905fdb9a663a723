"""Attention extraction on the default model: ours (rows of interest, layer by layer) against a
plain eager ``output_attentions=True`` pass that keeps every layer's full T×T maps.

Each measurement runs in its own process (so memory high-water marks do not mix): the model
is loaded, a short warm-up pass runs, then the pass is timed while a thread samples the
process's resident memory every 2 ms; "peak extra" is the peak minus the resident size
before the pass. Prompts are random token ids; the captured rows are the last 16 positions
(an action's worth of tokens).

Prints one JSON object with, per prompt length, seconds and peak extra MB of both (512,
1024, 2048) and of ours alone (4096, 8192), and ``memory_ratio_at_2048`` (plain / ours;
target >= 5), ``time_ratio_at_2048`` (ours / plain; target <= 1.5), ``peak_mb_at_8192``
(ours; must fit a 24 GB machine).

    python bench/attention.py [--lengths 512,1024,2048] [--ours-only 4096,8192]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROWS = 16


def resident_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(method: str, length: int) -> dict:
    """Run in a child process: one pass of ``method`` over ``length`` tokens."""
    sys.path.insert(0, str(ROOT))
    import torch

    from studio.analysis.attention import capture_rows
    from studio.models.registry import ModelRegistry

    torch.manual_seed(0)
    model = ModelRegistry().load("default", device="cpu").model
    ids = torch.randint(100, model.config.vocab_size - 100, (1, length))
    rows = list(range(length - ROWS, length))

    def plain(input_ids: torch.Tensor) -> object:
        previous = model.config._attn_implementation
        model.set_attn_implementation("eager")
        try:
            with torch.no_grad():
                return model(input_ids=input_ids, use_cache=False, output_attentions=True).attentions
        finally:
            model.set_attn_implementation(previous)

    def ours(input_ids: torch.Tensor) -> object:
        return capture_rows(model, {"input_ids": input_ids}, [r % input_ids.shape[1] for r in rows])

    run = plain if method == "plain" else ours
    run(ids[:, :64])  # warm-up: kernels, allocator pools
    baseline, peak, running = resident_mb(), [0.0], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], resident_mb())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    kept = run(ids)
    seconds = time.perf_counter() - started
    running[0] = False
    sampler.join()
    peak[0] = max(peak[0], resident_mb())
    del kept
    return {
        "method": method,
        "length": length,
        "seconds": round(seconds, 2),
        "peak_extra_mb": round(peak[0] - baseline, 1),
    }


def child(method: str, length: int) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", method, str(length)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if result.returncode != 0:
        return {
            "method": method,
            "length": length,
            "error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}",
        }
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="512,1024,2048")
    parser.add_argument("--ours-only", default="4096,8192")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]))))
        return
    report: dict = {
        "model": "SmolLM2-135M-Instruct (30 layers, 9 heads), fp32, CPU",
        "rows": ROWS,
        "side_by_side": {},
        "ours_only": {},
    }
    for length in (int(x) for x in args.lengths.split(",") if x):
        report["side_by_side"][length] = {"plain": child("plain", length), "ours": child("ours", length)}
    for length in (int(x) for x in args.ours_only.split(",") if x):
        report["ours_only"][length] = child("ours", length)
    at_2048 = report["side_by_side"].get(2048)
    if at_2048 and "error" not in at_2048["plain"] and "error" not in at_2048["ours"]:
        report["memory_ratio_at_2048"] = round(
            at_2048["plain"]["peak_extra_mb"] / max(at_2048["ours"]["peak_extra_mb"], 1e-6), 2
        )
        report["time_ratio_at_2048"] = round(at_2048["ours"]["seconds"] / at_2048["plain"]["seconds"], 2)
    at_8192 = report["ours_only"].get(8192)
    if at_8192 and "error" not in at_8192:
        report["peak_mb_at_8192"] = at_8192["peak_extra_mb"]
        report["seconds_at_8192"] = at_8192["seconds"]
    report["targets"] = {
        "memory_ratio_at_2048": ">= 5",
        "time_ratio_at_2048": "<= 1.5",
        "peak_mb_at_8192": "fits 24 GB",
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
