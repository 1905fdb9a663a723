"""Backends by name scheme, and one copy of each loaded model per process, shared by every browser session.

A model name picks its backend by scheme: ``scripted:FILE.json`` the scripted backend, a name
with no registered scheme (``default``, ``org/model``, a folder) the transformers backend.
:func:`register_backend` adds a scheme (a new backend is one file that calls it, or an entry
point in the ``agent_studio.backends`` group of an installed package).

The app makes one :class:`ModelRegistry` (in ``app.py``, the composition root) and hands
it to every session. Loading is serialised (two sessions asking for the same model get
the same object, loaded once) and every backend on a device shares that device's lock,
so concurrent sessions queue on the device instead of colliding.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from studio.errors import StudioError
from studio.models.access import ModelAccess, check_model_name
from studio.models.base import Backend, ProgressCallback, no_progress
from studio.plugins import first_doc_line, load_entry_points


@dataclass(frozen=True)
class LoadRequest:
    """What a loader gets: the name asked for and how to load it."""

    name: str
    """The whole name (``scripted:demo.json``)."""
    target: str
    """The name without its scheme (``demo.json``); the whole name for the default scheme."""
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    progress: ProgressCallback = no_progress
    access: ModelAccess | None = None
    """The operator's rules when the name came from the web (None: the command line)."""
    device_lock: Callable[[str], threading.Lock] | None = None
    """The lock every backend on a device shares (local backends take theirs from here)."""


@dataclass(frozen=True)
class Prepared:
    """A load about to happen: the key that makes two loads the same model, and the load itself."""

    key: Hashable
    load: Callable[[], Backend]


@dataclass(frozen=True)
class BackendScheme:
    """A name scheme (``scripted:``) and how to load its names."""

    scheme: str
    """The prefix without its colon; ``""`` for the default scheme (hub ids, folders, ``default``)."""
    prepare: Callable[[LoadRequest], Prepared]
    summary: str
    example: str
    web_check: Callable[[LoadRequest], None] | None = None
    """Checks a name sent by a web client (raises a one-line StudioError); None: this scheme
    is for the operator's command line only."""
    web_note: str = ""
    """What the browser may load of this scheme, in words (empty: all of it, or nothing)."""

    def describe(self) -> dict[str, Any]:
        web = self.web_check is not None
        return {
            "scheme": f"{self.scheme}:" if self.scheme else "(none)",
            "summary": self.summary,
            "example": self.example,
            "web": web,
            "from_the_browser": self.web_note or ("yes" if web else "no: command line only"),
        }


#: Name schemes, filled at import (the built-ins below) and by :func:`register_backend`; the
#: process's list of backend kinds, never per session.
SCHEMES: dict[str, BackendScheme] = {}
#: Entry point group other packages register backends under (``name = "pkg.module:load"``;
#: the entry point's name is the scheme).
ENTRY_POINT_GROUP = "agent_studio.backends"
_plugins = threading.Lock()
_plugins_loaded: list[bool] = []


def register_backend(
    scheme: str,
    load: Callable[[LoadRequest], Backend] | None = None,
    *,
    prepare: Callable[[LoadRequest], Prepared] | None = None,
    summary: str = "",
    example: str = "",
    web: bool | Callable[[LoadRequest], None] = False,
    web_note: str = "",
    replace: bool = False,
) -> BackendScheme:
    """Make names ``scheme:...`` load with ``load(request) -> Backend``.

    Two requests for the same target, device and dtype share one loaded backend; give
    ``prepare`` instead of ``load`` to choose that key yourself. ``web``: whether a browser or
    API client may load names of this scheme (True), a check to run on them, or not at all
    (False, the default: only the operator's command line).
    """
    scheme = scheme.removesuffix(":")
    if scheme and not scheme.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"Not a usable scheme: {scheme!r} (letters, digits, - and _).")
    if (load is None) == (prepare is None):
        raise ValueError("Give either load or prepare.")
    if prepare is None:
        assert load is not None
        loader = load

        def prepare(request: LoadRequest) -> Prepared:
            return Prepared(key=(scheme, request.target, request.device, request.dtype), load=lambda: loader(request))

    web_check = (lambda request: None) if web is True else (web or None)
    entry = BackendScheme(
        scheme, prepare, summary or f"{scheme}: backend", example or f"{scheme}:NAME", web_check, web_note
    )
    if scheme in SCHEMES and not replace:
        raise ValueError(f"A backend scheme {scheme!r} is already registered (pass replace=True to replace it).")
    SCHEMES[scheme] = entry
    return entry


