"""LeRobot datasets (the v3.0 layout: ``meta/info.json``, parquet data and episode tables, mp4 videos),
read with pyarrow and PyAV: one episode per recorded episode, one step per frame."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from studio.errors import StudioError
from studio.frames import png_to_frame
from studio.importers.transcript import file_time, source_record, stamped
from studio.trace import Episode, Step

STATE, ACTION = "observation.state", "action"


def vector_text(values: list[float] | None) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]" if values is not None else ""


def read_info(root: Path) -> dict[str, Any]:
    file = root / "meta" / "info.json"
    if not file.is_file():
        raise StudioError(f"{root.name} is not a LeRobot dataset: it has no meta/info.json.")
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StudioError(f"{root.name}/meta/info.json is not JSON: {str(exc)[:120]}.") from None
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise StudioError(
            f"{root.name} is a LeRobot {version or 'unknown-version'} dataset; this reader takes v3.0 "
            "(convert older ones with lerobot's convert_dataset_v21_to_v30)."
        )
    return info


def inside(root: Path, relative: str) -> Path:
    """A path the dataset's metadata names, kept inside the dataset (``../`` in a template is refused)."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise StudioError(f"The dataset names a file outside itself ({relative[:80]!r}); not read.")
    return path


class DataFiles:
    """The data file the episodes being read are in, read once (a v3 file holds many episodes in order:
    reading it again for each would read a 100 MB file a thousand times); only the latest one is kept."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.table: Any = None

    def rows(self, path: Path, episode: int) -> list[dict[str, Any]]:
        """The rows of ``episode`` in the data file at ``path``."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        if path != self.path:
            self.path, self.table = path, pq.read_table(path)
        return self.table.filter(pc.equal(self.table["episode_index"], episode)).to_pylist()


class VideoFrames:
    """Frames of one camera's video file, decoded in order and kept only for the episode being read."""

    def __init__(self, file: Path) -> None:
        import av

        self.container = av.open(str(file))
        self.stream = self.container.streams.video[0]

    def between(self, start: float, end: float, count: int, fps: float) -> list[np.ndarray | None]:
        """``count`` frames from ``start`` seconds (one per 1/fps), by presentation time."""
        wanted = [start + n / fps for n in range(count)]
        frames: list[np.ndarray | None] = [None] * count
        self.container.seek(max(0, int((start - 1.0) / self.stream.time_base)), stream=self.stream, backward=True)
        for frame in self.container.decode(self.stream):
            if frame.pts is None:
                continue
            time = float(frame.pts * self.stream.time_base)
            slot = round((time - start) * fps)
            if 0 <= slot < count and abs(time - wanted[slot]) < 0.5 / fps:
                frames[slot] = frame.to_ndarray(format="rgb24")
            if time >= end + 1.0 / fps:
                break
        return frames

    def close(self) -> None:
        self.container.close()


