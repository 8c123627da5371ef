"""User accounts: Argon2id password hashes, roles, and login throttling by growing delays.

Shared by the ``allscope users`` command and the login pages of both web apps
(device and central). Failed logins are stored in the database
(``LoginFailure``), so the delays survive a restart and hold across worker threads.

Throttling is per (user name, client address): after ``free_failures`` each
further attempt from that address for that name waits, the wait doubling up to
``max_delay``. Nobody is ever locked out by someone else's guesses from another
address, and on the kiosk (everyone is 127.0.0.1) one user's typos do not slow
another user. An administrator clears the waits of a user (:func:`unlock`).

Nothing an anonymous visitor types is stored unbounded: a user name that breaks
the user-name rule is refused before any write, attempts refused while a wait
runs write nothing, failures older than ``forget_after`` are deleted, and the
audit trail itemises at most ``audited_per_hour`` failures per address and
hour (one event then says how many more are only counted).
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


USERNAME_RULE = "user names are 2-64 characters: lower-case letters, digits, '.', '_' or '-'"
MAX_PASSWORD_INPUT = 1024  # a longer "password" is refused before Argon2 sees it (no account has one)


@dataclass(frozen=True)
class LockoutPolicy:
    """How failed logins slow further attempts; ``device.config.schema.LoginSection`` gives the values."""

    free_failures: int = 3                                    # per (name, address) before any wait
    first_delay: dt.timedelta = dt.timedelta(seconds=5)       # then doubling with each failure ...
    max_delay: dt.timedelta = dt.timedelta(minutes=15)        # ... up to this
    forget_after: dt.timedelta = dt.timedelta(hours=24)       # older failures are deleted
    audited_per_hour: int = 30                                # itemised login_failed events per address and hour

    @classmethod
    def from_config(cls, section) -> "LockoutPolicy":
        """From the configuration file's ``[login]`` (``device.config.schema.LoginSection``)."""
        return cls(free_failures=section.free_failures,
                   first_delay=dt.timedelta(seconds=section.first_delay_seconds),
                   max_delay=dt.timedelta(minutes=section.max_delay_minutes),
                   forget_after=dt.timedelta(hours=section.forget_after_hours),
                   audited_per_hour=section.audited_failures_per_hour)

    def delay_after(self, failures: int) -> dt.timedelta:
        """The wait before the next attempt after ``failures`` recent failures (zero while free)."""
        extra = failures - self.free_failures
        if extra < 0:
            return dt.timedelta(0)
        return min(self.first_delay * (2 ** min(extra, 30)), self.max_delay)


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


def new_account_problems(username: str, password: str, roles: str | list[str], *, full_name: str = "",
                         password_again: str | None = None) -> dict[str, str]:
    """Every reason :func:`create_user` would refuse these values, by field ("username", "full_name",
    "password", "password_again", "roles"), so a form can show them all at once (empty: none)."""
    problems: dict[str, str] = {}
    name = (username or "").strip().lower()
    if not USERNAME_RE.match(name):
        problems["username"] = "Username must be 2-64 characters: lower-case letters, digits, '.', '_' or '-'."
    elif User.select().where(User.username == name).exists():
        problems["username"] = f"User {name!r} already exists."
    if len(full_name or "") > 200:
        problems["full_name"] = "Full name: at most 200 characters."
    try:
        check_password_strength(password or "")
    except AccountError as error:
        problems["password"] = str(error)[:1].upper() + str(error)[1:] + "."
    if password_again is not None and password_again != password:
        problems["password_again"] = "The two passwords differ."
    try:
        parse_roles(roles)
    except AccountError:
        problems["roles"] = "Choose at least one role."
    return problems


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


def _pair_key(username: str, address: str) -> str:
    return f"pair:{username}@{address[:64]}"


def _address_key(address: str) -> str:
    return f"addr:{address[:64]}"


def lockout_remaining(username: str, address: str, policy: LockoutPolicy = LockoutPolicy()) -> dt.timedelta | None:
    """How long ``username`` must wait before a login from ``address`` may be tried, or None when it may now."""
    now = utcnow()
    times = [r.at for r in LoginFailure.select(LoginFailure.at).where(
        (LoginFailure.key == _pair_key(username, address)) & (LoginFailure.at >= now - policy.forget_after))
        .order_by(LoginFailure.at.desc())]
    if not times:
        return None
    remaining = times[0] + policy.delay_after(len(times)) - now
    return remaining if remaining > dt.timedelta(0) else None


