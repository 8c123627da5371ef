"""Can mosquitto's user use what its configuration names? Persistence writable, keys readable and private.

mosquitto started as root drops to ``user`` (the template's ``user`` line) before it autosaves: a
persistence folder it cannot write only shows up as "Permission denied" in its log at each autosave,
and after a restart every session is gone (issue 16). These checks decide from owner, group and mode
bits for that user's uid and groups, not from ``os.access`` (which answers for whoever runs the check,
typically root, for whom everything is allowed).

    check_broker_files(user="mosquitto", persistence_dir=..., readable=[ca, cert, crl, acl], key=broker_key)
    check_mosquitto_conf(Path("/etc/mosquitto/conf.d/allscope.conf"))   # the same, from a written config
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

READ, WRITE, SEARCH = 4, 2, 1
INSTALLED_CONF = Path("/etc/mosquitto/conf.d/allscope.conf")


@dataclass(frozen=True)
class Identity:
    name: str
    uid: int
    gids: frozenset[int]


def identity(user: str) -> Identity | None:
    """The user's uid and every group it is in (primary and supplementary), or None if it does not exist."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    gids = {entry.pw_gid} | {group.gr_gid for group in grp.getgrall() if user in group.gr_mem}
    return Identity(user, entry.pw_uid, frozenset(gids))


def allowed(path: Path, who: Identity, bits: int) -> bool:
    """Would ``who`` get ``bits`` (READ|WRITE|SEARCH) on ``path`` by its owner/group/other mode bits?"""
    if who.uid == 0:
        return True
    info = path.stat()
    if info.st_uid == who.uid:
        shift = 6
    elif info.st_gid in who.gids:
        shift = 3
    else:
        shift = 0
    return (stat.S_IMODE(info.st_mode) >> shift) & bits == bits


def reachable(path: Path, who: Identity) -> bool:
    """Every folder above ``path`` can be traversed by ``who``."""
    return all(allowed(parent, who, SEARCH) for parent in path.resolve().parents)


def check_broker_files(*, user: str, persistence_dir: Path, readable: list[Path], key: Path) -> list[str]:
    """One line per problem (empty when mosquitto, as ``user``, can do its work)."""
    who = identity(user)
    if who is None:
        return [f"user {user!r} does not exist on this machine: mosquitto cannot drop to it (--user, or "
                f"apt-get install mosquitto creates it)"]
    problems = []
    folder = Path(persistence_dir)
    if not folder.is_dir():
        problems.append(f"persistence folder {folder} does not exist: mkdir -p {folder} && chown {user}: {folder}")
    elif not (reachable(folder, who) and allowed(folder, who, WRITE | SEARCH)):
        problems.append(f"persistence folder {folder} is not writable by {user}: sessions and queued messages "
                        f"would be lost at each restart (chown {user}: {folder})")
    for path in [*readable, key]:
        path = Path(path)
        if not path.is_file():
            problems.append(f"{path} does not exist")
        elif not (reachable(path, who) and allowed(path, who, READ)):
            problems.append(f"{path} is not readable by {user} (chown root:{user} {path}; chmod 0640 {path})")
    if Path(key).is_file() and stat.S_IMODE(Path(key).stat().st_mode) & 0o007:
        problems.append(f"broker key {key} is readable by every user: chmod 0640 {key}")
    return problems


def check_mosquitto_conf(conf: Path) -> list[str]:
    """The checks above for the paths and user a written allscope mosquitto configuration names."""
    values: dict[str, str] = {}
    for line in Path(conf).read_text().splitlines():
        name, _, value = line.strip().partition(" ")
        if name in ("user", "persistence_location", "acl_file", "cafile", "certfile", "keyfile", "crlfile"):
            values.setdefault(name, value.strip())
    missing = [name for name in ("persistence_location", "keyfile") if name not in values]
    if missing:
        return [f"{conf} has no {missing[0]}: is it an allscope broker configuration?"]
    readable = [Path(values[name]) for name in ("cafile", "certfile", "crlfile", "acl_file") if name in values]
    return check_broker_files(user=values.get("user", "mosquitto"), readable=readable, key=Path(values["keyfile"]),
                              persistence_dir=Path(values["persistence_location"]))


def default_acl(installed: Path = Path("/etc/allscope/mosquitto/acl"), shipped: Path | None = None) -> Path:
    """The ACL the configuration should name: the one install.sh --with-broker put in /etc, else the shipped one."""
    if installed.is_file():
        return installed
    if shipped is None:
        from sync.fleet.broker import ACL as shipped
    return Path(os.path.abspath(shipped))
