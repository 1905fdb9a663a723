"""The HTTP client under a server that closes idle connections as a request goes out (a keep-alive
race seen in CI against vLLM: "Server disconnected", "Connection reset by peer"). A real socket
server plays the race on purpose: it answers one request per connection, then drops the connection
when the next request arrives on it."""

from __future__ import annotations

import json
import socket
import threading
from typing import Iterator

import pytest

from studio.errors import StudioError
from studio.models.server_client import KEEPALIVE_EXPIRY, ServerClient, parse_server_url

MODELS = json.dumps({"data": [{"id": "m"}]}).encode()
STREAM = b'data: {"n": 1}\n\ndata: {"n": 2}\n\ndata: [DONE]\n\n'


class DroppingServer:
    """Answers the first request on each connection (keep-alive), drops it on the second; with
    ``answer_none`` it drops every connection unanswered. Counts connections and answers."""

    def __init__(self, answer_none: bool = False) -> None:
        self.answer_none = answer_none
        self.connections = 0
        self.answers = 0
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(connection,), daemon=True).start()

    def _talk(self, connection: socket.socket) -> None:
        with connection:
            request = _read_request(connection)
            if request is None or self.answer_none:
                return
            streamed = request.startswith(b"POST")
            body, kind = (STREAM, b"text/event-stream") if streamed else (MODELS, b"application/json")
            head = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (kind, len(body))
            self.answers += 1  # counted before sending: the client may return before this thread runs on
            connection.sendall(head + body)
            _read_request(connection)  # the next request on this connection: dropped unanswered
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    def close(self) -> None:
        self._socket.close()


def _read_request(connection: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
    )
    while len(rest) < length:
        rest += connection.recv(65536)
    return head


@pytest.fixture
def dropping() -> Iterator[DroppingServer]:
    server = DroppingServer()
    yield server
    server.close()


def test_a_request_on_a_connection_the_server_dropped_is_sent_again_on_a_fresh_one(dropping) -> None:
    client = ServerClient(parse_server_url(dropping.url), timeout=5.0)
    try:
        for _ in range(3):  # each call after the first goes out on the pooled connection first
            assert client.get("/models") == {"data": [{"id": "m"}]}
        assert dropping.answers == 3 and dropping.connections >= 3
    finally:
        client.close()


def test_a_stream_opened_on_a_dropped_connection_is_opened_again(dropping) -> None:
    client = ServerClient(parse_server_url(dropping.url), timeout=5.0)
    try:
        for _ in range(2):  # the answered GET leaves its connection in the pool for the stream
            assert client.get("/models") == {"data": [{"id": "m"}]}
            assert list(client.stream("/completions", {"x": 1}, lambda: False)) == [{"n": 1}, {"n": 2}]
        assert dropping.answers == 4
    finally:
        client.close()


def test_a_server_that_drops_every_request_fails_in_one_line_after_one_more_try() -> None:
    server = DroppingServer(answer_none=True)
    client = ServerClient(parse_server_url(server.url), timeout=5.0)
    try:
        with pytest.raises(StudioError, match=r"Talking to http://127\.0\.0\.1:\d+/v1 failed") as caught:
            client.get("/models")
        assert "\n" not in str(caught.value)
        assert server.connections == 2  # sent once more, not in a loop
    finally:
        client.close()
        server.close()


def test_idle_connections_expire_before_a_typical_servers_keep_alive() -> None:
    # vLLM's and uvicorn's keep-alive is 5 s; a pool that keeps connections as long races their close.
    assert KEEPALIVE_EXPIRY < 5.0 / 2
