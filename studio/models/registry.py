"""One copy of each loaded model per process, shared by every browser session.

The app makes one :class:`ModelRegistry` (in ``app.py``, the composition root) and hands
it to every session. Loading is serialised (two sessions asking for the same model get
the same object, loaded once) and every backend on a device shares that device's lock,
so concurrent sessions queue on the device instead of colliding.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from studio.models.access import ModelAccess, check_model_name
from studio.models.base import Backend, ProgressCallback, no_progress


@dataclass(frozen=True)
class ModelKey:
    """What makes two loads the same model."""

    path: str
    gguf_file: str | None
    device: str
    dtype: str


class ModelRegistry:
    """Loaded models by key, with one lock per device."""

    def __init__(self) -> None:
        self._models: dict[ModelKey, Backend] = {}
        self._names: dict[ModelKey, str] = {}
        self._holders: dict[ModelKey, set[str]] = {}
        self._pinned: set[ModelKey] = set()
        self._loading = threading.Lock()
        self._device_locks: dict[str, threading.Lock] = {}

    def device_lock(self, device: str) -> threading.Lock:
        """The lock every backend on ``device`` shares."""
        with self._loading:
            return self._device_locks.setdefault(device, threading.Lock())

    def load(
        self,
        name: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        progress: ProgressCallback = no_progress,
        holder: str | None = None,
        access: ModelAccess | None = None,
    ) -> Backend:
        """The loaded model ``name`` (``default``, a hub id, a local path, or ``scripted:FILE.json``),
        loading it if needed. ``holder`` (e.g. a browser session) is remembered until :meth:`release`.

        ``access`` is given for names that come from the web: the operator's rules then decide
        which paths may load and whether remote code may run (``trust_remote_code`` is ignored).
        """
        name = check_model_name(name)
        if access is not None:
            name = access.check(name)
            trust_remote_code = access.trust_remote_code
        if name.startswith("scripted:"):
            return self._load_scripted(name, holder)
        from studio.models.hf import TransformersBackend, pick_device
        from studio.models.resolve import resolve

        device_name = pick_device(device)
        resolved = resolve(name, progress=lambda f, m: progress(0.3 * f, m))
        if access is not None:
            access.check_folder(resolved.path)
        key = ModelKey(resolved.path, resolved.gguf_file, device_name, dtype)
        lock = self.device_lock(device_name)
        with self._loading:
            if key not in self._models:
                self._models[key] = TransformersBackend.load(
                    resolved.path,
                    model_id=resolved.repo or name,
                    source=resolved.source,
                    gguf_file=resolved.gguf_file,
                    device=device_name,
                    dtype=dtype,
                    trust_remote_code=trust_remote_code,
                    progress=lambda f, m: progress(0.3 + 0.7 * f, m),
                    lock=lock,
                )
                self._names[key] = name
            else:
                progress(1.0, "already loaded")
            if holder is not None:
                self._holders.setdefault(key, set()).add(holder)
            return self._models[key]

    def _load_scripted(self, name: str, holder: str | None) -> Backend:
        from studio.models.scripted import load_scripted

        key = ModelKey(name, None, "cpu", "none")
        with self._loading:
            if key not in self._models:
                self._models[key] = load_scripted(name.removeprefix("scripted:"))
                self._names[key] = name
            if holder is not None:
                self._holders.setdefault(key, set()).add(holder)
            return self._models[key]

    def add(self, name: str, backend: Backend, device: str = "cpu") -> Backend:
        """Register an already built backend (tiny test models, scripted fakes)."""
        with self._loading:
            key = ModelKey(f"memory:{name}", None, device, "auto")
            self._models[key] = backend
            self._names[key] = name
        return backend

    def loaded(self) -> list[dict[str, Any]]:
        """The model cards of what is loaded, with the name each was asked for."""
        with self._loading:
            return [{"name": self._names[key], **backend.info} for key, backend in self._models.items()]

    def release(self, backend: Backend, holder: str) -> bool:
        """``holder`` no longer uses ``backend``; free it when nobody does. Returns True if freed.

        A model loaded without a holder (the app's default model) is never freed this way.
        """
        with self._loading:
            key = next((k for k, b in self._models.items() if b is backend), None)
            if key is None or holder not in self._holders.get(key, set()):
                return False
            self._holders[key].discard(holder)
            if self._holders[key] or key in self._pinned:
                return False
            del self._models[key], self._names[key], self._holders[key]
        backend.unload()
        return True

    def pin(self, backend: Backend) -> None:
        """Keep ``backend`` loaded whoever releases it (the model the app starts with)."""
        with self._loading:
            self._pinned.update(k for k, b in self._models.items() if b is backend)

    def unload(self, backend: Backend) -> None:
        """Free ``backend`` and forget it (sessions still holding it must load again)."""
        with self._loading:
            for key, candidate in list(self._models.items()):
                if candidate is backend:
                    del self._models[key]
                    del self._names[key]
                    self._holders.pop(key, None)
                    self._pinned.discard(key)
        backend.unload()
