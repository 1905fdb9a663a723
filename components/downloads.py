"""Where the files a browser downloads are written: one folder per server, cleaned up.

Reports, videos and exports are written to disk for Gradio to serve. Left in the shared temporary
folder they piled up (57 MB after twelve clicks) and were never removed. Each server has its own
folder (``<tmp>/agent-studio-downloads/<pid>-<random>``): files older than :data:`MAX_AGE_S` are
removed as new ones are made, the whole folder when the server exits, and folders that servers
which are gone (crashed, killed) left behind when the next one starts.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from studio.processes import pid_alive

#: A download stays this long (seconds): enough to click the link, not to pile up.
MAX_AGE_S = 3600.0


class DownloadFolder:
    """This server's folder of downloads."""

    def __init__(self, parent: Path | None = None, max_age_s: float = MAX_AGE_S) -> None:
        self.parent = Path(parent or Path(tempfile.gettempdir()) / "agent-studio-downloads")
        self.parent.mkdir(parents=True, exist_ok=True)
        self.max_age_s = max_age_s
        self._remove_abandoned()
        self.root = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=self.parent))
        self._lock = threading.Lock()
        atexit.register(self.close)

    def _remove_abandoned(self) -> None:
        """Folders of servers that are gone (their pid is not running)."""
        for folder in self.parent.iterdir():
            pid = folder.name.split("-", 1)[0]
            if folder.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)

    def new_path(self, name: str) -> Path:
        """A path for a new download called ``name`` (in a folder of its own: names never collide);
        downloads older than the age limit are removed first."""
        self.sweep()
        with self._lock:
            folder = Path(tempfile.mkdtemp(dir=self.root))
        return folder / Path(name).name

    def sweep(self, now: float | None = None) -> int:
        """Remove the downloads older than the age limit; how many were removed."""
        now = time.time() if now is None else now
        removed = 0
        if not self.root.exists():
            return 0
        for folder in self.root.iterdir():
            try:
                if now - folder.stat().st_mtime > self.max_age_s:
                    shutil.rmtree(folder, ignore_errors=True) if folder.is_dir() else folder.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def close(self) -> None:
        """Remove this server's folder (at exit)."""
        shutil.rmtree(self.root, ignore_errors=True)
