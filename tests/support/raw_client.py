"""Calling the studio the way any HTTP client can: the browser's own queue protocol, by handler number.

Private handlers (``api_visibility="private"``) are hidden from the API page and from
``gradio_client``, but the browser calls them through ``/gradio_api/queue/join`` like this,
so anyone can. Security tests use this to send what no widget would.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx


def handler_index(config: dict[str, Any], api_name: str) -> int:
    """The dependency number of a handler (its ``api_name``, e.g. ``load`` for the Models tab's first Load)."""
    for index, dependency in enumerate(config["dependencies"]):
        if dependency.get("api_name") == api_name:
            return dependency.get("id", index)
    raise KeyError(api_name)


def handler_of(config: dict[str, Any], elem_id: str, event: str = "click") -> int:
    """The dependency number of what ``event`` on the component ``elem_id`` runs (e.g. a button's click)."""
    component = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id)
    for index, dependency in enumerate(config["dependencies"]):
        if [component, event] in [list(t) for t in dependency.get("targets", [])]:
            return dependency.get("id", index)
    raise KeyError(f"{elem_id}.{event}")


def call(
    url: str,
    fn_index: int,
    data: list[Any],
    client: httpx.Client | None = None,
    timeout: float = 120,
    session: str | None = None,
) -> dict[str, Any]:
    """Run handler ``fn_index`` with ``data`` in ``session`` (a browser tab; a new one by default);
    return the final message (``output``, or an error)."""
    own = client is None
    client = client or httpx.Client(timeout=timeout)
    session = session or uuid.uuid4().hex[:11]
    try:
        joined = client.post(
            f"{url}gradio_api/queue/join",
            json={"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None},
        )
        if joined.status_code != 200:
            return {"status": joined.status_code, "error": joined.text}
        with client.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
        return {"error": "stream ended without a result"}
    finally:
        if own:
            client.close()
