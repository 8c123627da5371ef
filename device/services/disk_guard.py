"""The disk-space guard (issue 15): days of space left at the recent rate of writes, and a clean refusal of a
capture before the database is at risk.

The rate is what the captures of the last :data:`WINDOW_DAYS` days keep on disk (``Capture.stored_bytes``: the
frame file, its crops and thumbnail) plus their share of the database (its size over the number of captures), per
day of that window (at least one day). ``days_left`` is the free space above the reserve over that rate. A capture
is refused (:class:`DiskFull`, HTTP 507, one line) once the free space is below ``storage.reserve_mb``: the
reserve is what SQLite needs to commit, checkpoint its WAL and migrate, so the records stay safe when the
images have filled the card.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass

from device.errors import InsufficientStorage
from device.store.datadir import DataDir
from device.store.records import Capture, utcnow

WINDOW_DAYS = 7
MB = 1024 * 1024
DEFAULT_RESERVE_MB = 512
DEFAULT_WARN_DAYS = 14


class DiskFull(InsufficientStorage):
    """A capture refused: the data disk is at its reserve."""


@dataclass(frozen=True)
class DiskState:
    free_bytes: int
    reserve_bytes: int
    bytes_per_day: float       # 0: no capture in the window
    days_left: float | None    # None: no rate to go by
    level: str                 # "ok" | "warn" | "full"
    message: str               # one line, "" when ok

    def as_dict(self) -> dict:
        return {"free_mb": round(self.free_bytes / MB, 1), "reserve_mb": round(self.reserve_bytes / MB, 1),
                "mb_per_day": round(self.bytes_per_day / MB, 2),
                "days_left": None if self.days_left is None else round(self.days_left, 1),
                "level": self.level, "message": self.message}


class DiskGuard:
    def __init__(self, data: DataDir, reserve_mb: int = DEFAULT_RESERVE_MB, warn_days: int = DEFAULT_WARN_DAYS):
        self.data = data
        self.reserve_bytes = int(reserve_mb) * MB
        self.warn_days = warn_days

    @classmethod
    def from_config(cls, data: DataDir, storage) -> DiskGuard:
        return cls(data, storage.reserve_mb, storage.warn_days)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.data.root).free

    def bytes_per_day(self, now: dt.datetime | None = None) -> float:
        """Bytes kept per day by the captures of the last WINDOW_DAYS days, database share included."""
        now = now or utcnow()
        since = now - dt.timedelta(days=WINDOW_DAYS)
        recent = list(Capture.select(Capture.stored_bytes, Capture.created_at).where(Capture.created_at >= since)
                      .tuples())
        if not recent:
            return 0.0
        total = Capture.select().count()
        database = sum(self.data.stored_size(name) for name in ("allscope.db", "allscope.db-wal"))
        kept = sum(size for size, _at in recent) + len(recent) * database / max(1, total)
        span = max(1.0, (now - min(at for _size, at in recent)).total_seconds() / 86400.0)
        return kept / span

    def state(self, now: dt.datetime | None = None) -> DiskState:
        free = self.free_bytes()
        rate = self.bytes_per_day(now)
        days = max(0.0, (free - self.reserve_bytes) / rate) if rate > 0 else None
        if free < self.reserve_bytes:
            level = "full"
            message = self._refusal(free)
        elif days is not None and days < self.warn_days:
            level = "warn"
            message = (f"The data disk fills in about {days:.0f} days at the recent rate "
                       f"({rate / MB:.0f} MB a day, {(free - self.reserve_bytes) / MB:.0f} MB left above the "
                       "reserve): free space or prune frames (allscope storage prune)")
        else:
            level, message = "ok", ""
        return DiskState(free, self.reserve_bytes, rate, days, level, message)

    def _refusal(self, free: int) -> str:
        return (f"Capture refused: only {free / MB:.0f} MB free on the data disk, below the "
                f"{self.reserve_bytes / MB:.0f} MB kept for the database: free space or prune frames "
                "(allscope storage prune)")

    def check_room(self) -> None:
        """DiskFull (one line) when the free space is below the reserve."""
        free = self.free_bytes()
        if free < self.reserve_bytes:
            raise DiskFull(self._refusal(free))
