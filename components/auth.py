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
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from studio.errors import StudioError
from studio.validation import MAX_NAME

HASH_SCHEME = "pbkdf2_sha256"
HASH_ITERATIONS = 600_000  # OWASP's 2023 figure for PBKDF2-HMAC-SHA256
ENVIRONMENT = "AGENT_STUDIO_AUTH"


def hash_password(password: str, iterations: int = HASH_ITERATIONS, salt: str | None = None) -> str:
    """``pbkdf2_sha256$ITERATIONS$SALT$HASH``, the form an auth file may store instead of the password."""
    salt = salt or secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), bytes.fromhex(salt), iterations).hex()
    return f"{HASH_SCHEME}${iterations}${salt}${digest}"


def _matches(password: str, stored: str) -> bool:
    if stored.startswith(HASH_SCHEME + "$"):
        try:
            _scheme, iterations, salt, _digest = stored.split("$")
            expected = hash_password(password, int(iterations), salt)
        except ValueError:
            return False
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

    def check(self, user: str, password: str) -> bool:
        """Gradio's login callback: True when ``user`` exists and ``password`` is theirs."""
        stored = self.users.get(str(user or ""))
        return stored is not None and _matches(str(password or ""), stored)


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
            f"Give --auth USER:PASSWORD, --auth-file FILE or {ENVIRONMENT} (see README: Sharing with a team), or use --host 127.0.0.1."
        )
