"""What the status page shows: model, camera, disk, database, counts, recent analyses and audit events.

Everything comes from the running :class:`~device.services.appliance.Appliance`
through public accessors: the model file in force, the worker's state
(``alive``, ``backend``, ``queue_length``, ``loaded_model`` …) and the grabber's
(``status``, ``camera``). A worker or camera that is absent (tests, a device
still starting) is shown as "not started" / "not running" rather than failing the page.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peewee as pw

from device.services.appliance import Appliance
from device.services.disk_guard import DiskGuard
from device.store.datadir import DataDir
from device.store.records import CAPTURE_STATES, AuditEvent, Capture, Patient, Sample

LOW_DISK_BYTES = 1 << 30     # warn below 1 GB free ...
LOW_DISK_FRACTION = 0.10     # ... or below 10 % free
_model_cache: dict[tuple, Any] = {}  # (path, mtime, size) -> ModelInfo: hashing 1 MB on every view is waste


@dataclass
class Check:
    """One line of the status page: a label, a value, and whether it needs attention."""

    label: str
    value: str
    level: str = "ok"  # ok | warn | error | info


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"


def _get(obj: Any, name: str) -> Any:
    """A property of a running service; None when reading it fails (a half-started service must not break
    the page)."""
    try:
        return getattr(obj, name)
    except Exception:  # noqa: BLE001
        return None


def model_checks(device: Appliance) -> list[Check]:
    from device.errors import AllscopeError
    from device.inference.model_info import read_model_info

    path = device.model_path
    checks = [Check("Model file", str(path), "info")]
    try:
        try:
            stat = path.stat()
            key = (str(path), stat.st_mtime_ns, stat.st_size)
        except OSError:
            key = None  # read_model_info below names the reason in one line
        info = _model_cache.get(key) if key else None
        if info is None:
            info = read_model_info(path)
            if key:
                _model_cache.clear()
                _model_cache[key] = info
    except AllscopeError as error:
        checks.append(Check("Model", str(error), "error"))
        info = None
    if info is not None:
        size = info.provenance.get("input_size")
        checks += [Check("Model id", f"sha256 {info.short_id} · {human_bytes(info.size_bytes)}", "info"),
                   Check("Input size", f"{size} × {size} px" if size else "not stated in the model", "info")]
    worker = device.worker
    if worker is None:
        started = device.start_workers
        return checks + [Check("Analysis worker", "not running" if started else "not started (workers are off)",
                               "warn" if started else "info")]
    alive = _get(worker, "alive")
    checks.append(Check("Analysis worker", "running" if alive in (None, True) else "stopped",
                        "ok" if alive in (None, True) else "error"))
    backend = _get(worker, "backend")
    if backend is None:
        checks.append(Check("Inference backend", "not loaded yet (the model loads with the first analysis)",
                            "info"))
    else:
        fallback = _get(worker, "fallback_reason")
        checks.append(Check("Inference backend", f"{backend}" + (f" (fallback: {fallback})" if fallback else ""),
                            "warn" if fallback else "ok"))
    problem = _get(worker, "model_problem")
    if isinstance(problem, str) and problem:
        checks.append(Check("Model", f"cannot be loaded, analyses fail: {problem}", "error"))
    checks += inference_checks(worker)
    loaded = _get(worker, "loaded_model")  # the ModelInfo of the classifier in memory (None before the first job)
    if info is not None and loaded is not None and loaded.sha256 != info.sha256:
        checks.append(Check("Loaded model", f"sha256 {loaded.sha256[:12]} differs from the file: restart to load "
                                            f"the configured model", "warn"))
    pending = _get(worker, "queue_length")
    if pending is not None:
        checks.append(Check("Analyses waiting", str(pending), "info"))
    return checks


def inference_checks(worker: Any) -> list[Check]:
    """Measured latency and watchdog restarts of the analysis worker (device/services/jobs.py), when it reports them."""
    checks = []
    latency = _get(worker, "latency_ms")
    if isinstance(latency, (int, float)):
        samples = _get(worker, "latency_samples")
        over = f" (median of the last {samples} frames)" if isinstance(samples, int) else ""
        checks.append(Check("Measured latency", f"{latency:.1f} ms per cell{over}", "ok"))
    restarts = _get(worker, "watchdog_restarts")
    if isinstance(restarts, int):
        seconds = _get(worker, "watchdog_seconds")
        limit = f"deadline {seconds:.0f} s per frame" if isinstance(seconds, (int, float)) else "off"
        problem = _get(worker, "watchdog_problem")
        text = f"{restarts} restart{'s' if restarts != 1 else ''} ({limit})" + (f"; last: {problem}" if problem else "")
        checks.append(Check("Inference watchdog", text, "warn" if restarts else "ok"))
    return checks


def camera_checks(device: Appliance) -> list[Check]:
    grabber = device.grabber
    settings = device.settings
    kind = settings.camera_kind
    source = settings.camera_source or ("bundled demo frames" if kind == "replay" else "default device")
    checks = [Check("Camera setting", f"{kind} · {source}", "info")]
    if grabber is None:
        problem = device.camera_problem
        return checks + [Check("Camera", str(problem) if problem else "not running", "warn")]
    name = _get(_get(grabber, "camera"), "name")
    if isinstance(name, str):
        checks.append(Check("Camera backend", name, "info"))
    status = _get(grabber, "status")
    running = _get(grabber, "running")
    if isinstance(status, str):
        checks.append(Check("Camera", "delivering frames" if status == "ok" else status,
                            "ok" if status == "ok" else "warn"))
    else:
        checks.append(Check("Camera", "running" if running in (None, True) else "stopped",
                            "ok" if running in (None, True) else "warn"))
    return checks


def disk_checks(data: DataDir, guard: DiskGuard | None = None) -> list[Check]:
    usage = shutil.disk_usage(data.root)
    free_fraction = usage.free / usage.total if usage.total else 0.0
    low = usage.free < LOW_DISK_BYTES or free_fraction < LOW_DISK_FRACTION
    checks = [Check("Data directory", str(data.root), "info"),
              Check("Free disk space", f"{human_bytes(usage.free)} of {human_bytes(usage.total)} "
                                       f"({100 * free_fraction:.0f} % free)" +
                    (": running low, archive or export old records" if low else ""), "warn" if low else "ok")]
    if guard is not None:  # issue 15: days left at the recent rate, and the reserve that refuses captures
        state = guard.state()
        rate = (f"{human_bytes(state.bytes_per_day)} a day over the last 7 days, about "
                f"{state.days_left:.0f} days left" if state.days_left is not None else "no capture in the last 7 days")
        checks.append(Check("Space left", f"{rate}; captures refused below {human_bytes(state.reserve_bytes)}" +
                            (f": {state.message}" if state.message else ""),
                            {"full": "error", "warn": "warn"}.get(state.level, "ok")))
    return checks


def database_checks(database: pw.SqliteDatabase, data: DataDir) -> list[Check]:
    size = sum(p.stat().st_size for p in (data.database, data.database.with_name(data.database.name + "-wal"))
               if p.exists())
    # quick_check: the same page-level checks as integrity_check without verifying index contents (fast).
    rows = [r[0] for r in database.execute_sql("PRAGMA quick_check(5)").fetchall()]
    ok = rows == ["ok"]
    return [Check("Database size", human_bytes(size), "info"),
            Check("Database check", "ok" if ok else "; ".join(rows), "ok" if ok else "error")]


def counts() -> dict[str, int]:
    result = {"patients": Patient.select().count(), "samples": Sample.select().count()}
    by_status = dict(Capture.select(Capture.status, pw.fn.COUNT(Capture.id)).group_by(Capture.status).tuples())
    for state in CAPTURE_STATES:
        result[f"captures {state}"] = by_status.get(state, 0)
    return result


def recent_analyses(limit: int = 10) -> list[Capture]:
    return list(Capture.select().where(Capture.analysed_at.is_null(False))
                .order_by(Capture.analysed_at.desc()).limit(limit))


def recent_audit(limit: int = 20) -> list[AuditEvent]:
    return list(AuditEvent.select().order_by(AuditEvent.id.desc()).limit(limit))
