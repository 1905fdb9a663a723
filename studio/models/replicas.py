"""Several servers of one model behind one name: ``http://a:8000/v1,http://b:8000/v1`` (or ``replicas:FILE``,
a file listing them one per line).

:class:`ReplicaPool` looks like one :class:`~studio.models.server_client.ServerClient` to
:class:`~studio.models.remote.OpenAIBackend`: each request goes to the replica with the fewest requests in
flight (ties in turn). A replica that cannot answer (unreachable, timed out, dropped, 502/503/504) is taken
out for :data:`RETRY_AFTER` seconds and the request goes to the next one; a request it *refused* (a 400) is
the caller's error and is not sent elsewhere. A stream that fails after its first event is not re-sent
(its tokens were already handed on): the step fails in one line, as with one server. Every generation
records which replica answered (``served_by`` on the step). A router in front of replicas (vllm-router,
sglang-router) is an ordinary URL.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from studio.errors import StudioError
from studio.models.server_client import ServerAddress, ServerClient, ServerUnavailable, parse_server_url

#: Seconds a replica that could not answer is left out before it is tried again.
RETRY_AFTER = 30.0
#: The most replicas one name may list.
MAX_REPLICAS = 64
T = TypeVar("T")


def is_replica_list(name: str) -> bool:
    """``name`` lists several servers (or a file of them) rather than naming one."""
    return name.startswith("replicas:") or ("," in name and name.lstrip().startswith(("http://", "https://")))


def replica_urls(name: str) -> list[str]:
    """The server URLs a name lists: comma-separated, or ``replicas:FILE`` (one URL a line, ``#`` comments);
    each checked as a server URL, at least one, no repeats. One line for anything else."""
    if name.startswith("replicas:"):
        path = Path(name.removeprefix("replicas:")).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise StudioError(f"Cannot read the replica list {str(path)[:100]}: {exc}") from None
        parts = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    else:
        parts = [part.strip() for part in name.split(",")]
    urls = [part for part in parts if part]
    if not urls:
        raise StudioError(f"{name[:100]!r} lists no server.")
    if len(urls) > MAX_REPLICAS:
        raise StudioError(f"At most {MAX_REPLICAS} replicas, got {len(urls)}.")
    bases = [parse_server_url(url).base for url in urls]
    if len(set(bases)) != len(bases):
        raise StudioError("A replica is listed twice.")
    return urls


@dataclass
class _Replica:
    client: ServerClient
    outstanding: int = 0
    out_until: float = 0.0
    failures: int = 0


class ReplicaPool:
    """Replicas of one served model, used like one :class:`ServerClient` (thread-safe)."""

    def __init__(
        self, clients: list[ServerClient], retry_after: float = RETRY_AFTER, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not clients:
            raise StudioError("A replica pool needs at least one server.")
        self.replicas = [_Replica(client) for client in clients]
        self.address = ServerAddress(",".join(c.address.base for c in clients), clients[0].address.model)
        self.timeout = clients[0].timeout
        self.retry_after = retry_after
        self._clock = clock
        self._lock = threading.Lock()
        self._turn = 0

    # -- choosing ------------------------------------------------------------------------------
    def _pick(self, tried: set[int]) -> int | None:
        """The replica to ask next (counted as in flight): the fewest requests in flight among those not
        out, ties in turn; when every one not yet tried is out, the one back soonest (better than failing)."""
        now = self._clock()
        with self._lock:
            left = [i for i in range(len(self.replicas)) if i not in tried]
            if not left:
                return None
            ready = [i for i in left if self.replicas[i].out_until <= now]
            if ready:
                least = min(self.replicas[i].outstanding for i in ready)
                ties = [i for i in ready if self.replicas[i].outstanding == least]
                choice = ties[self._turn % len(ties)]
                self._turn += 1
            else:
                choice = min(left, key=lambda i: self.replicas[i].out_until)
            self.replicas[choice].outstanding += 1
            return choice

    def _done(self, index: int, unavailable: bool) -> None:
        with self._lock:
            replica = self.replicas[index]
            replica.outstanding -= 1
            if unavailable:
                self._take_out(replica)
            else:
                replica.out_until = 0.0

    def _take_out(self, replica: _Replica) -> None:
        """Leave ``replica`` out for :attr:`retry_after` seconds (it could not answer)."""
        replica.out_until = self._clock() + self.retry_after
        replica.failures += 1

    def _none_answered(self, errors: list[str]) -> ServerUnavailable:
        return ServerUnavailable(
            f"No replica of {len(self.replicas)} answered; the last: {errors[-1] if errors else 'none tried'}"
        )

    def status(self) -> list[dict[str, Any]]:
        """Each replica: its URL, requests in flight, whether it is out now, and how often it failed."""
        now = self._clock()
        with self._lock:
            return [
                {
                    "base": r.client.address.base,
                    "in_flight": r.outstanding,
                    "out": r.out_until > now,
                    "failures": r.failures,
                }
                for r in self.replicas
            ]

    # -- the ServerClient interface ----------------------------------------------------------------
    def _call(self, send: Callable[[ServerClient], T]) -> T:
        errors: list[str] = []
        tried: set[int] = set()
        while (index := self._pick(tried)) is not None:
            tried.add(index)
            try:
                result = send(self.replicas[index].client)
            except ServerUnavailable as exc:
                self._done(index, True)
                errors.append(str(exc))
                continue
            except BaseException:
                self._done(index, False)
                raise
            self._done(index, False)
            return result
        raise self._none_answered(errors)

    def get(self, path: str, *, root: bool = False) -> Any:
        return self._call(lambda client: client.get(path, root=root))

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call(lambda client: client.post(path, body))

    def stream(
        self,
        path: str,
        body: dict[str, Any],
        should_stop: Callable[[], bool],
        on_server: Callable[[str], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        errors: list[str] = []
        tried: set[int] = set()
        while (index := self._pick(tried)) is not None:
            tried.add(index)
            started = unavailable = False
            try:
                for event in self.replicas[index].client.stream(path, body, should_stop, on_server):
                    started = True
                    yield event
                return
            except ServerUnavailable as exc:
                unavailable = True
                if started:  # tokens were already handed on: not re-sent elsewhere
                    raise
                errors.append(str(exc))
            finally:
                self._done(index, unavailable)
        raise self._none_answered(errors)

    def close(self) -> None:
        for replica in self.replicas:
            replica.client.close()


def connect_pool(urls: list[str]) -> tuple[ReplicaPool, dict[str, Any]]:
    """A pool of the servers ``urls`` and the model they serve (every replica that answers must serve the
    same one). Replicas that do not answer now are left out for a while;
    at least one must answer."""
    from studio.models.server_client import pick_served_model, served_models

    clients = [ServerClient(parse_server_url(url)) for url in urls]
    pool = ReplicaPool(clients)
    served: dict[str, Any] | None = None
    errors: list[str] = []
    for index, client in enumerate(clients):
        try:
            model = pick_served_model(served_models(client), client.address.model, client.address.base)
        except ServerUnavailable as exc:
            pool._take_out(pool.replicas[index])
            errors.append(str(exc))
            continue
        except BaseException:
            pool.close()
            raise
        if served is None:
            served, first = model, client.address.base
        elif model["id"] != served["id"]:
            pool.close()
            raise StudioError(
                f"The replicas serve different models: {first} serves {served['id'][:80]!r}, "
                f"{client.address.base} serves {str(model['id'])[:80]!r}."
            )
    if served is None:
        pool.close()
        raise StudioError(f"No replica answered: {errors[-1] if errors else 'none listed'}")
    return pool, served
