"""`allscope doctor [--config FILE] [--json]`: is this appliance fit to run, and if not, what to fix.

Each check prints one line, ``PASS``, ``WARN``, ``FAIL`` or ``SKIP``, with what it found and,
when it is not a pass, what to do about it. The exit status is 0 when nothing FAILs, 1 otherwise,
so an installer or a monitoring timer can run it. Checks that touch hardware (camera, delegate)
run under a time limit: a hung driver is reported, it does not hang the doctor.

The doctor reads; it never creates the data directory, the database or a certificate. The
database is opened read-only (a doctor run as root must not leave root-owned ``-shm`` files
that the service user then cannot open).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sqlite3
import statistics
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from device.cli.doctor_base import (  # noqa: F401  (the names tests and callers use, one import away)
    FAIL,
    PASS,
    SKIP,
    WARN,
    Context,
    Result,
    load_settings,
    one_line,
    with_timeout,
)
from device.cli.doctor_sync import check_broker, check_broker_files, check_certificates, mqtt_probe  # noqa: F401
from device.errors import AllscopeError

LOW_DISK_BYTES = 1 << 30      # warn below 1 GB free ...
LOW_DISK_FRACTION = 0.10      # ... or below 10 % free
MIN_YEAR = 2025               # a Pi without an RTC battery boots in 1970 (or at the last fake-hwclock save)
LATENCY_RUNS = 20
CAMERA_TIMEOUT_S = 15.0


# --- checks ----------------------------------------------------------------------------------------------

def check_config(ctx: Context) -> Result:
    return Result("config", PASS, ctx.source)


def check_camera(ctx: Context) -> Result:
    from device.camera.backends import make_camera

    camera_config = ctx.config.camera
    kind, source = camera_config.backend, camera_config.source or None

    def grab():
        camera = make_camera(kind, source)
        camera.open()
        try:
            return camera.read()
        finally:
            camera.close()

    where = f"{kind} {source or '(default source)'}"
    try:
        frame = with_timeout(grab, CAMERA_TIMEOUT_S, f"camera {where}")
    except AllscopeError as error:
        return Result("camera", FAIL, one_line(error), "check camera.backend and camera.source in the "
                      "configuration (allscope camera list shows what is attached); a running allscope-device "
                      "service may hold the camera")
    height, width = frame.shape[:2]
    return Result("camera", PASS, f"{where}: one frame {width}x{height}", data={"width": width, "height": height})


def check_model(ctx: Context) -> Result:
    from device.inference.classifier import CellClassifier
    from device.inference.delegates import DelegateConfig

    path = ctx.model_path
    try:
        ctx.classifier = CellClassifier.load(path, DelegateConfig(kind="cpu", num_threads=ctx.config.inference.threads))
    except AllscopeError as error:
        return Result("model", FAIL, one_line(error), "reinstall the model file or point inference.model at "
                      "the shipped models/allscope_blast_int8.tflite")
    info, size = ctx.classifier.info, ctx.classifier.input_size
    return Result("model", PASS, f"{path.name} sha256 {info.short_id}, input {size}x{size} px, labels "
                  f"{'/'.join(info.labels)}", data={"path": str(path), "sha256": info.sha256, "input_size": size})


def measure_latency(classifier, runs: int = LATENCY_RUNS) -> float:
    """Median milliseconds of ``runs`` single-crop inferences, after one warm-up."""
    import numpy as np

    size = classifier.input_size
    crop = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    classifier.predict(crop)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        classifier.predict(crop)
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def check_delegate(ctx: Context) -> Result:
    from device.inference.classifier import CellClassifier
    from device.inference.delegates import DelegateConfig

    if ctx.classifier is None:
        return Result("delegate", SKIP, "the model did not load")
    settings = ctx.config.inference
    try:
        delegate = DelegateConfig.from_section(settings)
        classifier = ctx.classifier if delegate.kind == "cpu" else \
            with_timeout(lambda: CellClassifier.load(ctx.model_path, delegate), settings.watchdog_seconds,
                          f"loading the {delegate.kind} delegate")
        latency = with_timeout(lambda: measure_latency(classifier), settings.watchdog_seconds,
                                f"inference on {classifier.backend}")
    except AllscopeError as error:
        return Result("delegate", FAIL, one_line(error), "check the accelerator (plugged in, udev rule, "
                      "driver) or set inference.delegate = \"cpu\"")
    detail = f"{classifier.backend}: median {latency:.2f} ms per inference ({LATENCY_RUNS} runs)"
    data = {"backend": classifier.backend, "latency_ms": round(latency, 3)}
    if classifier.fallback_reason:
        return Result("delegate", WARN, f"{detail}; configured {settings.delegate} not in use: "
                      f"{classifier.fallback_reason}", "connect the accelerator and check its library and "
                      "compiled model (see firmware_config/), or set inference.delegate = \"cpu\"", data)
    return Result("delegate", PASS, detail, data=data)


def check_disk(ctx: Context) -> Result:
    existing = ctx.data_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    usage = shutil.disk_usage(existing)
    fraction = usage.free / usage.total if usage.total else 0.0
    detail = f"{ctx.data_dir}: {usage.free / 1e9:.1f} GB free of {usage.total / 1e9:.1f} GB ({100 * fraction:.0f} %)"
    data = {"free_bytes": usage.free, "total_bytes": usage.total}
    if not ctx.data_dir.is_dir():
        return Result("disk", WARN, f"{detail}; the data directory does not exist yet",
                      "run install.sh, or start allscope serve once with this configuration", data)
    if usage.free < LOW_DISK_BYTES or fraction < LOW_DISK_FRACTION:
        return Result("disk", WARN, detail, "free space: move old backups off the device or archive old records",
                      data)
    return Result("disk", PASS, detail, data=data)


def ntp_synchronised() -> bool | None:
    """timedatectl's NTPSynchronized (None when it cannot say: no systemd, no timedatectl)."""
    if not shutil.which("timedatectl"):
        return None
    try:
        answer = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"], capture_output=True,
                                text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = answer.stdout.strip().lower()
    return {"yes": True, "no": False}.get(value) if answer.returncode == 0 else None


