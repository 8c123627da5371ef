"""The device's figures for ``/metrics``: captures by status, analysis latency, sync outbox backlog, disk free.

    figures = device_figures(appliance.database, appliance.data.root)

Read from the database at each scrape (nothing kept in memory, so a restart
loses nothing and several web server threads agree). Analysis latency is the
time from a capture being stored to its analysis being written
(``analysed_at - created_at``: queueing included, as a technician waits it),
over the most recent ``LATENCY_WINDOW`` analysed captures.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import peewee as pw

from device.store.records import CAPTURE_STATES, Capture

LATENCY_WINDOW = 1000
LATENCY_BUCKETS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass(frozen=True)
class DeviceFigures:
    captures_by_status: dict[str, int]
    analysis_latencies_s: list[float]
    outbox_backlog: int | None      # None: this database has no outbox (sync never set up)
    disk_free_bytes: int
    disk_total_bytes: int


def device_figures(database: pw.Database, data_root: Path) -> DeviceFigures:
    counts = dict.fromkeys(CAPTURE_STATES, 0)
    for status, count in (Capture.select(Capture.status, pw.fn.COUNT(Capture.id))
                          .group_by(Capture.status).tuples()):
        counts[status] = count
    recent = (Capture.select(Capture.created_at, Capture.analysed_at)
              .where(Capture.analysed_at.is_null(False)).order_by(Capture.analysed_at.desc())
              .limit(LATENCY_WINDOW).tuples())
    latencies = [max(0.0, (analysed - created).total_seconds()) for created, analysed in recent]
    backlog = None
    if "outbox" in database.get_tables():
        backlog = int(database.execute_sql('SELECT COUNT(*) FROM "outbox"').fetchone()[0])
    usage = shutil.disk_usage(data_root)
    return DeviceFigures(counts, latencies, backlog, usage.free, usage.total)
