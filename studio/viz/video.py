"""Episode replay videos: the frames of an episode, each step's action and thought captioned below.

MP4 (H.264, yuv420p: what browsers play) through the ffmpeg binary that ``imageio-ffmpeg`` ships,
or GIF through Pillow. Frames come from the episode's records when they were kept, else from its
snapshots (each step's environment state is restored and drawn), so every stored episode has a
video. Two episodes can be shown side by side (models A and B on the same seed); the shorter one
holds its last frame.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from studio.envs.registry import env_at
from studio.errors import StudioError
from studio.trace import Episode

#: Height every frame is scaled to, and the caption band below it.
FRAME_HEIGHT = 360
CAPTION_HEIGHT = 96
MAX_FPS = 30
FORMATS = (".mp4", ".gif")


@dataclass
class VideoSummary:
    """What :func:`episode_video` wrote."""

    path: str
    frames: int
    width: int
    height: int
    fps: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class FrameDrawer:
    """The frames of one episode's steps: the one a step kept, else redrawn from its snapshot in an
    environment made on first need (closed by :meth:`close`). The views that follow the selected step,
    videos, reports and the presentation all draw through it, so a CLI episode without ``--frames``
    shows a frame everywhere."""

    def __init__(self, episode: Episode, marked: bool = True) -> None:
        self.episode = episode
        self.marked = marked
        """Draw each step's action on its frame (screen environments); False gives the frames as kept."""
        self._env: Any = None

    def _at(self, state: Any) -> Any:
        if self._env is None:  # made once, on the first step that needs drawing
            episode = self.episode
            self._env = env_at(episode.env, episode.env_options, episode.seed, None)
        self._env.restore(state)
        return self._env

    def step(self, index: int) -> np.ndarray:
        """The frame step ``index`` acted on (one line when it has neither a frame nor a snapshot),
        with the step's action drawn on it where the environment is a screen (:mod:`studio.viz.screen`)."""
        from studio.viz.screen import mark_step

        step = self.episode.steps[index]
        if step.frame is not None:
            frame = step.frame
        elif step.state is None:
            raise StudioError(
                f"Step {step.index} of episode {self.episode.id} has neither a frame nor a snapshot to draw."
            )
        else:
            frame = self._at(step.state).render()
        return mark_step(frame, step) if self.marked else frame

    def final(self) -> np.ndarray | None:
        """The frame after the last action: its snapshot with the action taken again (environments are
        deterministic from a snapshot); None when there is no step, snapshot or action to take."""
        last = self.episode.steps[-1] if self.episode.steps else None
        if last is None or last.state is None or not last.action:
            return None
        env = self._at(last.state)
        env.step(last.action)
        return env.render()

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


class FrameCache:
    """The frames a view shows, drawn once each: the last ``keep`` (a few episodes' worth, not a growing
    store), and one :class:`FrameDrawer` for the episode drawn last."""

    def __init__(self, keep: int = 64) -> None:
        self.keep = keep
        self._frames: dict[tuple[Any, ...], np.ndarray | None] = {}
        self._drawer: FrameDrawer | None = None

    def get(self, episode: Episode, which: int | str, marked: bool = True) -> np.ndarray | None:
        """Step ``which``'s frame (an index; with its action drawn on it unless not ``marked``) or the
        ``"final"`` one; None when it cannot be drawn here."""
        key = (episode.id, episode.length, which, marked)
        if key not in self._frames:
            if self._drawer is None or self._drawer.episode is not episode:
                self.close()
                self._drawer = FrameDrawer(episode)
            self._drawer.marked = marked
            try:
                frame = self._drawer.step(which) if isinstance(which, int) else self._drawer.final()
            except StudioError:  # no frame, no snapshot, or an environment that cannot restore one here
                frame = None
            self._frames[key] = frame
            while len(self._frames) > self.keep:
                self._frames.pop(next(iter(self._frames)))
        return self._frames[key]

    def close(self) -> None:
        """Close the drawer's environment (the frames stay)."""
        if self._drawer is not None:
            self._drawer.close()
            self._drawer = None


def episode_frames(episode: Episode) -> list[np.ndarray]:
    """One frame per step (the observation it acted on), then the final one (after the last action).

    A step without a kept frame is drawn from its snapshot; the final frame from the last snapshot
    with the last action taken again (environments are deterministic from a snapshot)."""
    drawer = FrameDrawer(episode)
    try:
        frames = [drawer.step(index) for index in range(episode.length)]
        final = drawer.final()
        return frames + ([final] if final is not None else [])
    finally:
        drawer.close()


def attention_frames(episode: Episode, frames: list[np.ndarray], backend: Any) -> list[np.ndarray]:
    """``frames`` with what ``backend`` attended to when it chose each step's action laid over them
    (the mean over layers and heads of the action tokens' attention, projected onto the map's cells
    or the image's patches); steps without a model output, or whose attention has no place on the
    frame, keep their frame as it is."""
    from studio.analysis.attention import policy_written
    from studio.viz.attention import projection_image

    if not backend.capabilities.attention:
        raise StudioError(f"Model {backend.card.id} cannot show its attention: {backend.no_attention_reason}.")
    out = list(frames)
    env = None
    # The model is shown the frame as it saw it, never one with the step's action drawn on it.
    seen = FrameDrawer(episode, marked=False)
    for step in episode.steps:
        if not step.prompt or not step.raw or step.index >= len(frames):
            continue
        images = [seen.step(step.index)] if backend.capabilities.images else None
        amap = backend.attention(
            step.prompt,
            step.raw,
            images=images,
            instruction=episode.instruction,
            observation=step.observation,
            written=policy_written(step.raw, step.tokens),
        )
        try:
            values = amap.aggregate("mean", span="action")
        except StudioError:
            continue  # an output without an action: nothing to show for it
        if env is None:
            env = env_at(episode.env, episode.env_options, episode.seed, None)
        overlay = projection_image(amap, values, env, step.observation, frames[step.index])
        if overlay is not None:
            out[step.index] = overlay
    if env is not None:
        env.close()
    seen.close()
    return out


