"""``allscope bench sync``: queued records through a local TLS mosquitto to the central server, timed.

    from sync.bench.run import run_sync_bench
    report = run_sync_bench(records=10_000)

A benchmark, not a timed test. For each mode (envelope encryption on, then off) it
builds everything from nothing in a temporary directory, with the real parts:
a fleet PKI, mosquitto with the shipped configuration (mutual TLS, ACL) on a free
loopback port, a SQLite central database with the device enrolled by
``allscope central enrol`` / ``allscope device enrol``, and a device database in
which ``records`` patients (about 1 KB each, with clinical notes) are written
through the device's models in big transactions, so the SQLite triggers queue
``records`` outbox entries. Then ``allscope central run`` and the agent start as
processes and two phases are measured:

* backlog: from the agent's start until the outbox is empty and the central holds
  every record: records/s, and per record ``received_at - created_at`` (central
  store time minus the outbox entry's time), which is mostly time spent waiting in
  the queue; the central's steady ingest rate (first to last store) is given too;
* live: afterwards, records written one by one at a modest rate (default 50/s
  for 5 s); per record central ``received_at`` minus the device's change time
  (the trigger's timestamp): what a user at the microscope waits for.

Checks at the end: the central holds each (device, entity, record_id, version)
exactly once with the device's content hash, the outbox is empty, and no
ingestion errors. The encryption-off run seals with ``server_public=None`` and
the central runs with ``--allow-plaintext``; ``allscope sync run`` has no such
switch (it must never send plaintext), so that run's agent is started through
``sync.bench.probes.agent_main``: the same ``SyncAgent``, only its sealer
swapped. The encrypted run uses the real ``allscope sync run``. During the live
phase a second subscriber with the central's certificate records what the
broker sees, to show which run's envelopes it could read.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

import numpy as np

from device.errors import AllscopeError
from sync.bench.probes import Process, WireObserver, cli, cpu_seconds, envelope_costs, wait_for_progress

TARGET_RECORDS_PER_S = 1000.0  # issue 15 (was 500 before batch envelopes)
STALL_S = 90.0          # no progress for this long: the run is broken, stop with one line
BATCH = 1000            # patients per transaction when queueing the backlog
MODE_NAMES = {True: "encrypted", False: "plaintext"}
NOTES = ("Referred for unexplained fatigue and recurrent infections over {w} weeks. Pallor on examination, "
         "no palpable lymphadenopathy, spleen tip palpable. Previous full blood count {m} months ago within "
         "normal limits. Peripheral smear requested after automated differential flagged atypical cells "
         "(WBC {wbc:.1f} x10^9/L). Medication: none regular; paracetamol as needed. Family history "
         "unremarkable. Patient informed that the smear is reviewed by a pathologist; AI flags are decision "
         "support only. Follow-up in haematology clinic if blasts are confirmed; repeat count in {d} days "
         "otherwise. Sample {n} taken at {h:02d}:{mi:02d}, transported at room temperature, stained within "
         "two hours. Contact: ward {ward}, extension {ext}.")


# --- device records -----------------------------------------------------------------------------------

def _patient(number: int, tag: str) -> dict:
    """A realistic patient row (~1 KB as the trigger's JSON) that differs from every other one."""
    wbc = 4.0 + (number * 7919 % 900) / 10
    return dict(identifier=f"BENCH-{tag}-{number:06d}", name=f"Bench Patient {number} Ōkubo-Grünwald",
                date_of_birth=dt.date(1940 + number % 70, 1 + number % 12, 1 + number % 28),
                sex=("female", "male", "unknown")[number % 3], referring_clinician=f"Dr. Clinician {number % 97}",
                symptoms="fatigue, pallor, recurrent infections, easy bruising", wbc=wbc,
                hemoglobin=7.0 + number % 60 / 10, platelets=float(20 + number % 300),
                notes=NOTES.format(w=1 + number % 12, m=1 + number % 24, wbc=wbc, d=3 + number % 11, n=number,
                                   h=number % 24, mi=number % 60, ward=1 + number % 30, ext=2000 + number % 8000))


def _queue_backlog(database: Path, records: int, tag: str) -> dict[tuple, str]:
    """Write ``records`` patients through the models (the triggers queue them); returns key -> payload sha256."""
    from device.store.records import Patient, db_proxy, open_database
    from sync.agent.outbox import OutboxEntry

    open_database(database)
    for start in range(0, records, BATCH):
        with db_proxy.atomic():
            for number in range(start, min(records, start + BATCH)):
                Patient.create(**_patient(number, tag))
    return {("patient", e.record_id, e.version): e.content_sha256 for e in OutboxEntry.select()}


def _write_live(count: int, rate: float, tag: str, start: int) -> dict[tuple, str]:
    """One patient per transaction at ``rate`` per second (database already open); key -> payload sha256."""
    from device.store.records import Patient, db_proxy
    from sync.agent.outbox import OutboxEntry

    written: dict[tuple, str] = {}
    began = time.perf_counter()
    for index in range(count):
        delay = began + index / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        with db_proxy.atomic():
            patient = Patient.create(**_patient(start + index, tag))
            entry = OutboxEntry.get((OutboxEntry.entity == "patient") & (OutboxEntry.record_id == patient.id))
            written[("patient", entry.record_id, entry.version)] = entry.content_sha256
    return written


# --- reading both databases (plain sqlite3, read-only) ------------------------------------------------

def _query(path: Path, sql: str, params=()) -> list[tuple]:
    if not path.exists():
        return []
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def _count(path: Path, sql: str) -> int:
    rows = _query(path, sql)
    return rows[0][0] if rows else 0


def _wait_synced(device_db: Path, central_db: Path, total: int, processes: list[Process]) -> None:
    """Until the outbox is empty and the central holds ``total`` records; one line if it stalls or dies."""
    wait_for_progress(
        lambda: (_count(device_db, "SELECT COUNT(*) FROM outbox"),
                 _count(central_db, "SELECT COUNT(*) FROM received_record")),
        lambda state: state[0] == 0 and state[1] >= total, processes,
        lambda state: f"{state[0]} pending on the device, {state[1]}/{total} at the central; "
                      f"agent: {processes[1].tail()}", STALL_S)


def _parse_time(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def _latency_ms(rows: list[tuple]) -> dict:
    """p50/p95/max of received_at - created_at over (created_at, received_at) rows."""
    if not rows:
        return {"p50": None, "p95": None, "max": None}
    ms = np.array([(_parse_time(r) - _parse_time(c)).total_seconds() * 1000 for c, r in rows])
    return {"p50": round(float(np.percentile(ms, 50)), 1), "p95": round(float(np.percentile(ms, 95)), 1),
            "max": round(float(ms.max()), 1)}


# --- one mode -----------------------------------------------------------------------------------------

def _run_mode(root: Path, pki, encrypt: bool, records: int, live_rate: float, live_seconds: float,
              say) -> dict:
    from sync.fleet.broker import Broker

    name = MODE_NAMES[encrypt]
    device_id = f"bench-{name}"
    work = root / name
    central_dir, device_dir = work / "central", work / "device"
    central_db, device_db = central_dir / "central.db", device_dir / "allscope.db"
    work.mkdir(parents=True)
    broker = Broker(pki, work / "broker").start()
    processes: list[Process] = []
    try:
        address = f"{broker.host}:{broker.port}"
        central_args = ["--data-dir", str(central_dir), "--central-db", str(central_db), "--pki", str(pki.root)]
        cli("central", "enrol", device_id, "--out", str(work / "bundle"), "--broker", address,
            "--clinic", "Bench clinic", *central_args)
        cli("device", "enrol", str(work / "bundle"), "--data-dir", str(device_dir))
        started = time.perf_counter()
        expected = _queue_backlog(device_db, records, name)
        say(f"  {name}: {records} records queued in {time.perf_counter() - started:.1f} s; syncing ...")
        backlog_ids = {record_id for _, record_id, _ in expected}

        central = Process(["-m", "device.cli", "central", "run", *central_args, "--broker", address,
                           "--client-id", f"central-bench-{name}"] + ([] if encrypt else ["--allow-plaintext"]),
                          work / "central.log")
        processes.append(central)
        central.wait_for_line("receiving on")
        agent_args = ["-m", "device.cli", "sync", "run"] if encrypt else \
            ["-m", "sync.bench.probes", "agent", "--plaintext"]
        wall_start = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        started = time.perf_counter()
        agent = Process(agent_args + ["--data-dir", str(device_dir)], work / "agent.log")
        processes.append(agent)
        _wait_synced(device_db, central_db, records, processes)
        drain_s = time.perf_counter() - started
        pids = {"agent": agent.proc.pid, "central": central.proc.pid, "broker": broker.process.pid}
        cpu = {who: cpu_seconds(pid) for who, pid in pids.items()}

        live_count = max(0, round(live_rate * live_seconds))
        wire = None
        if live_count:
            observer = WireObserver(broker, pki, device_id)
            try:
                expected.update(_write_live(live_count, live_rate, name, records))
                _wait_synced(device_db, central_db, records + live_count, processes)
            finally:
                wire = observer.stop()
        agent_rc = agent.stop()
        central_rc = central.stop()
        summary = next((line for line in central.lines if "stopped after" in line), "")
    finally:
        for process in reversed(processes):
            process.stop()
        broker.stop()
        from device.store.records import db_proxy
        if db_proxy.obj is not None:
            db_proxy.close()

    rows = _query(central_db, "SELECT r.entity, r.record_id, r.version, r.content_sha256, r.created_at, "
                              "r.received_at FROM received_record AS r JOIN device AS d ON d.id = r.device_id "
                              "WHERE d.device_id = ?", (device_id,))
    got: dict[tuple, str] = {}
    for entity, record_id, version, sha, *_ in rows:
        got[(entity, record_id, version)] = sha
    backlog_rows = [(c, r) for _, rid, _, _, c, r in rows if rid in backlog_ids]
    live_rows = [(c, r) for _, rid, _, _, c, r in rows if rid not in backlog_ids]
    received = sorted(_parse_time(r) for _, r in backlog_rows)
    steady_s = (received[-1] - received[0]).total_seconds() if len(received) > 1 else 0.0
    first_s = (received[0] - wall_start).total_seconds() if received else None
    return {
        "device_id": device_id,
        "records": records,
        "drain_s": round(drain_s, 2),
        "records_per_s": round(records / drain_s, 1),
        "central_records_per_s": round((len(received) - 1) / steady_s, 1) if steady_s > 0 else None,
        "agent_start_to_first_record_s": round(first_s, 2) if first_s is not None else None,
        "cpu_ms_per_record": {who: round(seconds * 1000 / records, 2) if seconds is not None else None
                              for who, seconds in cpu.items()},  # backlog phase, startup included
        "backlog_latency_ms": _latency_ms(backlog_rows),
        "live": {"records": live_count, "rate_per_s": live_rate, "latency_ms": _latency_ms(live_rows)},
        "wire": wire,  # live-phase envelopes as the broker sees them
        "lost": len(set(expected) - set(got)),
        "duplicated": len(rows) - len(got),
        "unexpected": len(set(got) - set(expected)),
        "content_mismatches": sum(1 for key, sha in expected.items() if key in got and got[key] != sha),
        "outbox_left": _count(device_db, "SELECT COUNT(*) FROM outbox"),
        "ingest_errors": _count(central_db, "SELECT COUNT(*) FROM ingest_error"),
        "central_summary": summary.partition("(")[2].rstrip(")"),
        "exit_codes": {"agent": agent_rc, "central": central_rc},
    }


# --- the whole bench ----------------------------------------------------------------------------------

def _ratio(a, b):
    return round(a / b, 2) if a and b else None


def run_sync_bench(records: int = 10_000, *, encrypt_modes=(True, False), json_path=None, out: TextIO | None = None,
                   live_rate: float = 50.0, live_seconds: float = 5.0) -> dict:
    """Run the benchmark (see the module docstring), print a table to ``out``, write JSON if asked; the figures."""
    from sync.fleet.broker import find_mosquitto
    from sync.fleet.pki import init_pki

    out = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    if records < 1:
        raise AllscopeError("--records must be at least 1")
    if live_rate <= 0 or live_seconds < 0:
        raise AllscopeError("the live phase needs a positive rate and a non-negative duration")
    if not find_mosquitto():
        raise AllscopeError("mosquitto is not installed (Debian: apt-get install mosquitto)")
    root = Path(tempfile.mkdtemp(prefix="allscope-bench-sync-"))
    say(f"allscope bench sync: {records} queued records, then {round(live_rate * live_seconds)} live at "
        f"{live_rate:g}/s; mosquitto (mutual TLS, loopback), central on SQLite; work in {root}")
    kept = False
    try:
        pki = init_pki(root / "pki")
        modes = {}
        for encrypt in encrypt_modes:
            modes[MODE_NAMES[bool(encrypt)]] = _run_mode(root, pki, bool(encrypt), records, live_rate,
                                                         live_seconds, say)
    except BaseException:
        kept = True
        say(f"  (work directory kept for inspection: {root})")
        raise
    finally:
        if not kept:
            shutil.rmtree(root, ignore_errors=True)
    report = {
        "records": records,
        "cpus": os.cpu_count(),
        "modes": modes,
        "envelope_costs": envelope_costs(json.dumps(_patient(1, "seal"), default=str,
                                                     ensure_ascii=False).encode()),
        "target_records_per_s": TARGET_RECORDS_PER_S,
    }
    sealed, plain = modes.get("encrypted"), modes.get("plaintext")
    if sealed and plain:
        report["encryption_cost"] = {
            "throughput_plaintext_over_encrypted": _ratio(plain["records_per_s"], sealed["records_per_s"]),
            "central_rate_plaintext_over_encrypted": _ratio(plain["central_records_per_s"],
                                                            sealed["central_records_per_s"]),
            "live_p50_encrypted_over_plaintext": _ratio(sealed["live"]["latency_ms"]["p50"],
                                                        plain["live"]["latency_ms"]["p50"]),
        }
    report["correct"] = all(m["lost"] == 0 and m["duplicated"] == 0 and m["unexpected"] == 0 and
                            m["content_mismatches"] == 0 and m["outbox_left"] == 0 and m["ingest_errors"] == 0
                            for m in modes.values())
    if sealed:
        report["target_met"] = sealed["records_per_s"] >= TARGET_RECORDS_PER_S
    _print_table(report, say)
    if json_path:
        from device.store.atomic import write_atomic

        write_atomic(Path(json_path), (json.dumps(report, indent=1) + "\n").encode())
        say(f"figures written to {json_path}")
    return report


def _print_table(report: dict, say) -> None:
    modes = report["modes"]
    names = list(modes)

    def row(label: str, values) -> None:
        say(f"  {label:<38}" + "".join(f"{str(v):>20}" for v in values))

    def pair(stats: dict) -> str:
        return f"{stats['p50']} / {stats['p95']}"

    say()
    row("", names)
    row("records/s (agent start -> all acked)", [modes[n]["records_per_s"] for n in names])
    row("records/s at the central (steady)", [modes[n]["central_records_per_s"] for n in names])
    row("drain time s", [modes[n]["drain_s"] for n in names])
    row("agent start -> first stored s", [modes[n]["agent_start_to_first_record_s"] for n in names])
    row("CPU ms/record agent/central/broker",
        [" / ".join(str(v) for v in modes[n]["cpu_ms_per_record"].values()) for n in names])
    row("backlog latency p50 / p95 ms (queued)", [pair(modes[n]["backlog_latency_ms"]) for n in names])
    row("live latency p50 / p95 ms", [pair(modes[n]["live"]["latency_ms"]) for n in names])
    row("live latency max ms", [modes[n]["live"]["latency_ms"]["max"] for n in names])
    row("live on the broker: envelopes/readable", [f"{modes[n]['wire']['observed']} / "
                                                   f"{modes[n]['wire']['identifiers_readable']}"
                                                   if modes[n]["wire"] else "-" for n in names])
    row("lost / duplicated / altered", [f"{modes[n]['lost']} / {modes[n]['duplicated']} / "
                                        f"{modes[n]['content_mismatches']}" for n in names])
    row("outbox left / ingest errors", [f"{modes[n]['outbox_left']} / {modes[n]['ingest_errors']}" for n in names])
    costs = report["envelope_costs"]
    row("seal / open one envelope us (in process)",
        [f"{costs[n]['seal_us']} / {costs[n]['open_us']}" for n in names if n in costs])
    row("envelope bytes (payload bytes)",
        [f"{costs[n]['envelope_bytes']} ({costs[n]['payload_bytes']})" for n in names if n in costs])
    for name in names:
        say(f"  central {name}: {modes[name]['central_summary']}")
    cost = report.get("encryption_cost")
    if cost:
        say(f"  encryption cost: plaintext/encrypted throughput x{cost['throughput_plaintext_over_encrypted']} "
            f"(central steady x{cost['central_rate_plaintext_over_encrypted']}), live p50 encrypted/plaintext "
            f"x{cost['live_p50_encrypted_over_plaintext']}")
    if "target_met" in report:
        say(f"  target >= {report['target_records_per_s']:.0f} records/s with encryption: "
            f"{'met' if report['target_met'] else 'NOT met'}; "
            f"{'zero lost or duplicated' if report['correct'] else 'RECORDS LOST, DUPLICATED OR ALTERED'}")
    elif not report["correct"]:
        say("  RECORDS LOST, DUPLICATED OR ALTERED")
    say("  (one run on a shared machine: compare the ratios of this run rather than absolute figures)")

