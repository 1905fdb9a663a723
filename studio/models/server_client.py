"""Talking to an inference server over HTTP: its address (``http://HOST:PORT/v1#SERVED-ID``), the
API key from the environment, a small JSON client with one-line errors, what the server serves and
which engine it is, and the served model's tokenizer (its folder, or its hub id's tokenizer files
only). :class:`studio.models.remote.OpenAIBackend` is built on it.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from studio.errors import StudioError
from studio.models.base import ProgressCallback, no_progress

#: Environment variables an API key is read from, in order.
API_KEY_VARIABLES = ("AGENT_STUDIO_API_KEY", "OPENAI_API_KEY")
#: Seconds to wait for a connection, and for a whole answer (a long generation on a busy engine).
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = float(os.environ.get("AGENT_STUDIO_REMOTE_TIMEOUT", "300"))
#: Tokenizer files fetched for a hub id (never the weights: a 70B model's tokenizer is a few MB).
TOKENIZER_PATTERNS = ["*.json", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
TOKEN_ID_PREFIX = "token_id:"
#: Seconds an idle pooled connection is kept. Servers close idle connections after their own
#: keep-alive (vLLM and uvicorn: 5 s); a client that keeps one as long races the server's close and
#: sends a request into a socket being shut ("Server disconnected", "Connection reset by peer").
KEEPALIVE_EXPIRY = 1.0


class ServerUnavailable(StudioError):
    """The server could not answer at all (unreachable, timed out, dropped, 502/503/504): another replica
    of the same model may (:class:`studio.models.replicas.ReplicaPool`). A request it refused is not this."""


#: HTTP statuses that say the server (or the router in front of it) cannot answer now, not that the request is wrong.
UNAVAILABLE_STATUSES = (502, 503, 504)


@dataclass(frozen=True)
class ServerAddress:
    """Where a served model lives: the API's base URL and, optionally, the served model's id."""

    base: str
    """``http://HOST:PORT/v1`` (no trailing slash)."""
    model: str | None = None

    @property
    def root(self) -> str:
        """The server's own root (``/health``, ``/version``, ``/metrics`` live there for vLLM)."""
        parts = urllib.parse.urlsplit(self.base)
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def parse_server_url(name: str) -> ServerAddress:
    """``http(s)://HOST[:PORT][/PATH][#MODEL]`` as a :class:`ServerAddress`; anything else is one line."""
    text = name.strip()
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise StudioError(f"Not a server URL: {text[:100]!r} ({exc}).") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StudioError(f"Not a server URL: {text[:100]!r} (expected http://HOST:PORT/v1).")
    if parts.username or parts.password:
        raise StudioError(
            "Put no credentials in a server URL: the studio reads an API key from AGENT_STUDIO_API_KEY (or OPENAI_API_KEY)."
        )
    if parts.query:
        raise StudioError(f"A server URL takes no query string: {text[:100]!r}.")
    path = parts.path.rstrip("/") or "/v1"
    netloc = parts.hostname if port is None else f"{parts.hostname}:{port}"
    if ":" in parts.hostname:  # an IPv6 literal keeps its brackets
        netloc = f"[{parts.hostname}]" + ("" if port is None else f":{port}")
    base = urllib.parse.urlunsplit((parts.scheme, netloc, path, "", ""))
    return ServerAddress(base=base, model=urllib.parse.unquote(parts.fragment) or None)