def backend_scheme(name: str) -> BackendScheme:
    """The scheme that loads ``name``: the registered prefix before its first colon, else the default."""
    _load_plugins()
    prefix, sep, _rest = name.partition(":")
    if sep and prefix in SCHEMES and prefix:
        return SCHEMES[prefix]
    return SCHEMES[""]


def describe_schemes() -> list[dict[str, Any]]:
    """Every name scheme (for ``agent-studio models`` and the Models tab)."""
    _load_plugins()
    return [entry.describe() for entry in SCHEMES.values()]


def _load_plugins() -> None:
    with _plugins:
        if _plugins_loaded:
            return
        _plugins_loaded.append(True)
        load_entry_points(ENTRY_POINT_GROUP, _register_plugin)


def _register_plugin(point: Any, target: Any) -> None:
    """An entry point names a loader (``scheme = "pkg.module:load"``) or a whole :class:`BackendScheme`."""
    if isinstance(target, BackendScheme):
        SCHEMES.setdefault(target.scheme, target)
    elif point.name not in SCHEMES:
        register_backend(point.name, target, summary=first_doc_line(target), web=True)


# -- the built-in schemes ------------------------------------------------------------------------
def _prepare_transformers(request: LoadRequest) -> Prepared:
    """``default``, a hub id, a local folder or ``.gguf`` file: the transformers backend."""
    from studio.models.hf import TransformersBackend, pick_device
    from studio.models.resolve import resolve

    from studio.training.registry import trained_adapter

    device = pick_device(request.device)
    base, adapter = trained_adapter(request.target)  # BASE+lora:NAME: the base, and the trained adapter's folder
    resolved = resolve(base, progress=lambda f, m: request.progress(0.3 * f, m))
    if request.access is not None:
        request.access.check_folder(resolved.path)
    lock = request.device_lock(device) if request.device_lock is not None else None

    def load() -> Backend:
        return TransformersBackend.load(
            resolved.path,
            model_id=request.name if adapter else resolved.repo or request.name,
            source="trained" if adapter else resolved.source,
            gguf_file=resolved.gguf_file,
            device=device,
            dtype=request.dtype,
            trust_remote_code=request.trust_remote_code,
            progress=lambda f, m: request.progress(0.3 + 0.7 * f, m),
            lock=lock,
            adapter=adapter,
        )

    key = ("transformers", resolved.path, resolved.gguf_file, device, request.dtype, adapter)
    return Prepared(key=key, load=load)


def _web_access_rules(request: LoadRequest) -> None:
    """The operator's ModelAccess decides (folders and files only under --models-dir)."""
    assert request.access is not None
    request.access.check(request.name)


def _load_scripted(request: LoadRequest) -> Backend:
    from studio.models.scripted import load_scripted

    return load_scripted(request.target)


register_backend(
    "",
    prepare=_prepare_transformers,
    summary="default (the embedded SmolLM2-135M-Instruct), a Hugging Face hub id, a local model folder or .gguf file, "
    "or any of these with a trained adapter (BASE+lora:NAME): transformers, in this process",
    example="default, ORG/NAME, a folder, or default+lora:NAME",
    web=_web_access_rules,
    web_note="default and hub ids; folders only under serve --models-dir",
)
register_backend(
    "scripted",
    prepare=lambda request: Prepared(key=("scripted", request.target), load=lambda: _load_scripted(request)),
    summary="replays the outputs in a JSON file (demos and tests without a model)",
    example="scripted:FILE.json",
    web=_web_access_rules,
    web_note="files under serve --models-dir only",
)


