"""Draw the docs' figure of a web step: a best-of-K step on a MiniWoB++ page, each candidate's click a
numbered mark and the action taken outlined in red (``assets/web-candidates.png``).

    .venv/bin/python scripts/web_figure.py [--out assets]

A scripted model proposes three clicks (K = 3 candidates, the first verifier picks the first), through
the same ReAct policy and runner the studio uses; the frame is drawn by the views' own code.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    import cv2

    from studio.envs.registry import make_env
    from studio.episodes.runner import EpisodeRunner
    from studio.models.scripted import load_scripted
    from studio.policies import policy_from_settings
    from studio.settings import EpisodeSettings
    from studio.viz.video import FrameDrawer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "assets")
    args = parser.parse_args()
    env = make_env("web:miniwob.click-checkboxes", {"wait": 0.1})
    observation, _ = env.reset(seed=5)
    boxes = [line.strip()[1:].split("]")[0] for line in observation.splitlines() if "] checkbox" in line][:3]
    outputs = [f"Thought: tick the box [{bid}].\nAction: click('{bid}')" for bid in boxes]
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "model.json"
        script.write_text(json.dumps({"outputs": outputs}))
        backend = load_scripted(str(script))
        settings = EpisodeSettings(env="web:miniwob.click-checkboxes", candidates=3, verifier="first")
        runner = EpisodeRunner(env, policy_from_settings(settings, backend))
        runner.reset(seed=5)
        runner.step()
    frame = FrameDrawer(runner.episode).step(0)
    # The task's area only (MiniWoB++ draws its task in a fixed 160-pixel column; the rest is grey).
    right = max(box[2] for box in env.elements().values() if box[2] < frame.shape[1] - 1) + 8
    frame = frame[:, : min(right, frame.shape[1])]
    big = cv2.resize(frame, (frame.shape[1] * 2, frame.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    args.out.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out / "web-candidates.png"), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    env.close()
    print(args.out / "web-candidates.png")


if __name__ == "__main__":
    main()
