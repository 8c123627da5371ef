"""What a device says about itself in its status message: software version and the model it last analysed with.

    software_version()   # "0.1.0": the installed allscope package ("" when run from a tree never installed)
    latest_model()       # {"id": short id, "name": ..., "version": ...} of the newest analysed capture, or None
    StatusPacer          # when to publish it: every status_interval_s, and soon after the backlog changed
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata

from device.store.records import Capture


def software_version() -> str:
    try:
        return metadata.version("allscope")
    except metadata.PackageNotFoundError:
        return ""


def latest_model() -> dict | None:
    row = (Capture.select(Capture.model_identity).where(Capture.model_identity.is_null(False))
           .order_by(Capture.analysed_at.desc(nulls="LAST"), Capture.id.desc()).first())
    identity = row.model_identity if row is not None else None
    if not isinstance(identity, dict):
        return None
    return {"id": identity.get("short_id") or "", "name": identity.get("name") or "",
            "version": identity.get("version") or ""}


class StatusPacer:
    """When the retained status goes out: every ``interval_s`` (it says "online"), and as soon as the outbox
    backlog differs from the one last published, looked at no more often than every ``check_s`` (one COUNT),
    so the central's devices page follows the backlog within seconds instead of ``interval_s`` (issue 16)."""

    def __init__(self, interval_s: float, check_s: float = 2.0):
        self.interval_s, self.check_s = interval_s, check_s
        self.sent_at = self.checked_at = float("-inf")
        self.published: int | None = None

    def due(self, now: float, count: Callable[[], int]) -> int | None:
        """The backlog to publish now, or None (``count`` is called only when it is time to look)."""
        periodic = now - self.sent_at >= self.interval_s
        if not periodic and now - self.checked_at < self.check_s:
            return None
        self.checked_at = now
        backlog = count()
        return backlog if periodic or backlog != self.published else None

    def sent(self, now: float, backlog: int) -> None:
        self.sent_at, self.checked_at, self.published = now, now, backlog
