"""Who may use a studio that listens beyond this machine: credentials, hashed passwords, the login check.

``serve`` on a loopback address needs nothing. On any other address it refuses to start
unless credentials are configured, from any of:

- ``--auth USER:PASSWORD`` (repeatable);
- ``--auth-file FILE``: one ``user:password`` a line, where the password is better stored
  hashed (``python app.py hash-password`` prints ``pbkdf2_sha256$…``); ``#`` starts a comment;
- the environment variable ``AGENT_STUDIO_AUTH``: ``user:password``, several separated by commas.

The browser then shows a login page, every API call needs the session cookie, and the
annotator's name is the logged-in user.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio

from studio.errors import StudioError
from studio.validation import MAX_NAME

#: Passwords are read up to this length (a megabyte of password would cost the hash a long time).
MAX_PASSWORD = 1_024
HASH_SCHEME = "pbkdf2_sha256"
HASH_ITERATIONS = 600_000  # OWASP's 2023 figure for PBKDF2-HMAC-SHA256
ENVIRONMENT = "AGENT_STUDIO_AUTH"


def hash_password(password: str, iterations: int = HASH_ITERATIONS, salt: str | None = None) -> str:
    """``pbkdf2_sha256$ITERATIONS$SALT$HASH``, the form an auth file may store instead of the password."""
    salt = salt or secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), bytes.fromhex(salt), iterations).hex()
    return f"{HASH_SCHEME}${iterations}${salt}${digest}"


#: What an unknown user's password is checked against, so that a wrong name costs what a wrong
#: password costs (a name must not be found out by timing).
_DECOY = hash_password(secrets.token_hex(16), salt="00" * 16)


def _matches(password: str, stored: str) -> bool:
    """Whether ``password`` is ``stored`` (plain or hashed). Always one full PBKDF2 hash: a plain
    password, or a malformed hash, costs what a hashed one does."""
    hashed = stored.startswith(HASH_SCHEME + "$")
    try:
        _scheme, iterations, salt, _digest = (stored if hashed else _DECOY).split("$")
        expected = hash_password(password, int(iterations), salt)
    except ValueError:
        hash_password(password, HASH_ITERATIONS, "00" * 16)
        return False
    if hashed:
        return hmac.compare_digest(expected.encode(), stored.encode())
    return hmac.compare_digest(password.encode("utf-8"), stored.encode("utf-8"))


def _credential(text: str, where: str) -> tuple[str, str]:
    user, sep, password = text.strip().partition(":")
    if not sep or not user.strip() or not password:
        raise StudioError(f"{where}: expected USER:PASSWORD, got {text.strip()[:40]!r}.")
    if len(user.strip()) > MAX_NAME:  # it becomes the annotator's name
        raise StudioError(f"{where}: a user name has at most {MAX_NAME} characters.")
    return user.strip(), password


@dataclass
class Credentials:
    """Users and their passwords (plain or hashed), checked in constant time."""

    users: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.users)

    def add(self, text: str, where: str) -> None:
        user, password = _credential(text, where)
        self.users[user] = password

    def matches(self, user: str, password: str) -> bool:
        """True when ``user`` exists and ``password`` is theirs; the same cost either way."""
        stored = self.users.get(str(user or ""))
        found = _matches(str(password or "")[:MAX_PASSWORD], stored if stored is not None else _DECOY)
        return stored is not None and found

    async def check(self, user: str, password: str) -> bool:
        """Gradio's login callback (awaited): :meth:`matches` in a worker thread, one hash at a time, so
        that logins never hold up the event loop that serves everyone else's requests."""
        return await anyio.to_thread.run_sync(self.matches, user, password, limiter=_HASHING)


