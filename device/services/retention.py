"""The retention policy (issue 15): full frames pruned locally once they are safe to lose, everything a report
shows kept.

A capture's full frame may be pruned when its analysis is over (``done`` or ``discarded``: a failed or queued one
still needs its frame) and either

- ``storage.prune_after_ack``: the central has acknowledged every version of the capture (no entry of it is left
  in the sync outbox, device/store/migrations.py v2) and its sample's report is signed with no amendment open
  (a pathologist reviewing the frame needs all of it), or
- ``storage.prune_offline_days`` > 0: it was captured longer ago than that, acknowledged or not.

What stays: the capture row with both hashes (``sha256`` of the file, ``pixels_sha256``), the cells and their
crops, and the thumbnail written at analysis time (made here first when a capture from before v7 has none): the
review page, the results page and the report (HTML and PDF) draw the outlines on the thumbnail instead.

Crash-safe order: the thumbnail file first, then the row (``frame_pruned_at``, ``stored_bytes``) with its audit
event in one transaction, then the file is deleted. A crash in between leaves an orphan file, which the next run
deletes (:func:`prune` sweeps pruned captures whose file is still there); a row whose file is missing is shown as
pruned by every reader. A file shared by two captures (the same image for two samples) is deleted with the last.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass, field

from device.errors import ImageLoadError
from device.services.frame_files import encode_thumbnail
from device.services.job_store import load_stored
from device.store.datadir import DataDir, fsync_dir
from device.store.records import Capture, Report, audit, db_proxy, utcnow

log = logging.getLogger(__name__)

PRUNABLE_STATES = ("done", "discarded")
SYSTEM_USER = "allscope"


@dataclass(frozen=True)
class Policy:
    after_ack: bool = False
    offline_days: int = 0

    @classmethod
    def from_config(cls, storage) -> Policy:
        return cls(storage.prune_after_ack, storage.prune_offline_days)

    @property
    def enabled(self) -> bool:
        return self.after_ack or self.offline_days > 0


@dataclass
class PruneResult:
    pruned: list[tuple[int, str]] = field(default_factory=list)  # (capture id, reason)
    freed_bytes: int = 0
    swept: int = 0          # orphan frame files of captures pruned earlier (a crash between commit and delete)
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def summary(self, dry_run: bool = False) -> str:
        verb = "would prune" if dry_run else "pruned"
        swept = f", deleted {self.swept} left-over file{'' if self.swept == 1 else 's'}" if self.swept else ""
        return (f"{verb} {len(self.pruned)} frame{'' if len(self.pruned) == 1 else 's'} "
                f"({self.freed_bytes / 1024 / 1024:.1f} MB){swept}")


def _pending_captures() -> set[int]:
    """Captures with an entry still in the sync outbox (not acknowledged by the central)."""
    cursor = db_proxy.execute_sql("SELECT DISTINCT record_id FROM outbox WHERE entity = 'capture'")
    return {int(row[0]) for row in cursor.fetchall()}


def _signed_samples() -> set[int]:
    """Samples whose report is signed and have no amendment open (no draft)."""
    signed, drafting = set(), set()
    for sample_id, status in Report.select(Report.sample, Report.status).tuples():
        (signed if status == "signed" else drafting if status == "draft" else set()).add(sample_id)
    return signed - drafting


def candidates(policy: Policy, now: dt.datetime | None = None) -> list[tuple[Capture, str]]:
    """The captures whose full frame may be pruned now, with the reason, oldest first."""
    if not policy.enabled:
        return []
    now = now or utcnow()
    pending = _pending_captures() if policy.after_ack else set()
    signed = _signed_samples() if policy.after_ack else set()
    cutoff = now - dt.timedelta(days=policy.offline_days) if policy.offline_days else None
    found = []
    for capture in (Capture.select().where(Capture.frame_pruned_at.is_null(), Capture.status.in_(PRUNABLE_STATES))
                    .order_by(Capture.id)):
        if policy.after_ack and capture.id not in pending and capture.sample_id in signed:
            found.append((capture, "acknowledged by the central, report signed"))
        elif cutoff is not None and capture.created_at < cutoff:
            found.append((capture, f"older than {policy.offline_days} days"))
    return found


def _ensure_thumbnail(data: DataDir, capture: Capture) -> str:
    """The capture's thumbnail path, made from the frame first when it has none (captures from before v7)."""
    if capture.thumb_path and data.exists(capture.thumb_path):
        return capture.thumb_path
    try:
        rgb = load_stored(data, capture.image_path)
    except ImageLoadError:
        return capture.thumb_path  # nothing to make it from: the frame is missing already
    return data.store_thumb(capture.id, encode_thumbnail(rgb))


