"""User accounts: Argon2id password hashes, roles, and login throttling with lock-out.

Shared by the ``allscope users`` command and the web UI's login page. Failed
logins are stored in the database (``LoginFailure``), so lock-out survives a
restart and holds across worker threads.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from device.errors import Conflict, InvalidInput, NotFound
from device.store.records import ROLES, LoginFailure, User, audit, db_proxy, utcnow

_hasher = PasswordHasher()  # Argon2id with the library's current recommended parameters
# A hash of nothing, verified when the username is unknown so that timing does not reveal which users exist.
_DUMMY_HASH = _hasher.hash("allscope-no-such-user")

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSWORD_LENGTH = 10


class AccountError(InvalidInput):
    """A user-facing problem with an account request (bad name, weak password, unknown user)."""


class AccountRefused(Conflict, AccountError):
    """A rule keeps the device administrable: no self lock-out, never without an active administrator."""


class NoSuchAccount(NotFound, AccountError):
    """The account named does not exist."""


@dataclass(frozen=True)
class LockoutPolicy:
    max_user_failures: int = 5        # per username within the window → account locked
    max_address_failures: int = 20    # per client address within the window → address throttled
    window: dt.timedelta = dt.timedelta(minutes=15)
    lock_for: dt.timedelta = dt.timedelta(minutes=15)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password too short: use at least {MIN_PASSWORD_LENGTH} characters")
    if password.strip() != password or len(set(password)) < 4:
        raise AccountError("password too simple: avoid leading/trailing spaces and repeated characters")


def parse_roles(text: str | list[str]) -> list[str]:
    roles = [r.strip() for r in (text.split(",") if isinstance(text, str) else text) if r.strip()]
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise AccountError(f"unknown role {', '.join(unknown) or '(none)'}: choose from {', '.join(ROLES)}")
    return sorted(set(roles), key=ROLES.index)


def create_user(username: str, password: str, roles: str | list[str], *, full_name: str = "",
                actor: str = "cli") -> User:
    username = username.strip().lower()
    if not USERNAME_RE.match(username):
        raise AccountError("username must be 2-64 characters: lower-case letters, digits, '.', '_' or '-'")
    check_password_strength(password)
    role_list = parse_roles(roles)
    with db_proxy.atomic():
        if User.select().where(User.username == username).exists():
            raise AccountError(f"user {username!r} already exists")
        user = User.create(username=username, full_name=full_name.strip(), password_hash=hash_password(password),
                           roles=",".join(role_list))
        audit("create", "user", user.id, username=actor, after={"username": username, "roles": role_list})
    return user


class SetupClosed(NotFound, AccountError):
    """The one-time set-up was asked for while an account already exists."""


def create_first_user(username: str, password: str, roles: str | list[str], *, full_name: str = "",
                      actor: str = "setup-page") -> User:
    """Create the first account of an empty database (the set-up pages of both web apps).

    The emptiness check and the insert share one write transaction, so two set-up requests racing each
    other cannot both create an administrator: the loser gets SetupClosed.
    """
    with db_proxy.atomic():
        if any_user_exists():
            raise SetupClosed("an account already exists: the set-up page is closed")
        return create_user(username, password, roles, full_name=full_name, actor=actor)


def set_password(user: User, password: str, actor: str) -> None:
    check_password_strength(password)
    with db_proxy.atomic():
        User.update(password_hash=hash_password(password), session_epoch=User.session_epoch + 1) \
            .where(User.id == user.id).execute()  # a new password ends the user's open sessions
        audit("password", "user", user.id, username=actor, detail=f"password changed for {user.username}")


def set_roles(user: User, roles: str | list[str], actor: str) -> None:
    role_list = parse_roles(roles)
    with db_proxy.atomic():
        before = user.roles
        User.update(roles=",".join(role_list)).where(User.id == user.id).execute()
        audit("update", "user", user.id, username=actor, before={"roles": before.split(",")},
              after={"roles": role_list})


def set_disabled(username: str, disabled: bool, actor: str) -> User:
    user = User.get_or_none(User.username == username.strip().lower())
    if user is None:
        raise NoSuchAccount(f"no such user: {username}")
    with db_proxy.atomic():
        User.update(disabled=disabled, session_epoch=User.session_epoch + 1).where(User.id == user.id).execute()
        audit("disable" if disabled else "enable", "user", user.id, username=actor,
              before={"disabled": user.disabled}, after={"disabled": disabled})
    user.disabled = disabled
    return user


def any_user_exists() -> bool:
    return User.select().exists()


def _recent_failures(key: str, since: dt.datetime) -> int:
    return LoginFailure.select().where((LoginFailure.key == key) & (LoginFailure.at >= since)).count()


def lockout_remaining(username: str, address: str, policy: LockoutPolicy = LockoutPolicy()) -> dt.timedelta | None:
    """How long the username or address stays locked, or None when a login may be tried."""
    now = utcnow()
    for key, limit in ((f"user:{username}", policy.max_user_failures),
                       (f"addr:{address}", policy.max_address_failures)):
        recent = (LoginFailure.select(LoginFailure.at).where(
            (LoginFailure.key == key) & (LoginFailure.at >= now - policy.window - policy.lock_for))
            .order_by(LoginFailure.at.desc()).limit(limit))
        times = [r.at for r in recent]
        if len(times) >= limit and times[0] - times[-1] <= policy.window:
            remaining = times[0] + policy.lock_for - now
            if remaining > dt.timedelta(0):
                return remaining
    return None


def authenticate(username: str, password: str, address: str,
                 policy: LockoutPolicy = LockoutPolicy()) -> tuple[User | None, str]:
    """Check a login. Returns (user, "") on success or (None, reason) where reason is safe to show."""
    username = (username or "").strip().lower()
    remaining = lockout_remaining(username, address, policy)
    if remaining is not None:
        minutes = max(1, int(remaining.total_seconds() // 60) + 1)
        audit("login_refused", "user", username, username=username, address=address, detail="locked out")
        return None, f"Too many failed attempts: try again in {minutes} min or ask an administrator."
    user = User.get_or_none(User.username == username)
    ok = False
    try:
        ok = _hasher.verify(user.password_hash if user else _DUMMY_HASH, password or "")
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if user is None or not ok or user.disabled:
        with db_proxy.atomic():
            LoginFailure.create(key=f"user:{username}")
            LoginFailure.create(key=f"addr:{address}")
            audit("login_failed", "user", username, username=username, address=address,
                  detail="disabled account" if user is not None and ok else "bad username or password")
        return None, "Wrong username or password." if not (user and ok) else "This account is disabled."
    with db_proxy.atomic():
        LoginFailure.delete().where(LoginFailure.key == f"user:{username}").execute()
        User.update(last_login_at=utcnow()).where(User.id == user.id).execute()
        if _hasher.check_needs_rehash(user.password_hash):
            User.update(password_hash=hash_password(password)).where(User.id == user.id).execute()
        audit("login", "user", user.id, username=username, address=address)
    return user, ""


def read_new_password() -> str:
    """A new password from stdin, never from argv (argv is visible to every user via ps); asked twice on a terminal."""
    import sys

    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Password again: "):
            raise AccountError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")
