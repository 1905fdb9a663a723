"""AgentLab / BrowserGym experiment folders: ``step_N.pkl.gz`` files (read by :mod:`.safe_pickle`, never
unpickled as objects), screenshots, the accessibility tree as the observation."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from studio.errors import StudioError
from studio.frames import png_to_frame
from studio.importers.safe_pickle import load_plain
from studio.importers.transcript import file_time, source_record, stamped
from studio.trace import Episode, Step

STEP_FILE = re.compile(r"step_(\d+)\.pkl(\.gz)?$")
#: The most a step file may hold once decompressed (a compressed bomb is refused: 512 MiB).
MAX_STEP_BYTES = 512 << 20
#: The observation keys tried for the page's text, best first.
TEXT_KEYS = ("axtree_txt", "pruned_html", "dom_txt")


def experiment_folders(path: Path) -> list[Path]:
    """``path`` itself when it holds step files, else each folder under it that does (a study)."""
    if any(STEP_FILE.match(p.name) for p in path.iterdir()):
        return [path]
    found = sorted({p.parent for p in path.rglob("step_*.pkl*") if STEP_FILE.match(p.name)})
    if not found:
        raise StudioError(f"{path.name} holds no AgentLab step files (step_N.pkl.gz).")
    return found


def read_step_file(file: Path, digest: Any) -> dict[str, Any]:
    """One step file as plain data (one line, naming the file, when refused); its bytes (decompressed)
    are added to ``digest`` (the episode's id and provenance) as they are read, not read again."""
    opener = gzip.open if file.suffix == ".gz" else open
    try:
        with opener(file, "rb") as handle:
            data = handle.read(MAX_STEP_BYTES + 1)
    except OSError as exc:
        raise StudioError(f"{file.name}: not readable ({str(exc)[:120]}).") from None
    if len(data) > MAX_STEP_BYTES:
        raise StudioError(f"{file.name}: over {MAX_STEP_BYTES >> 20} MiB once decompressed; not read.")
    digest.update(data)
    try:
        record = load_plain(data)
    except StudioError as exc:
        raise StudioError(f"{file.name}: {exc}; nothing was stored.") from None
    if not isinstance(record, dict):
        raise StudioError(f"{file.name}: holds {type(record).__name__}, not a step record.")
    return record


def page_text(obs: dict[str, Any]) -> str:
    for key in TEXT_KEYS:
        if isinstance(obs.get(key), str) and obs[key]:
            return obs[key]
    return ""


def screenshot(folder: Path, number: int, obs: dict[str, Any]) -> np.ndarray | None:
    """The step's screenshot: in the observation, else AgentLab's ``screenshot_step_N.png`` beside it."""
    shot = obs.get("screenshot")
    if isinstance(shot, np.ndarray) and shot.ndim == 3 and shot.shape[2] in (3, 4) and shot.dtype == np.uint8:
        return np.ascontiguousarray(shot[..., :3])
    file = folder / f"screenshot_step_{number}.png"
    if file.is_file():
        return png_to_frame(file.read_bytes())
    return None


def goal_text(obs: dict[str, Any]) -> str:
    if isinstance(obs.get("goal"), str):
        return obs["goal"]
    parts = obs.get("goal_object") or []
    return "\n".join(p.get("text", "") for p in parts if isinstance(p, dict))


def think_of(record: dict[str, Any]) -> str | None:
    info = record.get("agent_info") or {}
    think = info.get("think") if isinstance(info, dict) else None
    return think if isinstance(think, str) and think else None


class AgentLabImporter:
    """AgentLab/BrowserGym experiment folders: steps, actions, screenshots, AXTree (pickles read as plain data only)."""

    name = "agentlab"

    def read(self, path: Path) -> Iterator[Episode]:
        if not path.is_dir():
            raise StudioError(f"{path.name} is not a folder: an AgentLab experiment is a folder of step files.")
        for folder in experiment_folders(path):
            yield self._episode(folder)

    def _episode(self, folder: Path) -> Episode:
        files = sorted((int(STEP_FILE.match(p.name).group(1)), p) for p in folder.iterdir() if STEP_FILE.match(p.name))
        digest = hashlib.sha256()
        records = [read_step_file(file, digest) for _, file in files]  # every file checked before anything is built
        summary = self._summary(folder)
        steps: list[Step] = []
        for position, ((number, _), record) in enumerate(zip(files, records)):
            action = record.get("action")
            if not isinstance(action, str) or not action:
                continue  # the last file: the final observation, no action taken from it
            after = records[position + 1] if position + 1 < len(records) else {}
            obs = record.get("obs") or {}
            next_obs = after.get("obs") or {}
            error = next_obs.get("last_action_error") if isinstance(next_obs, dict) else None
            steps.append(
                Step(
                    index=len(steps),
                    observation=page_text(obs)[:200_000],
                    action=action[:10_000],
                    frame=screenshot(folder, number, obs),
                    actor="imported",
                    raw=action[:10_000] if not think_of(record) else f"{think_of(record)}\n{action}"[:20_000],
                    thought=think_of(record),
                    valid=not error,
                    invalid_reason=str(error)[:1000] if error else None,
                    reward=float(after.get("reward") or 0.0),
                    terminated=bool(after.get("terminated")),
                    truncated=bool(after.get("truncated")),
                    next_observation=page_text(next_obs)[:200_000] if isinstance(next_obs, dict) else "",
                    info={"url": str(obs.get("url", ""))[:2000]} if obs.get("url") else {},
                )
            )
        if not steps:
            raise StudioError(f"{folder.name}: no step with an action to import.")
        first = records[0].get("obs") or {}
        reward = summary.get("cum_reward")
        episode = Episode(
            env=f"imported:{str(summary.get('task_name') or folder.name)[:180]}",
            seed=None,
            instruction=goal_text(first)[:20_000],
            policy="imported",
            steps=steps,
            success=(reward > 0) if isinstance(reward, (int, float)) else None,
            end_reason="imported",
            id=digest.hexdigest()[:32],
            source=source_record(self.name, folder, digest.hexdigest(), folder.name, prompt="none"),
        )
        return stamped(episode, file_time(files[0][1]))

    @staticmethod
    def _summary(folder: Path) -> dict[str, Any]:
        file = folder / "summary_info.json"
        try:
            data = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}


IMPORTER = AgentLabImporter()