def _still_used(capture: Capture) -> bool:
    """Another capture keeps the same frame file (the same image for another sample) unpruned."""
    return Capture.select().where(Capture.image_path == capture.image_path, Capture.id != capture.id,
                                  Capture.frame_pruned_at.is_null()).exists()


def _delete(data: DataDir, relative: str) -> int:
    try:
        path = data.absolute(relative)
        size = path.stat().st_size
        path.unlink()
    except (OSError, ValueError):
        return 0
    fsync_dir(path.parent)
    return size


def prune_capture(data: DataDir, capture: Capture, reason: str, username: str = SYSTEM_USER) -> int:
    """Prune one capture's full frame (thumbnail, then row and audit event, then the file); the bytes freed."""
    thumb = _ensure_thumbnail(data, capture)
    frame_bytes = data.stored_size(capture.image_path)
    now = utcnow()
    with db_proxy.atomic("IMMEDIATE"):
        fresh = Capture.get_by_id(capture.id)
        if fresh.frame_pruned_at is not None:
            return 0
        kept = max(0, fresh.stored_bytes - frame_bytes) if fresh.stored_bytes else 0
        Capture.update(frame_pruned_at=now, thumb_path=thumb, stored_bytes=kept).where(Capture.id == fresh.id) \
            .execute()
        audit("prune_frame", "capture", fresh.id, username=username, detail=reason,
              before={"image_path": fresh.image_path, "sha256": fresh.sha256, "bytes": frame_bytes},
              after={"frame_pruned_at": now.isoformat(), "thumb_path": thumb})
    if _still_used(capture):
        return 0
    return _delete(data, capture.image_path)


def sweep(data: DataDir) -> int:
    """Delete the frame files of captures already pruned (a crash after the commit left them); how many."""
    deleted = 0
    for capture in Capture.select().where(Capture.frame_pruned_at.is_null(False)):
        if data.exists(capture.image_path) and not _still_used(capture):
            deleted += 1 if _delete(data, capture.image_path) else 0
    return deleted


def prune(data: DataDir, policy: Policy, *, dry_run: bool = False, username: str = SYSTEM_USER,
          now: dt.datetime | None = None) -> PruneResult:
    """Prune every candidate (or, ``dry_run``, only say which); each pruning audited."""
    result = PruneResult()
    for capture, reason in candidates(policy, now):
        if dry_run:
            result.pruned.append((capture.id, reason))
            result.freed_bytes += data.stored_size(capture.image_path)
            continue
        try:
            result.freed_bytes += prune_capture(data, capture, reason, username)
        except OSError as error:  # a thumbnail that cannot be written: the frame stays
            result.skipped.append((capture.id, str(error)))
            continue
        result.pruned.append((capture.id, reason))
    if not dry_run:
        result.swept = sweep(data)
    return result


class PruneTimer:
    """Runs :func:`prune` every ``interval_hours`` in the device service (a daemon thread, its own connection)."""

    def __init__(self, data: DataDir, policy: Policy, interval_hours: float):
        self.data, self.policy, self.interval = data, policy, interval_hours * 3600.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="allscope-prune", daemon=True)

    def start(self) -> PruneTimer:
        if self.policy.enabled:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            db_proxy.connect(reuse_if_open=True)
            try:
                result = prune(self.data, self.policy)
                if result.pruned or result.swept:
                    log.info("retention: %s", result.summary())
            except Exception:  # a failed run is logged; the next one tries again
                log.exception("retention: pruning failed")
            finally:
                if not db_proxy.is_closed():
                    db_proxy.close()