def check_clock(ctx: Context, now: dt.datetime | None = None, ntp: Callable[[], bool | None] = ntp_synchronised
                ) -> Result:
    now = now or dt.datetime.now(dt.timezone.utc)
    stamp = now.strftime("%Y-%m-%d %H:%M UTC")
    if now.year < MIN_YEAR:
        return Result("clock", FAIL, f"the clock says {stamp}", "set the time (timedatectl set-time, or connect "
                      "the network with NTP on: timedatectl set-ntp true); records and certificates depend on it")
    synced = ntp()
    if synced is False:
        return Result("clock", WARN, f"{stamp}, not NTP-synchronised", "enable NTP (timedatectl set-ntp true) "
                      "and let the device reach a time server")
    return Result("clock", PASS, stamp + (", NTP-synchronised" if synced else ", NTP state unknown"))


AT_REST_MARKER = "at-rest.json"  # device/store/atrest.py: its presence makes a data directory an encrypted one


def open_database_readonly(path: Path, storage=None):
    """A read-only DB-API connection; keyed through device.store.atrest when the data directory is encrypted."""
    if (path.parent / AT_REST_MARKER).exists():
        from device.store import atrest

        atrest.configure(storage)
        return atrest.connect(path)
    return sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)


def check_database(ctx: Context) -> Result:
    path = ctx.data_dir / "allscope.db"
    if not path.exists():
        return Result("database", WARN, f"{path} does not exist yet", "start allscope serve once (it creates "
                      "and migrates the database), or restore a backup")
    try:
        connection = open_database_readonly(path, ctx.config.storage)
        try:
            rows = [row[0] for row in connection.execute("PRAGMA integrity_check(10)").fetchall()]
        finally:
            connection.close()
    except (sqlite3.Error, AllscopeError) as error:
        return Result("database", FAIL, f"{path}: {one_line(error)}", "if the key is right and the file is "
                      "damaged, restore the last backup (allscope backup list, allscope backup restore)")
    if rows != ["ok"]:
        return Result("database", FAIL, f"{path}: integrity_check: {'; '.join(rows)[:300]}",
                      "stop the service and restore the last backup (allscope backup restore)")
    return Result("database", PASS, f"{path}: integrity_check ok")


CHECKS: tuple[Callable[[Context], Result], ...] = (
    check_config, check_camera, check_model, check_delegate, check_disk, check_clock, check_database,
    check_certificates, check_broker, check_broker_files)


def run_checks(config_path: str | None) -> list[Result]:
    try:
        config, source = load_settings(config_path)
    except Exception as error:  # noqa: BLE001 - a config error FAILs; nothing else can then be trusted
        problems = getattr(error, "problems", None) or [str(error)]
        results = [Result("config", FAIL, one_line(problem), "fix the file (allscope config check lists every "
                          "problem with its line)") for problem in problems]
        return results + [Result(c.__name__.removeprefix("check_"), SKIP, "the configuration is invalid")
                          for c in CHECKS[1:]]
    ctx = Context(config, source)
    results = []
    for check in CHECKS:
        name = check.__name__.removeprefix("check_")
        try:
            results.append(check(ctx))
        except Exception as error:  # noqa: BLE001 - one broken check must not hide the others
            results.append(Result(name, FAIL, f"the check itself failed: {type(error).__name__}: "
                                  f"{one_line(error)}", "report this with the device log"))
    return results


def cmd_doctor(args: argparse.Namespace) -> int:
    results = run_checks(args.config)
    failed = any(r.status == FAIL for r in results)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [asdict(r) for r in results]}, indent=1))
    else:
        for result in results:
            print(result.line(), flush=True)
        counts = {s: sum(r.status == s for r in results) for s in (PASS, WARN, FAIL, SKIP)}
        print(", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n) +
              (": fix the FAIL lines above" if failed else ""))
    return 1 if failed else 0


def register_command(sub) -> None:
    """Add `allscope doctor` to the top-level subparsers."""
    parser = sub.add_parser("doctor", help="check camera, model, delegate, disk, clock, database, certificates "
                            "and broker; print what to fix (exit 1 on a FAIL)")
    parser.add_argument("--config", default=None, help="configuration file (default: $ALLSCOPE_CONFIG, "
                        "else /etc/allscope/allscope.toml if present, else built-in defaults)")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.set_defaults(func=cmd_doctor)
