"""``allscope bench thinlink``: bytes on the wire per analysed frame, and a busy day's drain time at 256 kbit/s.

    from sync.bench.thinlink import run_thinlink_bench
    report = run_thinlink_bench(frames=4)

A benchmark, not a test. Real parts throughout: a fleet PKI, mosquitto (mutual TLS),
``allscope central run`` on SQLite, and a device whose frames (ALL-IDB1 when
``../shared/data`` is there, else demo canvases) were analysed by the device's own
analysis worker with the shipped model, so the capture records and the cell crops are
exactly what a clinic would send. The agent (``allscope sync run``, default media
policy) runs in a network namespace behind a veth link shaped to ``rate`` in both
directions (``sync/bench/thinlink_net.py``); broker and central are on the fast side.

Measured: bytes that crossed the device's link (TLS, TCP and IP included) from the
agent's start until every record is stored once and every crop is complete at the
central, and the time that took. From them, per frame: the records' share and the
crops' share (split by their payload sizes, each with the measured wire overhead); then
a busy day -- ``day_frames`` frames of ``day_cells`` cells -- in bytes and in hours at
the goodput this link gave. Full frames (media policy "frames") are estimated the same
way from the stored frames' sizes. Skipped with one line when not root or without
``ip``/``tc``.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from device.errors import AllscopeError
from sync.bench.probes import Process, cli, wait_for_progress
from sync.bench.thinlink_net import ThinLink, unavailable

STALL_S = 180.0


def _analyse(device_dir: Path, frames: int, model: Path | None) -> dict:
    """``frames`` uploaded frames analysed by the device's worker (one patient and sample per frame)."""
    from device.bench.frames import upload_files
    from device.resources import model_in_force
    from device.services.jobs import AnalysisWorker
    from device.store.datadir import DataDir
    from device.store.records import Capture, Cell, Patient, Sample, db_proxy, open_database

    open_database(DataDir(device_dir).database)
    data = DataDir(device_dir)
    captures = []
    for number, (name, blob) in enumerate(upload_files(frames)):
        with db_proxy.atomic():
            patient = Patient.create(identifier=f"THIN-{number:04d}", name=f"Thin Link Patient {number}",
                                     date_of_birth=dt.date(1960, 1 + number % 12, 1), sex="female",
                                     referring_clinician="Dr. Remote", symptoms="fatigue", wbc=30.5,
                                     hemoglobin=8.1, platelets=60)
            sample = Sample.create(patient=patient, collected_at=dt.datetime(2026, 12, 1, 9, 0), created_by="bench")
            relative, digest = data.store_image(blob)
            captures.append(Capture.create(sample=sample, image_path=relative, sha256=digest, source="upload",
                                           original_name=name, status="queued", created_by="bench").id)
    worker = AnalysisWorker(data, model_in_force(model)).start()
    try:
        for capture_id in captures:
            worker.enqueue(capture_id)
        if not worker.wait_idle(900):
            raise AllscopeError("the analysis of the bench frames did not finish within 15 minutes")
    finally:
        worker.stop()
    done = Capture.select().where(Capture.status == "done").count()
    cells = Cell.select().count()
    crop_bytes = sum((device_dir / path).stat().st_size for (path,) in Cell.select(Cell.crop_path).tuples())
    frame_bytes = sum((device_dir / path).stat().st_size for (path,) in Capture.select(Capture.image_path).tuples())
    db_proxy.close()
    if done != len(captures):
        raise AllscopeError(f"only {done} of {len(captures)} bench frames were analysed")
    return {"frames": done, "cells": cells, "crop_bytes": crop_bytes, "frame_bytes": frame_bytes}


def _query(path: Path, sql: str) -> list[tuple]:
    import sqlite3

    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def _wait_drained(device_db: Path, central_db: Path, crops: int, processes: list[Process]) -> None:
    wait_for_progress(
        lambda: (_query(device_db, "SELECT COUNT(*) FROM outbox")[0][0],
                 _query(central_db, "SELECT COUNT(*) FROM received_file WHERE complete")[0][0]),
        lambda state: state[0] == 0 and state[1] >= crops, processes,
        lambda state: f"{state[0]} records pending, {state[1]}/{crops} crops complete; "
                      f"agent: {processes[-1].tail()}", STALL_S, interval=0.2)


