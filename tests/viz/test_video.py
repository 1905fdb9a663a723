"""Episode replay videos: MP4 (H.264) and GIF, frames from records or snapshots, side by side, captions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from agent_studio.storage import open_store
from studio.agents.scripted import ExpertPolicy, RandomPolicy
from studio.errors import StudioError
from studio.episodes.runner import EpisodeRunner, RunnerConfig
from studio.viz.video import CAPTION_HEIGHT, FRAME_HEIGHT, composed_frames, episode_frames, episode_video

ROOT = Path(__file__).resolve().parents[2]


def _episode(policy, frames: bool = False, max_steps: int | None = None, sinks=()):
    runner = EpisodeRunner(
        "gridworld", policy, sinks=list(sinks), config=RunnerConfig(max_steps=max_steps, record_frames=frames)
    )
    runner.reset(seed=0)
    return runner.run()


def _decode(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def test_an_mp4_decodes_to_a_frame_per_step_and_the_end(tmp_path: Path) -> None:
    episode = _episode(ExpertPolicy())
    summary = episode_video(episode, tmp_path / "expert.mp4")
    decoded = _decode(tmp_path / "expert.mp4")
    assert len(decoded) == summary.frames == episode.length + 1
    assert decoded[0].shape == (summary.height, summary.width, 3)
    assert summary.height % 16 == 0 and summary.width % 16 == 0 and summary.height >= FRAME_HEIGHT + CAPTION_HEIGHT
    probe = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(tmp_path / "expert.mp4")], capture_output=True, text=True
    )
    assert "Video: h264" in probe.stderr and "yuv420p" in probe.stderr  # what browsers play


def test_frames_from_snapshots_equal_the_recorded_frames() -> None:
    recorded = _episode(ExpertPolicy(), frames=True)
    redrawn = recorded.__class__.from_dict(recorded.to_dict())
    for step in redrawn.steps:
        step.frame = None  # as an episode stored without --frames
    drawn = episode_frames(redrawn)
    assert len(drawn) == recorded.length + 1
    assert all(np.array_equal(a, s.frame) for a, s in zip(drawn, recorded.steps))


def test_two_episodes_side_by_side_hold_the_shorter_ones_last_frame(tmp_path: Path) -> None:
    expert = _episode(ExpertPolicy())
    walker = _episode(RandomPolicy(seed=1), max_steps=3)
    frames = composed_frames(expert, walker)
    alone = composed_frames(expert)
    assert len(frames) == expert.length + 1 and frames[0].shape[1] > alone[0].shape[1]
    right = frames[0].shape[1] // 2
    assert np.array_equal(frames[-1][:, right:], frames[walker.length][:, right:])  # B ended: its last frame stays
    summary = episode_video(expert, tmp_path / "both.gif", compare=walker, fps=4)
    with Image.open(tmp_path / "both.gif") as gif:
        assert gif.n_frames == summary.frames and gif.size == (summary.width, summary.height)
        assert gif.info["duration"] == 250


def test_captions_take_any_model_text(tmp_path: Path) -> None:
    episode = _episode(ExpertPolicy())
    episode.steps[0].thought = "Ünïcode ✓ <script>alert(1)</script>\nand a newline " * 20
    summary = episode_video(episode, tmp_path / "odd.mp4")
    assert summary.frames == episode.length + 1


@pytest.mark.parametrize(
    ("out", "fps", "message"),
    [("x.avi", 2.0, "as .mp4 or .gif"), ("x.mp4", 0.0, "--fps must be from"), ("x.mp4", 1e9, "--fps must be from")],
)
def test_bad_requests_are_one_line_and_write_nothing(tmp_path: Path, out: str, fps: float, message: str) -> None:
    with pytest.raises(StudioError, match=message):
        episode_video(_episode(ExpertPolicy()), tmp_path / out, fps=fps)
    assert list(tmp_path.iterdir()) == []


def test_the_cli_writes_a_stored_episodes_video(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with open_store(db) as store:
        episode = _episode(ExpertPolicy(), sinks=[store.episodes.sink()])
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "app.py", *args, "--db", str(db)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    result = run("video", episode.id, "--out", str(tmp_path / "v.mp4"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["frames"] == episode.length + 1 == len(_decode(tmp_path / "v.mp4"))
    missing = run("video", "nope", "--out", str(tmp_path / "w.mp4"))
    assert missing.returncode == 2 and missing.stderr.strip() == "error: No stored episode with id 'nope'."
