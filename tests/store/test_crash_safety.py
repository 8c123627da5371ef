"""Power-cut test: a child process writing clinical records and analysing frames is SIGKILLed at random points.

The child (this file run as a script) opens the real database (WAL, synchronous=FULL), starts the real
AnalysisWorker with the shipped model and, in a loop, registers patients, samples and captures of the demo
frames (each in its own transaction with its audit event, as the web UI does) and changes patients. After
every commit it prints what it committed, flushed. After each kill the parent opens the file (sqlite3, or
SQLCipher for the encrypted variant): integrity_check is ok, every record reported as committed is there (at least at the reported
version), every stored image and crop a row names exists with its hash, and the sync outbox holds the
current version of every record. Finally the worker's recovery must leave no capture queued or analysing.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device.store import atrest
from device.store.datadir import DataDir

REPO_ROOT = Path(__file__).resolve().parents[2]
KILLS = 20
BUDGET_S = 50.0


# --- the child -----------------------------------------------------------------------------------------------
def child(data_dir: str, seed: int, key_file: str = "") -> None:
    sys.path.insert(0, str(REPO_ROOT))
    if key_file:
        from device.store import atrest

        atrest.configure(encrypt=True, key_file=Path(key_file))
    from device.core.imageio import load_image
    from device.resources import DEFAULT_MODEL
    from device.services.jobs import AnalysisWorker, encode_png
    from device.store.datadir import DataDir
    from device.store.records import Capture, Patient, Sample, audit, db_proxy, open_database, utcnow

    rng = random.Random(seed)
    data = DataDir.resolve(data_dir)
    open_database(data.database)
    frames = [encode_png(load_image(p)) for p in sorted((REPO_ROOT / "device" / "demo").glob("*.jpg"))[:2]]
    worker = AnalysisWorker(data, DEFAULT_MODEL).start()
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        ident = f"S{seed}-{n}"
        with db_proxy.atomic():
            patient = Patient.create(identifier=ident, name=f"Crash Test {ident}")
            audit("create", "patient", patient.id, username="crash", after={"identifier": ident})
        print(f"patient {patient.id} 1", flush=True)
        with db_proxy.atomic():
            Patient.update(notes=f"changed {n}", updated_at=utcnow(), version=Patient.version + 1) \
                .where(Patient.id == patient.id).execute()
            audit("update", "patient", patient.id, username="crash")
        print(f"patient {patient.id} 2", flush=True)
        with db_proxy.atomic():
            sample = Sample.create(patient=patient, created_by="crash")
            audit("create", "sample", sample.id, username="crash")
        print(f"sample {sample.id} 1", flush=True)
        if worker._queue.unfinished_tasks > 1:  # keep the backlog short: the kills should land in analyses
            time.sleep(0.05)
            continue
        relative, digest = data.store_image(frames[rng.randrange(len(frames))])
        with db_proxy.atomic():
            capture = Capture.create(sample=sample, image_path=relative, sha256=digest, source="upload",
                                     status="queued", created_by="crash")
            audit("create", "capture", capture.id, username="crash")
        print(f"capture {capture.id} 1", flush=True)
        worker.enqueue(capture.id)
        time.sleep(rng.uniform(0.0, 0.05))


# --- the parent ----------------------------------------------------------------------------------------------
def _run_child(data_dir: Path, seed: int, committed: dict, rng: random.Random, key_file: str) -> bool:
    """Start the child, let it work for a random while, SIGKILL it; record what it reported. True if killed."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, __file__, str(data_dir), str(seed), key_file], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        first = process.stdout.readline()
        assert first.strip() == "ready", f"child did not start: {first!r}"
        os.set_blocking(process.stdout.fileno(), False)
        time.sleep(rng.uniform(0.05, 1.2))
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        os.set_blocking(process.stdout.fileno(), True)
        for line in process.stdout.read().split("\n")[:-1]:  # complete lines only: a kill can cut the last
            parts = line.split()
            if len(parts) == 3:
                key = (parts[0], int(parts[1]))
                committed[key] = max(committed.get(key, 0), int(parts[2]))
        return process.returncode == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def _check(data_dir: Path, committed: dict) -> int:
    """The checks after one kill; returns how many committed records were verified."""
    from device.store import atrest

    connection = atrest.connect(data_dir / "allscope.db")
    read = (lambda relative: DataDir(data_dir).read_bytes(relative))
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
        for (entity, record_id), version in committed.items():
            row = connection.execute(f'SELECT version FROM "{entity}" WHERE id = ?', (record_id,)).fetchone()
            assert row is not None, f"committed {entity} {record_id} lost"
            assert row[0] >= version, f"{entity} {record_id}: committed version {version} lost (found {row[0]})"
        for image_path, sha in connection.execute("SELECT image_path, sha256 FROM capture"):
            assert hashlib.sha256(read(image_path)).hexdigest() == sha
        for (crop_path,) in connection.execute("SELECT crop_path FROM cell"):
            assert read(crop_path)[:3] == b"\xff\xd8\xff", f"cell row without its crop {crop_path}"  # JPEG
        for entity in ("patient", "sample", "capture"):
            rows = {r[0]: r[1:] for r in connection.execute(f'SELECT id, version, {"status" if entity == "capture" else "NULL"} FROM "{entity}"')}
            versions = dict(connection.execute("SELECT record_id, version FROM sync_version WHERE entity = ?",
                                               (entity,)).fetchall())
            assert versions.keys() == rows.keys(), f"{entity}: sync versions do not match the rows"
            for record_id, (version, status) in rows.items():
                found = connection.execute("SELECT payload FROM outbox WHERE entity = ? AND record_id = ? AND version = ?",
                                           (entity, record_id, versions[record_id])).fetchone()
                assert found is not None, f"{entity} {record_id}: no outbox entry for its current change"
                payload = json.loads(found[0])
                assert payload["version"] == version and payload.get("status") == status
        return len(committed)
    finally:
        connection.close()


