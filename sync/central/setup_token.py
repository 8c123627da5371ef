"""The one-time token that the central's first set-up page (``/setup``) asks for.

Until the first administrator exists, ``/setup`` creates one for whoever fills it in; on a server reachable
from a network that is anyone who finds the page first. So the page also asks for a token that only someone
on the server can read: ``allscope central setup-token`` prints it (``allscope central serve`` too, at start,
while no account exists). It lives in ``setup-token`` in the central data directory (0600) and is deleted
when the first administrator is created.

    token = issue(data_root)        # the existing one, or a new one
    matches(data_root, typed)       # constant-time comparison; False when there is none
    consume(data_root)              # after the first administrator is created
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from device.store.atomic import write_atomic

FILE_NAME = "setup-token"


def token_path(data_root: str | os.PathLike) -> Path:
    return Path(data_root) / FILE_NAME


def current(data_root: str | os.PathLike) -> str | None:
    try:
        token = token_path(data_root).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return token or None


def issue(data_root: str | os.PathLike) -> str:
    """The token in force, made (0600) when there is none."""
    token = current(data_root)
    if token is None:
        token = secrets.token_urlsafe(18)  # 144 bits: not guessable through a form
        write_atomic(token_path(data_root), token.encode("ascii") + b"\n", mode=0o600)
    return token


def matches(data_root: str | os.PathLike, typed: str | None) -> bool:
    token = current(data_root)
    return bool(token) and bool(typed) and hmac.compare_digest(token.encode(), (typed or "").strip().encode())


def consume(data_root: str | os.PathLike) -> None:
    try:
        token_path(data_root).unlink()
    except FileNotFoundError:
        pass