def _prepare_server(request: LoadRequest) -> Prepared:
    """``http(s)://HOST:PORT/v1[#MODEL]``: a model served by vLLM or SGLang (no device lock: the engine batches)."""
    from studio.models.remote import OpenAIBackend, parse_server_url
    from studio.models.replicas import is_replica_list, replica_urls

    if is_replica_list(request.name):  # several servers of one model: one backend, requests balanced
        addresses = [parse_server_url(url) for url in replica_urls(request.name)]
        key: tuple = ("servers", tuple((a.base, a.model) for a in addresses))
    else:
        address = parse_server_url(request.name)
        key = ("server", address.base, address.model)
    return Prepared(key=key, load=lambda: OpenAIBackend.connect(request.name, progress=request.progress))


def _web_servers(request: LoadRequest) -> None:
    """Only servers the operator listed (serve --allow-server): a browser must not make the
    studio send requests to any address it names."""
    assert request.access is not None
    request.access.check_server(request.name)


for _scheme in ("http", "https"):
    register_backend(
        _scheme,
        prepare=_prepare_server,
        summary="a model served by vLLM or SGLang over the OpenAI-compatible API (its tokenizer loaded here); "
        "replicas comma-separated",
        example=f"{_scheme}://HOST:PORT/v1, {_scheme}://HOST:PORT/v1#SERVED-ID, or {_scheme}://A/v1,{_scheme}://B/v1",
        web=_web_servers,
        web_note="servers listed with serve --allow-server URL only",
    )


def _web_replica_file(request: LoadRequest) -> None:
    raise StudioError(
        "A replica file is read on the studio's machine: name the replicas comma-separated (each allowed with --allow-server)."
    )


register_backend(
    "replicas",
    prepare=_prepare_server,
    summary="replicas of one served model listed in a file (one URL a line), requests balanced across them",
    example="replicas:FILE",
    web=_web_replica_file,
    web_note="not from the browser: name the replicas comma-separated",
)


class ModelRegistry:
    """Loaded models by key, with one lock per device."""

    def __init__(self) -> None:
        self._models: dict[Hashable, Backend] = {}
        self._names: dict[Hashable, str] = {}
        self._holders: dict[Hashable, set[str]] = {}
        self._pinned: set[Hashable] = set()
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
        """The loaded model ``name`` (``default``, a hub id, a local path, or ``scheme:...`` of a
        registered scheme), loading it if needed. ``holder`` (e.g. a browser session) is
        remembered until :meth:`release`.

        ``access`` is given for names that come from the web: the operator's rules then decide
        which schemes and paths may load and whether remote code may run (``trust_remote_code``
        is ignored).
        """
        scheme, request = self._request(name, device, dtype, trust_remote_code, progress, access)
        prepared = scheme.prepare(request)
        with self._loading:
            if prepared.key not in self._models:
                self._models[prepared.key] = prepared.load()
                self._names[prepared.key] = name
            else:
                progress(1.0, "already loaded")
            if holder is not None:
                self._holders.setdefault(prepared.key, set()).add(holder)
            return self._models[prepared.key]

    def check(self, name: str, access: ModelAccess | None = None) -> None:
        """Whether ``name`` may load (its form, and for names from the web the operator's rules), without
        loading it: one line when it may not."""
        self._request(name, "auto", "auto", False, no_progress, access)

    def _request(
        self,
        name: str,
        device: str,
        dtype: str,
        trust_remote_code: bool,
        progress: ProgressCallback,
        access: ModelAccess | None,
    ) -> tuple[BackendScheme, LoadRequest]:
        """The scheme and load request of ``name``, checked against ``access`` for names from the web."""
        name = check_model_name(name)
        if access is not None:
            trust_remote_code = access.trust_remote_code
        scheme = backend_scheme(name)
        target = name[len(scheme.scheme) + 1 :] if scheme.scheme else name
        request = LoadRequest(name, target, device, dtype, trust_remote_code, progress, access, self.device_lock)
        if access is not None:
            if scheme.web_check is None:
                raise StudioError(
                    f"Models of the {scheme.scheme}: kind load only from the command line (serve --model), not from the browser."
                )
            scheme.web_check(request)
        return scheme, request

    def add(self, name: str, backend: Backend, device: str = "cpu") -> Backend:
        """Register an already built backend (tiny test models, scripted fakes)."""
        with self._loading:
            key = ("memory", name, device)
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
