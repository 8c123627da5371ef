"""The central's figures for ``/metrics`` and the devices page, read from the central database.

    figures = central_figures(online_minutes=10)

Everything comes from the database, not from a receiver's memory: the web app
and the receivers (``allscope central run``, one or several) are separate
processes, and the database is what they share. So:

* records ingested = stored record versions by entity (append-only, so a counter);
* ingestion errors = ``ingest_error`` rows by reason (a counter);
* devices online = enrolled devices seen within ``online_minutes``;
* backlog per device = the outbox size each device last reported in its status message;
* ingest latency = ``received_at - created_at`` of the most recent ``LATENCY_WINDOW`` record versions
  (the device's clock at the start: a device offline for a day adds a day, which is what an admin wants to see).

* receivers by state = the ``receiver`` rows (``sync/central/receivers.py``): ``running`` while their
  heartbeat is fresh, ``not_responding`` once it is older than ``STALE_AFTER_S``, ``stopped`` after a clean stop.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import peewee as pw

from device.store.records import utcnow
from sync.central.models import DEVICE_STATES, ENTITIES, Device, IngestError, ReceivedRecord

LATENCY_WINDOW = 1000
LATENCY_BUCKETS_S = (1.0, 5.0, 30.0, 60.0, 300.0, 3600.0, 6 * 3600.0, 24 * 3600.0, 7 * 24 * 3600.0)


@dataclass(frozen=True)
class CentralFigures:
    records_by_entity: dict[str, int]
    errors_by_reason: dict[str, int]
    devices_by_state: dict[str, int]
    devices_online: int
    backlog_by_device: dict[str, int]
    ingest_latencies_s: list[float]
    receivers_by_state: dict[str, int]


def central_figures(online_minutes: int = 10, now: dt.datetime | None = None) -> CentralFigures:
    now = now or utcnow()
    records = dict.fromkeys(ENTITIES, 0)
    for entity, count in (ReceivedRecord.select(ReceivedRecord.entity, pw.fn.COUNT(ReceivedRecord.id))
                          .group_by(ReceivedRecord.entity).tuples()):
        records[entity] = count
    errors = dict(IngestError.select(IngestError.reason, pw.fn.COUNT(IngestError.id))
                  .group_by(IngestError.reason).tuples())
    states = dict.fromkeys(DEVICE_STATES, 0)
    for state, count in Device.select(Device.state, pw.fn.COUNT(Device.id)).group_by(Device.state).tuples():
        states[state] = count
    enrolled = Device.state == "enrolled"
    online = Device.select().where(enrolled, Device.last_seen_at >= now - dt.timedelta(minutes=online_minutes))
    backlog = dict(Device.select(Device.device_id, Device.backlog).where(enrolled).tuples())
    recent = (ReceivedRecord.select(ReceivedRecord.created_at, ReceivedRecord.received_at)
              .order_by(ReceivedRecord.id.desc()).limit(LATENCY_WINDOW).tuples())
    latencies = [max(0.0, (received - created).total_seconds()) for created, received in recent]
    return CentralFigures(records, errors, states, online.count(), backlog, latencies, receivers_by_state(now))


def receivers_by_state(now: dt.datetime) -> dict[str, int]:
    from sync.central.receivers import listing

    counts = dict.fromkeys(RECEIVER_STATES, 0)
    for view in listing(now):
        counts[view.state.replace(" ", "_")] += 1
    return counts


RECEIVER_STATES = ("running", "not_responding", "stopped")