def api_key() -> str | None:
    return next((os.environ[v] for v in API_KEY_VARIABLES if os.environ.get(v)), None)


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class ServerClient:
    """HTTP to one server, every failure as one line naming it. Thread-safe (one connection pool)."""

    def __init__(self, address: ServerAddress, timeout: float = READ_TIMEOUT) -> None:
        import httpx

        self.address = address
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {key}"} if (key := api_key()) else {}
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16, keepalive_expiry=KEEPALIVE_EXPIRY),
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def get(self, path: str, *, root: bool = False) -> Any:
        url = (self.address.root if root else self.address.base) + path
        with self._errors(url):
            response = self._once_more_if_dropped(lambda: self._client.get(url))
            return self._json(response, url)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        url = self.address.base + path
        with self._errors(url):
            response = self._once_more_if_dropped(lambda: self._client.post(url, json=body))
            return self._json(response, url)

    def stream(
        self,
        path: str,
        body: dict[str, Any],
        should_stop: Callable[[], bool],
        on_server: Callable[[str], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The server-sent events of a streamed request, as JSON objects; closes the stream (the
        engine then aborts the request) as soon as ``should_stop()`` is true. ``on_server`` hears which
        server answers (this one's base URL) once it has."""
        url = self.address.base + path
        with self._errors(url):
            request = self._client.build_request("POST", url, json=body)
            response = self._once_more_if_dropped(lambda: self._client.send(request, stream=True))
            try:
                if response.status_code >= 400:
                    response.read()
                    self._json(response, url)  # raises the server's message
                if on_server is not None:
                    on_server(self.address.base)
                for line in response.iter_lines():
                    if should_stop():
                        return
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        event = json.loads(data)
                    except ValueError:
                        raise StudioError(f"{self.address.base} sent a stream line that is not JSON.") from None
                    if isinstance(event, dict) and "error" in event:
                        raise StudioError(f"{self.address.base} failed mid-answer: {_error_message(event)}")
                    yield event
            finally:
                response.close()

    def _once_more_if_dropped(self, send: Callable[[], Any]) -> Any:
        """``send()``, and once more on a fresh connection if the server dropped the connection
        before answering: a pooled connection it closed as the request went out. The request had
        no answer, so sending it again cannot double anything the caller sees."""
        import httpx

        try:
            return send()
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            return send()

    def _errors(self, url: str) -> Any:
        return _HttpErrors(self.address.base, url, self.timeout)

    def _json(self, response: Any, url: str) -> Any:
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            detail = _error_message(data) if data is not None else _one_line(response.text, 200)
            if response.status_code in (401, 403):
                raise StudioError(
                    f"{self.address.base} refused the request (HTTP {response.status_code}): set its API key in AGENT_STUDIO_API_KEY. {detail}".rstrip()
                )
            error = ServerUnavailable if response.status_code in UNAVAILABLE_STATUSES else StudioError
            raise error(f"{self.address.base} answered HTTP {response.status_code}: {detail or 'no message'}")
        if data is None:
            raise StudioError(f"{url} did not answer with JSON: is it an OpenAI-compatible server?")
        return data


class _HttpErrors:
    """Turns httpx's exceptions into one-line StudioErrors naming the server."""

    def __init__(self, base: str, url: str, timeout: float) -> None:
        self.base, self.url, self.timeout = base, url, timeout

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, traceback: Any) -> bool:
        import httpx

        if exc is None or isinstance(exc, StudioError):
            return False
        if isinstance(exc, httpx.ConnectError):
            raise ServerUnavailable(
                f"Cannot reach {self.base}: {_one_line(str(exc) or 'connection failed', 120)} (is the server running?)."
            ) from None
        if isinstance(exc, httpx.TimeoutException):
            raise ServerUnavailable(f"{self.base} did not answer within {self.timeout:g} s.") from None
        if isinstance(exc, httpx.TransportError):  # dropped mid-answer: the server went away
            raise ServerUnavailable(
                f"Talking to {self.base} failed: {_one_line(str(exc) or type(exc).__name__, 160)}"
            ) from None
        if isinstance(exc, (httpx.HTTPError, httpx.InvalidURL)):
            raise StudioError(
                f"Talking to {self.base} failed: {_one_line(str(exc) or type(exc).__name__, 160)}"
            ) from None
        return False


def _error_message(data: Any) -> str:
    """The message of an OpenAI-style error body (``{"error": {"message": ...}}``), or of FastAPI's ``detail``."""
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if isinstance(error, list) and error and isinstance(error[0], dict):
            error = error[0].get("msg", error[0])
        if error is not None:
            return _one_line(str(error))
    return _one_line(json.dumps(data)[:300])


# -- probing a server ---------------------------------------------------------------------------
def served_models(client: ServerClient) -> list[dict[str, Any]]:
    """The server's ``/v1/models`` list (each with ``id``; vLLM adds ``root`` and ``max_model_len``)."""
    data = client.get("/models")
    models = data.get("data") if isinstance(data, dict) else None
    if not isinstance(models, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in models):
        raise StudioError(f"{client.address.base}/models did not list models: is it an OpenAI-compatible server?")
    return models


def engine_of(client: ServerClient) -> dict[str, str]:
    """Which engine answers: vLLM (``/version``), SGLang (``/get_model_info``), else unknown."""
    for path, engine in (("/version", "vllm"), ("/get_model_info", "sglang")):
        try:
            data = client.get(path, root=True)
        except StudioError:
            continue
        if engine == "vllm" and isinstance(data, dict) and isinstance(data.get("version"), str):
            return {"engine": "vLLM", "version": _one_line(data["version"], 40)}
        if engine == "sglang" and isinstance(data, dict) and "model_path" in data:
            return {"engine": "SGLang", "version": ""}
    return {"engine": "OpenAI-compatible", "version": ""}


def pick_served_model(models: list[dict[str, Any]], wanted: str | None, base: str) -> dict[str, Any]:
    if wanted is None:
        if not models:
            raise StudioError(f"{base} serves no model.")
        return models[0]
    for model in models:
        if model["id"] == wanted:
            return model
    names = ", ".join(_one_line(m["id"], 80) for m in models[:10]) or "none"
    raise StudioError(f"{base} does not serve {wanted[:100]!r} (it serves: {names}).")


def find_tokenizer(served: dict[str, Any], progress: ProgressCallback = no_progress) -> Any:
    """The served model's tokenizer, loaded here: from its folder (vLLM's ``root``, when this
    machine has it) or its hub id (tokenizer files only, from the cache, or downloaded when online)."""
    from transformers import AutoTokenizer

    tried: list[str] = []
    for name in dict.fromkeys(str(n) for n in (served.get("root"), served.get("id")) if n):
        path = Path(name).expanduser()
        if path.is_dir():
            folder: str | None = str(path)
        else:
            folder = _tokenizer_from_hub(name)
        tried.append(name)
        if folder is None:
            continue
        progress(0.6, f"loading the tokenizer from {folder}")
        try:
            return AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise StudioError(f"Could not load the tokenizer of {name[:100]!r}: {_one_line(str(exc), 160)}") from None
    shown = " or ".join(repr(t[:100]) for t in tried) or "nothing"
    raise StudioError(
        f"Cannot find the tokenizer of the served model here (tried {shown}): serve it under its hub id "
        "(--served-model-name ORG/NAME) with the tokenizer in the local Hugging Face cache, or run the studio where its folder is."
    )


def _tokenizer_from_hub(name: str) -> str | None:
    from studio.models.resolve import HUB_ID

    if not HUB_ID.match(name) or "/" not in name:
        return None
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    for local_only in (True,) if offline else (True, False):
        try:
            folder = snapshot_download(name, allow_patterns=TOKENIZER_PATTERNS, local_files_only=local_only)
        except Exception:  # noqa: BLE001 - not cached / not on the hub / offline: try the next way
            continue
        if any(Path(folder).glob("tokenizer*")):
            return folder
    return None
