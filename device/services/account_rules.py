"""Account changes made by an administrator, with the rules that keep the device administrable.

* nobody disables their own account or removes their own admin role (no accidental lock-out);
* the last active administrator can never be disabled or demoted, whoever asks (web page or CLI).

Each check and its change run in one ``BEGIN IMMEDIATE`` transaction (SQLite; on the central's
PostgreSQL a SERIALIZABLE one), so two administrators demoting each other at the same moment cannot
both succeed.
The changes themselves (and their audit events) are ``device.services.accounts``'s.
"""

from __future__ import annotations

from device.services import accounts
from device.services.accounts import AccountRefused, NoSuchAccount
from device.store.records import User, db_proxy

ADMIN = "admin"


def active_admin_ids() -> set[int]:
    return {u.id for u in User.select(User.id, User.roles).where(User.disabled == False)  # noqa: E712
            if ADMIN in u.role_set}


def _exclusive():
    """A write transaction that serialises the check with its change, on SQLite and PostgreSQL alike."""
    import peewee as pw

    database = db_proxy.obj
    return db_proxy.atomic("IMMEDIATE" if isinstance(database, pw.SqliteDatabase) else "SERIALIZABLE")


def _refresh(user: User) -> User:
    fresh = User.get_or_none(User.id == user.id)
    if fresh is None:
        raise NoSuchAccount(f"no such user: {user.username}")
    return fresh


def _check_not_last_admin(target: User, what: str) -> None:
    if not target.disabled and ADMIN in target.role_set and active_admin_ids() == {target.id}:
        raise AccountRefused(f"{target.username} is the last active administrator and cannot be {what}: "
                           f"make another user administrator first")


def change_roles(target: User, roles: str | list[str], actor: str, actor_id: int | None = None) -> list[str]:
    """Set the target's roles; returns the new role list. AccountError (one line) when a rule forbids it."""
    role_list = accounts.parse_roles(roles)
    with _exclusive():
        target = _refresh(target)
        if ADMIN in target.role_set and ADMIN not in role_list:
            if target.id == actor_id:
                raise AccountRefused("you cannot remove your own admin role: ask another administrator")
            _check_not_last_admin(target, "demoted")
        if role_list != sorted(target.role_set, key=accounts.ROLES.index):
            accounts.set_roles(target, role_list, actor)
    return role_list


def set_enabled(target: User, enabled: bool, actor: str, actor_id: int | None = None) -> User:
    """Enable or disable an account. AccountError when a rule forbids it."""
    with _exclusive():
        target = _refresh(target)
        if not enabled:
            if target.id == actor_id:
                raise AccountRefused("you cannot disable your own account")
            _check_not_last_admin(target, "disabled")
        if target.disabled == (not enabled):
            return target
        return accounts.set_disabled(target.username, not enabled, actor)


def reset_password(target: User, password: str, actor: str) -> None:
    """Set a new password chosen by an administrator (strength rules of ``device.services.accounts``)."""
    accounts.set_password(_refresh(target), password, actor)