def _wait_text(remaining: dt.timedelta) -> str:
    seconds = max(1, int(remaining.total_seconds() + 0.999))
    return f"{seconds} s" if seconds < 120 else f"{(seconds + 59) // 60} min"


def _record_failure(username: str, address: str, known: bool, reason: str, policy: LockoutPolicy) -> None:
    """One failed login: counted for its (name, address); audited unless the address spent its hourly budget."""
    now = utcnow()
    with db_proxy.atomic():
        LoginFailure.delete().where(LoginFailure.at < now - policy.forget_after).execute()  # prune
        LoginFailure.create(key=_pair_key(username, address), at=now)
        this_hour = (LoginFailure.select().where((LoginFailure.key == _address_key(address)) &
                                                 (LoginFailure.at >= now - dt.timedelta(hours=1))).count())
        if this_hour > policy.audited_per_hour:
            return  # counted in the pair's rows only; the event below already said more were coming
        LoginFailure.create(key=_address_key(address), at=now)
        if this_hour < policy.audited_per_hour:
            audit("login_failed", "user", username, username=username if known else "", address=address,
                  detail=reason if known else f"{reason} (no such user)")
        else:
            audit("login_failed", "user", "", address=address,
                  detail=f"more than {policy.audited_per_hour} failed log-ins from this address within an hour: "
                         f"further ones are not itemised until the hour has passed")


def authenticate(username: str, password: str, address: str,
                 policy: LockoutPolicy = LockoutPolicy()) -> tuple[User | None, str]:
    """Check a login. Returns (user, "") on success or (None, reason) where reason is safe to show."""
    username = (username or "").strip().lower()
    address = (address or "unknown")[:64]
    if not USERNAME_RE.match(username):
        return None, f"Wrong username: {USERNAME_RULE}."  # refused before any write
    if len(password or "") > MAX_PASSWORD_INPUT:
        return None, "Wrong username or password."
    remaining = lockout_remaining(username, address, policy)
    if remaining is not None:  # refused without a write: waiting attempts cannot fill the disk
        return None, (f"Too many failed attempts for {username} from this computer: try again in "
                      f"{_wait_text(remaining)}, or ask an administrator to unlock {username}.")
    user = User.get_or_none(User.username == username)
    ok = False
    try:
        ok = _hasher.verify(user.password_hash if user else _DUMMY_HASH, password or "")
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if user is None or not ok or user.disabled:
        _record_failure(username, address, user is not None,
                        "disabled account" if user is not None and ok else "bad username or password", policy)
        return None, "Wrong username or password." if not (user and ok) else "This account is disabled."
    with db_proxy.atomic():
        LoginFailure.delete().where(LoginFailure.key == _pair_key(username, address)).execute()
        User.update(last_login_at=utcnow()).where(User.id == user.id).execute()
        if _hasher.check_needs_rehash(user.password_hash):
            User.update(password_hash=hash_password(password)).where(User.id == user.id).execute()
        audit("login", "user", user.id, username=username, address=address)
    return user, ""


def waiting_addresses(username: str, policy: LockoutPolicy = LockoutPolicy()) -> int:
    """How many client addresses must currently wait before trying ``username`` again."""
    prefix = f"pair:{username}@"
    since = utcnow() - policy.forget_after
    keys = {k for (k,) in LoginFailure.select(LoginFailure.key).where(
        LoginFailure.key.startswith(prefix) & (LoginFailure.at >= since)).tuples()}
    return sum(1 for key in keys if lockout_remaining(username, key[len(prefix):], policy) is not None)


def unlock(username: str, actor: str, address: str = "") -> int:
    """Clear every failed login of ``username`` (all addresses), audited; returns how many were cleared."""
    user = User.get_or_none(User.username == (username or "").strip().lower())
    if user is None:
        raise NoSuchAccount(f"no such user: {username}")
    with db_proxy.atomic():
        cleared = LoginFailure.delete().where(LoginFailure.key.startswith(f"pair:{user.username}@")).execute()
        audit("unlock", "user", user.id, username=actor, address=address,
              detail=f"cleared {cleared} failed log-in{'' if cleared == 1 else 's'} of {user.username}")
    return cleared


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