def run_thinlink_bench(frames: int = 4, *, rate: str = "256kbit", day_frames: int = 200, day_cells: int = 8,
                       model: Path | None = None, json_path=None, out: TextIO | None = None) -> dict:
    """Run the benchmark (module docstring); print the figures; the report (``{"skipped": reason}`` if it cannot)."""
    from sync.fleet.broker import Broker, find_mosquitto
    from sync.fleet.pki import DEFAULT_BROKER_HOSTS, init_pki

    out = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    reason = unavailable() or (None if find_mosquitto() else "needs mosquitto (apt-get install mosquitto)")
    if reason:
        say(f"allscope bench thinlink: skipped: {reason}")
        return {"skipped": reason}
    if not 1 <= frames <= 50:
        raise AllscopeError("--frames must be 1 to 50")
    root = Path(tempfile.mkdtemp(prefix="allscope-bench-thin-"))
    link = ThinLink(rate=rate)
    processes: list[Process] = []
    broker = None
    try:
        say(f"allscope bench thinlink: {frames} analysed frames through a {rate} link (device side shaped both "
            f"ways); work in {root}")
        link.start()
        pki = init_pki(root / "pki", broker_hosts=(*DEFAULT_BROKER_HOSTS, link.host_ip))
        broker = Broker(pki, root / "broker", host=link.host_ip).start()
        address = f"{link.host_ip}:{broker.port}"
        central_dir, device_dir = root / "central", root / "device"
        central_args = ["--data-dir", str(central_dir), "--central-db", str(central_dir / "central.db"),
                        "--pki", str(pki.root)]
        cli("central", "enrol", "thin-1", "--out", str(root / "bundle"), "--broker", address, "--clinic", "Remote",
            *central_args)
        cli("device", "enrol", str(root / "bundle"), "--data-dir", str(device_dir))
        started = time.perf_counter()
        content = _analyse(device_dir, frames, model)
        record_bytes = _query(device_dir / "allscope.db", "SELECT COALESCE(SUM(LENGTH(CAST(payload AS BLOB))), 0), "
                                                         "COUNT(*) FROM outbox")[0]
        say(f"  {content['frames']} frames analysed in {time.perf_counter() - started:.0f} s: {content['cells']} "
            f"cells, {record_bytes[1]} records queued; syncing through the thin link ...")
        central = Process(["-m", "device.cli", "central", "run", *central_args, "--broker", address], root / "c.log")
        processes.append(central)
        central.wait_for_line("receiving on")
        before, started = link.bytes(), time.perf_counter()
        agent = Process(["-m", "device.cli", "sync", "run", "--data-dir", str(device_dir)], root / "agent.log",
                        prefix=link.prefix)
        processes.append(agent)
        _wait_drained(device_dir / "allscope.db", central_dir / "central.db", content["cells"], processes)
        drain_s, wire = time.perf_counter() - started, link.bytes() - before
        stored = _query(central_dir / "central.db", "SELECT COUNT(*), COUNT(DISTINCT entity || record_id || ':' || "
                                                    "version) FROM received_record")[0]
    except BaseException:
        say(f"  (work directory kept for inspection: {root})")
        root = None
        raise
    finally:
        for process in reversed(processes):
            process.stop()
        if broker is not None:
            broker.stop()
        link.stop()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
    payload = content["crop_bytes"] + record_bytes[0]
    overhead = wire / payload
    goodput = wire / drain_s
    per_frame_records = overhead * record_bytes[0] / content["frames"]
    per_cell = overhead * content["crop_bytes"] / max(1, content["cells"])
    day_bytes = day_frames * per_frame_records + day_frames * day_cells * per_cell
    frame_wire = overhead * content["frame_bytes"] / content["frames"]
    report = {
        "rate": rate, "frames": content["frames"], "cells": content["cells"], "records": record_bytes[1],
        "wire_bytes": wire, "drain_s": round(drain_s, 1), "goodput_bytes_per_s": round(goodput),
        "wire_bytes_per_frame": round(wire / content["frames"]),
        "wire_bytes_per_frame_records": round(per_frame_records), "wire_bytes_per_cell_crop": round(per_cell),
        "wire_over_payload": round(overhead, 3),
        "day": {"frames": day_frames, "cells_per_frame": day_cells, "bytes": round(day_bytes),
                "drain_h": round(day_bytes / goodput / 3600, 2),
                "with_full_frames_bytes": round(day_bytes + day_frames * frame_wire),
                "with_full_frames_drain_h": round((day_bytes + day_frames * frame_wire) / goodput / 3600, 2)},
        "stored_records": stored[0], "distinct_records": stored[1],
        "exactly_once": stored[0] == stored[1] == record_bytes[1],
    }
    _print(report, say)
    if json_path:
        from device.store.atomic import write_atomic

        write_atomic(Path(json_path), (json.dumps(report, indent=1) + "\n").encode())
    return report


def _print(report: dict, say) -> None:
    day = report["day"]
    say(f"  drained {report['frames']} frames ({report['cells']} cells, {report['records']} records) in "
        f"{report['drain_s']} s: {report['wire_bytes']} bytes on the device's link, "
        f"{report['goodput_bytes_per_s']} bytes/s")
    say(f"  bytes on the wire per analysed frame: {report['wire_bytes_per_frame']} (records "
        f"{report['wire_bytes_per_frame_records']} per frame + {report['wire_bytes_per_cell_crop']} per cell crop; "
        f"wire/payload x{report['wire_over_payload']})")
    say(f"  a busy day ({day['frames']} frames x {day['cells_per_frame']} cells): {day['bytes'] / 1e6:.1f} MB, "
        f"{day['drain_h']} h at this link's goodput (crops, the default); with full frames (media=frames): "
        f"{day['with_full_frames_bytes'] / 1e6:.0f} MB, {day['with_full_frames_drain_h']} h")
    say(f"  records at the central: {report['stored_records']} stored, "
        f"{'each exactly once' if report['exactly_once'] else 'NOT EXACTLY ONCE'}")
