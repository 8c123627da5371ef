"""The running receivers (`allscope central run`), as each reports itself in the central database.

A receiver writes its row when it starts (client id, host, pid), refreshes ``last_seen_at``
every :data:`HEARTBEAT_S` seconds while it runs, and sets ``stopped_at`` on a clean stop.
A receiver that was killed stops refreshing: after :data:`STALE_AFTER_S` the admin UI shows
it as "not responding". Nothing here affects the message flow: the broker drops a receiver's
share of the shared subscription as soon as its connection closes (clean start, session
expiry 0; see ``sync/central/service.py``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from device.store.records import utcnow
from sync.central.models import ReceiverBeat

HEARTBEAT_S = 10.0
STALE_AFTER_S = 3 * HEARTBEAT_S


def register(client_id: str, host: str, pid: int) -> None:
    """Insert or restart the row of ``client_id`` (a client id is unique per receiver, as the broker demands).

    One upsert statement, not a read then a write in a transaction: on SQLite a deferred transaction that
    reads and then writes fails at once with "database is locked" when another receiver is writing (the
    busy timeout cannot help a lock upgrade), which killed receivers restarted under load.
    """
    now = utcnow()
    fields = {"host": host[:255], "pid": pid, "started_at": now, "last_seen_at": now, "stopped_at": None,
              "handled": 0}
    (ReceiverBeat.insert(client_id=client_id, **fields)
     .on_conflict(conflict_target=[ReceiverBeat.client_id], update=fields).execute())


def beat(client_id: str, handled: int) -> bool:
    """Refresh the row; False when there is none (registering failed, or it was forgotten)."""
    return ReceiverBeat.update(last_seen_at=utcnow(), handled=handled).where(
        ReceiverBeat.client_id == client_id).execute() > 0


def stopped(client_id: str, handled: int) -> None:
    now = utcnow()
    (ReceiverBeat.update(last_seen_at=now, stopped_at=now, handled=handled)
     .where(ReceiverBeat.client_id == client_id).execute())


def forget(client_id: str) -> bool:
    """Remove a retired receiver's row (the UI then no longer lists it); True when there was one."""
    return ReceiverBeat.delete().where(ReceiverBeat.client_id == client_id).execute() > 0


@dataclass(frozen=True)
class ReceiverView:
    client_id: str
    host: str
    pid: int
    started_at: dt.datetime
    last_seen_at: dt.datetime
    handled: int
    state: str  # running | not responding | stopped


def listing(now: dt.datetime | None = None) -> list[ReceiverView]:
    """Every receiver that ever reported, running ones first."""
    now = now or utcnow()
    views = []
    for row in ReceiverBeat.select().order_by(ReceiverBeat.client_id):
        if row.stopped_at is not None:
            state = "stopped"
        elif (now - row.last_seen_at).total_seconds() > STALE_AFTER_S:
            state = "not responding"
        else:
            state = "running"
        views.append(ReceiverView(row.client_id, row.host, row.pid, row.started_at, row.last_seen_at, row.handled,
                                  state))
    order = {"running": 0, "not responding": 1, "stopped": 2}
    return sorted(views, key=lambda view: (order[view.state], view.client_id))
