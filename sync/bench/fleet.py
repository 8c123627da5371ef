"""``allscope bench fleet``: many devices through one mosquitto to 1, 2, 4 ... receivers on PostgreSQL.

    from sync.bench.fleet import run_fleet_bench
    report = run_fleet_bench(devices=200, receivers=[1, 2, 4], records=10_000)

A benchmark, not a test. Real parts: a fleet PKI with one client certificate per device
(``sync/fleet/pki.py``), mosquitto with the shipped configuration (mutual TLS, the ACL),
a PostgreSQL server (default durability), and ``allscope central run`` receivers sharing
the subscription. The devices are simulated by this process (``sync/bench/fleet_devices.py``):
one MQTT connection per device with its own certificate and client id, its own Ed25519 key
pinned by a hello with the enrolment proof, and its records sealed as the agent seals them
(batch envelopes of up to the agent's ``batch_records``), sealed before the clock starts.

For each receiver count, on a fresh database: every device connects and is greeted, then
all publish at once; timed until every device holds the central's signed ack for every
record. Then checked: each (device, entity, record_id, version) is stored exactly once with
the device's content hash. CPU seconds per 1,000 records of the receivers, mosquitto and
PostgreSQL (all its processes) show which part runs out first.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from device.errors import AllscopeError
from sync.bench.probes import Process, cpu_seconds


def _postgres_cpu(postmaster_pid: int) -> float:
    """CPU seconds of the postmaster and its children (the backends, the WAL writer, ...)."""
    total = cpu_seconds(postmaster_pid) or 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields and int(fields[1]) == postmaster_pid:
            total += cpu_seconds(int(stat.parent.name)) or 0.0
    return total


def _check_stored(url: str, expected: dict[tuple, str]) -> dict:
    import psycopg2

    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT d.device_id, r.entity, r.record_id, r.version, r.content_sha256, r.received_at "
                           "FROM received_record r JOIN device d ON d.id = r.device_id")
            rows = cursor.fetchall()
    finally:
        connection.close()
    got = {(d, e, i, v): sha for d, e, i, v, sha, _ in rows}
    received = sorted(row[5] for row in rows)
    steady = (received[-1] - received[0]).total_seconds() if len(received) > 1 else 0.0
    return {"stored": len(rows), "lost": len(set(expected) - set(got)), "duplicated": len(rows) - len(got),
            "altered": sum(1 for key, sha in expected.items() if key in got and got[key] != sha),
            "central_records_per_s": round((len(received) - 1) / steady, 1) if steady > 0 else None}


def one_run(root: Path, pki, broker, url: str, postgres_pid: int, fleet, receivers: int, say) -> dict:
    """One round on the fresh database ``url``: register the devices, start ``receivers``, send, check."""
    from sync.central.db import open_central_database
    from sync.central.models import Device
    from sync.fleet.pki import cert_fingerprint, load_certificate

    name = f"fleet_r{receivers}"
    database = open_central_database(url)
    with database.atomic():
        for device in fleet.devices:
            Device.create(device_id=device.device_id, clinic="Fleet bench",
                          cert_fingerprint=cert_fingerprint(load_certificate(pki.cert_path(device.device_id))))
    database.close()
    central_dir = root / name
    processes = []
    try:
        for index in range(receivers):
            process = Process(["-m", "device.cli", "central", "run", "--data-dir", str(central_dir), "--central-db",
                               url, "--pki", str(pki.root), "--broker", f"{broker.host}:{broker.port}",
                               "--client-id", f"{name}-{index}"], root / f"{name}-{index}.log")
            processes.append(process)
            process.wait_for_line("receiving on")
        fleet.connect_and_greet()
        pids = {"receivers": [p.proc.pid for p in processes], "broker": broker.process.pid,
                "postgres": postgres_pid}
        cpu_before = _cpu(pids)
        started = time.perf_counter()
        fleet.send_all()
        elapsed = time.perf_counter() - started
        cpu_after = _cpu(pids)
        fleet.disconnect()
    finally:
        for process in processes:
            process.stop()
    checked = _check_stored(url, fleet.expected)
    total = len(fleet.expected)
    cpu = {who: round((cpu_after[who] - cpu_before[who]) * 1000 / total * 1000, 1) for who in cpu_after}
    result = {"receivers": receivers, "records": total, "seconds": round(elapsed, 2),
              "records_per_s": round(total / elapsed, 1), "messages": fleet.messages, **checked,
              "cpu_ms_per_1000_records": cpu, "resent": fleet.resent}
    say(f"  {receivers} receiver{'s' if receivers > 1 else ''}: {result['records_per_s']} records/s "
        f"({total} in {result['seconds']} s), lost {checked['lost']}, duplicated {checked['duplicated']}")
    return result


def _cpu(pids: dict) -> dict:
    return {"receivers": sum(cpu_seconds(pid) or 0.0 for pid in pids["receivers"]),
            "broker": cpu_seconds(pids["broker"]) or 0.0, "postgres": _postgres_cpu(pids["postgres"])}


def run_fleet_bench(devices: int = 200, receivers=(1, 2, 4), records: int = 10_000, *, json_path=None,
                    out: TextIO | None = None) -> dict:
    """Run the benchmark (module docstring), print the table; the figures (``{"skipped": reason}`` if it cannot)."""
    from sync.bench import postgres
    from sync.bench.fleet_devices import SimulatedFleet
    from sync.fleet.broker import Broker, find_mosquitto
    from sync.fleet.pki import init_pki, issue

    out = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    reason = postgres.unavailable() or (None if find_mosquitto() else "needs mosquitto (apt-get install mosquitto)")
    if reason:
        say(f"allscope bench fleet: skipped: {reason}")
        return {"skipped": reason}
    receivers = sorted(set(receivers))
    if not 1 <= devices <= 2000 or not receivers or not all(1 <= r <= 16 for r in receivers):
        raise AllscopeError("--devices must be 1 to 2000 and --receivers counts 1 to 16")
    per_device = max(1, records // devices)
    root = Path(tempfile.mkdtemp(prefix="allscope-bench-fleet-"))
    say(f"allscope bench fleet: {devices} devices x {per_device} records through one mosquitto (mutual TLS) to "
        f"{', '.join(map(str, receivers))} receivers on PostgreSQL; work in {root}")
    broker = server = None
    kept = False
    try:
        pki = init_pki(root / "pki")
        started = time.perf_counter()
        names = [f"fleet-{number:04d}" for number in range(devices)]
        for device_id in names:
            issue(pki, device_id)
        issued_s = time.perf_counter() - started
        say(f"  {devices} device certificates issued in {issued_s:.1f} s")
        server = postgres.TempPostgres(max_connections=max(100, 4 * max(receivers) + 20)).start()
        broker = Broker(pki, root / "broker").start()
        fleet = SimulatedFleet(pki, broker, names, per_device)
        runs = [one_run(root, pki, broker, server.create_database(f"fleet_r{count}"), server.process.pid, fleet,
                        count, say) for count in receivers]
    except BaseException:
        kept = True
        say(f"  (work directory kept for inspection: {root})")
        raise
    finally:
        if broker is not None:
            broker.stop()
        if server is not None:
            server.stop()
        if not kept:
            shutil.rmtree(root, ignore_errors=True)
    report = {"devices": devices, "records_per_device": per_device, "certificates_s": round(issued_s, 1),
              "runs": runs, "correct": all(r["lost"] == r["duplicated"] == r["altered"] == 0 for r in runs)}
    _print(report, say)
    if json_path:
        from device.store.atomic import write_atomic

        write_atomic(Path(json_path), (json.dumps(report, indent=1, default=str) + "\n").encode())
    return report


def _print(report: dict, say) -> None:
    say()
    say(f"  {'receivers':>9} {'records/s':>10} {'central/s':>10} {'messages':>9} {'lost/dup/alt':>13} "
        f"{'CPU ms per 1000 records: receivers / mosquitto / postgres':>58}")
    for run in report["runs"]:
        cpu = run["cpu_ms_per_1000_records"]
        say(f"  {run['receivers']:>9} {run['records_per_s']:>10} {str(run['central_records_per_s']):>10} "
            f"{run['messages']:>9} {run['lost']:>4}/{run['duplicated']}/{run['altered']:<6} "
            f"{cpu['receivers']:>30} / {cpu['broker']} / {cpu['postgres']}")
    say(f"  {'every record exactly once' if report['correct'] else 'RECORDS LOST, DUPLICATED OR ALTERED'}; "
        f"one run on a shared machine: compare the rows of this run rather than absolute figures")