def load_credentials(
    pairs: list[str] | None = None, file: str | None = None, environ: dict[str, str] | None = None
) -> Credentials:
    """Every credential the operator gave, from ``--auth``, ``--auth-file`` and the environment."""
    credentials = Credentials()
    for text in pairs or []:
        credentials.add(text, "--auth")
    if file:
        path = Path(file).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise StudioError(f"Cannot read the auth file {path}: {getattr(exc, 'strerror', None) or exc}.") from None
        for number, line in enumerate(lines, start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                credentials.add(line, f"{path}, line {number}")
        if not credentials:
            raise StudioError(f"The auth file {path} has no user:password line.")
    value = (environ if environ is not None else os.environ).get(ENVIRONMENT, "")
    for text in value.split(","):
        if text.strip():
            credentials.add(text, ENVIRONMENT)
    return credentials


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_auth_beyond_loopback(host: str, credentials: Credentials) -> None:
    """Refuse to serve on a network address without credentials (one line saying how)."""
    if not is_loopback(host) and not credentials:
        raise StudioError(
            f"Refusing to serve on {host} without authentication: anyone who can reach it could use the studio. "
            f"Give --auth USER:PASSWORD, --auth-file FILE or {ENVIRONMENT} (see docs/team.md: Sharing with a team), or use --host 127.0.0.1."
        )


#: One password hash at a time in the whole server (each takes ~0.5 s of a core): a flood of logins
#: queues here, on worker threads, never on the event loop.
_HASHING = anyio.CapacityLimiter(1)


@dataclass
class _Tally:
    """Failed logins of one client or one user name, and until when it must wait."""

    failures: int = 0
    blocked_until: float = 0.0
    attempts: list[float] = field(default_factory=list)


class LoginGuard:
    """Throttles logins per client address and per user name.

    - a client may try ``per_client`` logins a ``window`` (seconds); more are refused at once;
    - after ``free_failures`` failed logins in a row, a user name (known or not: the answer is the same)
      or a client waits 2, 4, 8, ... seconds (at most ``max_wait``) before its next try is heard;
    - a success clears the user's and the client's failures.

    Refusals cost no hashing: they are answered before the password is read.
    """

    def __init__(
        self,
        per_client: int = 20,
        window: float = 60.0,
        free_failures: int = 5,
        max_wait: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_client, self.window, self.free_failures, self.max_wait = per_client, window, free_failures, max_wait
        self.clock = clock
        self._lock = threading.Lock()
        self._clients: dict[str, _Tally] = {}
        self._users: dict[str, _Tally] = {}

    def wait(self, client: str, user: str) -> float:
        """Seconds before this client may try to log in as ``user`` (0: now); counts the attempt if allowed."""
        now = self.clock()
        with self._lock:
            self._forget(now)
            tally = self._clients.setdefault(client, _Tally())
            tally.attempts = [t for t in tally.attempts if now - t < self.window]
            waits = [tally.blocked_until - now, self._users.get(user, _Tally()).blocked_until - now]
            if len(tally.attempts) >= self.per_client:
                waits.append(tally.attempts[0] + self.window - now)
            wait = max(waits)
            if wait > 0:
                return wait
            tally.attempts.append(now)
            return 0.0

    def record(self, client: str, user: str, ok: bool) -> None:
        """The outcome of an attempt that was heard."""
        now = self.clock()
        with self._lock:
            for tallies, key in ((self._clients, client), (self._users, user)):
                tally = tallies.setdefault(key, _Tally())
                if ok:
                    tally.failures, tally.blocked_until = 0, 0.0
                    continue
                tally.failures += 1
                over = tally.failures - self.free_failures  # the first failure past the free ones waits 2 s
                if over > 0:
                    tally.blocked_until = now + min(self.max_wait, 2.0**over)

    def _forget(self, now: float) -> None:
        """Drop tallies with nothing left to remember (a flood of names must not grow memory for ever)."""
        if len(self._users) + len(self._clients) < 10_000:
            return
        for tallies in (self._users, self._clients):
            for key in [k for k, t in tallies.items() if t.blocked_until < now and not t.attempts]:
                del tallies[key]


#: The routes Gradio answers logins on.
LOGIN_PATHS = ("/login", "/login/")
#: A login form is small; a larger body is refused before it is read further.
MAX_LOGIN_BODY = 16_384


class LoginThrottle:
    """ASGI middleware in front of Gradio's ``POST /login``: asks :class:`LoginGuard` before the password
    is checked (429 and a one-line reason when the client or the name must wait), and tells it how the
    attempt ended (Gradio answers 200 or 400)."""

    def __init__(self, app: Any, guard: LoginGuard) -> None:
        self.app, self.guard = app, guard

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST" or scope.get("path") not in LOGIN_PATHS:
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_LOGIN_BODY:
                await _answer(send, 413, "The login form is too large.")
                return
        client = (scope.get("client") or ("unknown", 0))[0]
        fields = parse_qs(body.decode("utf-8", "replace"))
        user = (fields.get("username") or [""])[0].strip()[:MAX_NAME]
        wait = self.guard.wait(client, user)
        if wait > 0:
            await _answer(send, 429, f"Too many login attempts: try again in {wait:.0f} s.")
            return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def observe(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start" and message.get("status") in (200, 400):
                self.guard.record(client, user, message["status"] == 200)
            await send(message)

        await self.app(scope, replay, observe)


async def _answer(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def login_app_kwargs(guard: LoginGuard | None = None) -> dict[str, Any]:
    """``Blocks.launch(app_kwargs=...)``: the login throttle as a middleware of Gradio's own app."""
    from starlette.middleware import Middleware

    return {"middleware": [Middleware(LoginThrottle, guard=guard or LoginGuard())]}