@pytest.fixture(params=["plain", "encrypted"])
def storage(request, tmp_path, monkeypatch):
    """"" (plain) or the key file of an encrypted data directory; fewer kills when encrypted (same code paths)."""
    from device.store import atrest

    monkeypatch.delenv("ALLSCOPE_CONFIG", raising=False)
    if request.param == "plain":
        atrest.configure(encrypt=False)
        yield "", KILLS
    else:
        pytest.importorskip("sqlcipher3")
        key = tmp_path / "db.key"
        key.write_bytes(atrest.new_secret())
        key.chmod(0o600)
        atrest.configure(encrypt=True, key_file=key)
        yield str(key), KILLS // 2
    atrest.reset()


def test_sigkill_during_writes_and_analysis_loses_no_committed_record(tmp_path, storage):
    key_file, kill_count = storage
    data_dir = tmp_path / "var"
    rng = random.Random(int(os.environ.get("ALLSCOPE_CRASH_SEED", "5")))
    committed: dict[tuple[str, int], int] = {}
    kills = checked = analysed_by_children = 0
    started = time.monotonic()
    for seed in range(kill_count):
        if time.monotonic() - started > BUDGET_S:
            break
        kills += _run_child(data_dir, seed, committed, rng, key_file)
        checked += _check(data_dir, committed)
    connection = atrest.connect(data_dir / "allscope.db")
    analysed_by_children = connection.execute("SELECT count(*) FROM capture WHERE status = 'done'").fetchone()[0]
    connection.close()
    assert kills >= kill_count // 2, f"only {kills} kills within the time budget"

    # Recovery: the worker of the next start re-runs what a kill interrupted; nothing stays queued/analysing.
    from device.resources import DEFAULT_MODEL
    from device.services.jobs import AnalysisWorker
    from device.store.datadir import DataDir
    from device.store.records import Capture, open_database

    data = DataDir.resolve(data_dir)
    database = open_database(data.database)
    worker = AnalysisWorker(data, DEFAULT_MODEL).start()
    try:
        assert worker.wait_idle(120)
        states = {c.status for c in Capture.select(Capture.status)}
        interrupted = Capture.select().where(Capture.status.in_(("queued", "analysing"))).count()
        done = Capture.select().where(Capture.status == "done").count()
    finally:
        worker.stop()
        database.close()
    assert interrupted == 0 and states <= {"done", "failed"}, states
    assert analysed_by_children >= 1, "no analysis finished between kills: the kills never met a whole job"
    _check(data_dir, committed)
    captures = sum(1 for key in committed if key[0] == "capture")
    print(f"\ncrash safety ({'encrypted' if key_file else 'plain'}): {kills} SIGKILLs in {time.monotonic() - started:.0f} s, {len(committed)} committed "
          f"records ({captures} captures) checked {checked} times in total, {analysed_by_children} captures analysed before the last kill, "
          f"{done - analysed_by_children} re-run by the recovery")


if __name__ == "__main__":
    child(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "")