def _ascii(text: str) -> str:
    """OpenCV draws ASCII only: anything else becomes '?' (model text may hold anything)."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text.replace("\n", " "))


def _scaled(frame: np.ndarray, height: int = FRAME_HEIGHT) -> np.ndarray:
    frame = np.ascontiguousarray(frame[..., :3], dtype=np.uint8)
    width = max(2, round(frame.shape[1] * height / frame.shape[0]))
    return cv2.resize(
        frame, (width, height), interpolation=cv2.INTER_NEAREST if frame.shape[0] < height else cv2.INTER_AREA
    )


def captioned(frame: np.ndarray, title: str, body: str) -> np.ndarray:
    """``frame`` scaled to :data:`FRAME_HEIGHT`, above a white band with ``title`` and up to three lines of ``body``."""
    image = _scaled(frame)
    band = np.full((CAPTION_HEIGHT, image.shape[1], 3), 255, dtype=np.uint8)
    characters = max(12, image.shape[1] // 9)
    cv2.putText(band, _ascii(title)[:characters], (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (30, 64, 175), 1, cv2.LINE_AA)
    for row, line in enumerate(textwrap.wrap(_ascii(body), characters)[:3]):
        cv2.putText(band, line, (8, 46 + 18 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (40, 40, 40), 1, cv2.LINE_AA)
    return np.vstack([image, band])


def _captions(episode: Episode, label: str) -> list[tuple[str, str]]:
    """(title, body) per frame: each step's action and thought, then the outcome."""
    captions = []
    for step in episode.steps:
        action = step.action if step.valid else f"{step.action or '(no action)'} (invalid)"
        captions.append((f"{label}step {step.index}: {action}", f"Thought: {step.thought}" if step.thought else ""))
    outcome = "success" if episode.success else (episode.end_reason or "not finished")
    captions.append((f"{label}end: {outcome}, return {episode.total_return:g}", ""))
    return captions


def _pad(image: np.ndarray, width: int, height: int) -> np.ndarray:
    padded = np.full((height, width, 3), 255, dtype=np.uint8)
    padded[: image.shape[0], : image.shape[1]] = image
    return padded


def composed_frames(episode: Episode, compare: Episode | None = None, attention: Any = None) -> list[np.ndarray]:
    """The video's frames: captioned, side by side with ``compare``'s when given, padded to one size
    whose sides are multiples of 16 (what H.264 encoders want); with ``attention`` (a backend), each
    model step shows where that model looked (:func:`attention_frames`)."""
    sides = [episode] if compare is None else [episode, compare]
    labels = [""] if compare is None else ["A ", "B "]
    columns = []
    for side, label in zip(sides, labels):
        frames = episode_frames(side)
        if not frames:
            raise StudioError(f"Episode {side.id} has no steps: there is nothing to show.")
        if attention is not None:
            frames = attention_frames(side, frames, attention)
        columns.append([captioned(f, *c) for f, c in zip(frames, _captions(side, label))])
    length = max(len(column) for column in columns)
    rows = []
    for index in range(length):
        parts = [column[min(index, len(column) - 1)] for column in columns]
        height = max(p.shape[0] for p in parts)
        rows.append(np.hstack([_pad(p, p.shape[1], height) for p in parts]))
    width = -(-max(r.shape[1] for r in rows) // 16) * 16
    height = -(-max(r.shape[0] for r in rows) // 16) * 16
    return [_pad(r, width, height) for r in rows]


def write_video(frames: list[np.ndarray], out: Path, fps: float) -> None:
    """MP4 (H.264) or GIF by ``out``'s suffix."""
    if out.suffix.lower() == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        images[0].save(out, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
        return
    try:
        import imageio_ffmpeg
    except ImportError:
        raise StudioError("MP4 videos need imageio-ffmpeg (pip install imageio-ffmpeg), or write a .gif.") from None
    height, width = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(
        str(out),
        (width, height),
        fps=fps,
        codec="libx264",
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        macro_block_size=16,
        output_params=["-movflags", "+faststart"],  # playable while it downloads
    )
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame).tobytes())
    writer.close()


def episode_video(
    episode: Episode, out: str | Path, fps: float = 2.0, compare: Episode | None = None, attention: Any = None
) -> VideoSummary:
    """Write ``episode``'s replay (beside ``compare``'s, if given) to ``out`` (.mp4 or .gif); with
    ``attention`` (a backend that reports attention), each step's frame shows where it looked."""
    path = Path(out).expanduser()
    if path.suffix.lower() not in FORMATS:
        raise StudioError(f"A video is written as .mp4 or .gif, not {path.suffix or 'a file without a suffix'}.")
    if not (isinstance(fps, (int, float)) and 0.1 <= fps <= MAX_FPS):
        raise StudioError(f"--fps must be from 0.1 to {MAX_FPS}, got {fps}.")
    if path.is_dir():
        raise StudioError(f"{path} is a folder; give a file name such as {path / 'episode.mp4'}.")
    frames = composed_frames(episode, compare, attention)
    temporary = path.with_name(path.stem + ".partial" + path.suffix)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(frames, temporary, fps)
        temporary.replace(path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise StudioError(f"Cannot write {path}: {exc.strerror or exc}.") from None
    height, width = frames[0].shape[:2]
    return VideoSummary(str(path), len(frames), width, height, float(fps))