class LeRobotImporter:
    """LeRobot v3 datasets: camera frames, observation.state and action vectors per step, the task as instruction."""

    name = "lerobot"

    def read(self, path: Path) -> Iterator[Episode]:
        try:
            yield from self._read(path)
        except StudioError:
            raise
        except (KeyError, IndexError, ValueError, TypeError, OSError) as exc:  # a file that is not what info.json says
            raise StudioError(
                f"{path.name} is not a readable LeRobot v3 dataset: {type(exc).__name__} {str(exc)[:160]}"
            ) from None
        except Exception as exc:  # pyarrow's and PyAV's own errors (a damaged parquet or video file)
            if type(exc).__module__.split(".")[0] not in ("pyarrow", "av"):
                raise
            raise StudioError(f"{path.name}: a data or video file could not be read ({str(exc)[:160]}).") from None

    def _read(self, path: Path) -> Iterator[Episode]:
        import pyarrow.parquet as pq

        info = read_info(path)
        fps = float(info.get("fps") or 0) or 30.0
        features = info.get("features") or {}
        cameras = [k for k, f in features.items() if isinstance(f, dict) and f.get("dtype") in ("video", "image")]
        tasks = self._tasks(path)
        episode_files = sorted((path / "meta" / "episodes").rglob("*.parquet"))
        if not episode_files:
            raise StudioError(f"{path.name} has no meta/episodes/*.parquet: not a v3 dataset.")
        data = DataFiles()
        for file in episode_files:
            columns = [c for c in pq.read_schema(file).names if not c.startswith("stats/")]
            for row in pq.read_table(file, columns=columns).to_pylist():
                yield self._episode(path, info, row, fps, cameras, tasks, data)

    @staticmethod
    def _tasks(root: Path) -> dict[int, str]:
        import pyarrow.parquet as pq

        file = root / "meta" / "tasks.parquet"
        if not file.is_file():
            return {}
        table = pq.read_table(file).to_pylist()
        named = {}
        for row in table:
            text = row.get("task") or row.get("__index_level_0__")
            if isinstance(row.get("task_index"), int) and isinstance(text, str):
                named[row["task_index"]] = text
        return named

    def _episode(
        self,
        root: Path,
        info: dict[str, Any],
        row: dict[str, Any],
        fps: float,
        cameras: list[str],
        tasks: dict[int, str],
        data: DataFiles,
    ) -> Episode:
        number = int(row["episode_index"])
        data_file = inside(
            root,
            info["data_path"].format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]),
        )
        table = data.rows(data_file, number)
        table.sort(key=lambda r: r.get("frame_index", 0))
        if cameras and info["features"][cameras[0]].get("dtype") == "image":  # PNG bytes in the rows
            frames = [image_of(r.get(cameras[0])) for r in table]
        elif cameras:
            frames = self._frames(root, info, row, cameras[0], len(table), fps)
        else:
            frames = [None] * len(table)
        digest = hashlib.sha256(json.dumps(table, default=str, sort_keys=True).encode("utf-8")).hexdigest()
        steps = []
        for position, (record, frame) in enumerate(zip(table, frames)):
            state, action = record.get(STATE), record.get(ACTION)
            after = table[position + 1].get(STATE) if position + 1 < len(table) else None
            steps.append(
                Step(
                    index=position,
                    observation=f"state {vector_text(state)}" if state is not None else "",
                    action=vector_text(action) if action is not None else None,
                    frame=frame,
                    actor="imported",
                    raw=vector_text(action) if action is not None else "",
                    terminated=position == len(table) - 1,
                    next_observation=f"state {vector_text(after)}" if after is not None else "",
                    info={"timestamp": record.get("timestamp"), "frame_index": record.get("frame_index")},
                    extra={"state": state, "action_vector": action},
                )
            )
        task_names = row.get("tasks") or [tasks.get(table[0].get("task_index"), "")] if table else []
        episode = Episode(
            env=f"lerobot:{root.name[:180]}",
            seed=None,
            env_options={
                "fps": fps,
                "camera": cameras[0] if cameras else None,
                "state_names": (info["features"].get(STATE) or {}).get("names"),
                "action_names": (info["features"].get(ACTION) or {}).get("names"),
            },
            instruction="; ".join(t for t in task_names if isinstance(t, str)),
            policy="recorded",
            steps=steps,
            end_reason="imported",
            id=digest[:32],
            source=source_record(
                self.name, root, digest, f"episode {number}", prompt="none", robot=info.get("robot_type")
            ),
        )
        return stamped(episode, file_time(root / "meta" / "info.json"))

    @staticmethod
    def _frames(
        root: Path, info: dict[str, Any], row: dict[str, Any], camera: str, count: int, fps: float
    ) -> list[Any]:
        prefix = f"videos/{camera}/"
        file = inside(
            root,
            info["video_path"].format(
                video_key=camera, chunk_index=row[f"{prefix}chunk_index"], file_index=row[f"{prefix}file_index"]
            ),
        )
        video = VideoFrames(file)
        try:
            return video.between(float(row[f"{prefix}from_timestamp"]), float(row[f"{prefix}to_timestamp"]), count, fps)
        finally:
            video.close()


def image_of(cell: Any) -> np.ndarray | None:
    """An image feature's cell (``{"bytes": PNG}``) as a frame."""
    if isinstance(cell, dict) and isinstance(cell.get("bytes"), bytes):
        return png_to_frame(cell["bytes"])
    return None


IMPORTER = LeRobotImporter()
