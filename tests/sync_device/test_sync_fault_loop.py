"""The sync fault loop: a device keeps writing while a seeded random schedule kills what carries its records.

Real parts throughout: mosquitto with mutual TLS, ``allscope sync run`` and ``allscope central run``
processes, SQLite on disk on both sides. A writer thread in the test process records a steady
stream through the device's own code (patients, samples, captures of demo frames with cell crops,
relabelled cells, signed reports and signed amendments, later edits of earlier patients), while
the schedule performs N faults (``ALLSCOPE_FAULT_KILLS``, default 12; seed ``ALLSCOPE_FAULT_SEED``):
the first four are every kind once in a random order, the rest random kinds among:

* ``agent``: SIGKILL the sync agent;
* ``broker``: stop mosquitto (SIGTERM, or SIGKILL: a power cut that loses what it had not saved);
* ``receiver``: SIGKILL one central receiver (sometimes a second one is started first, so two
  share the work through the shared subscription);
* ``central``: the whole central down (every receiver SIGKILLed) for a while;

each followed, after a random short delay, by starting again what was stopped. Before the next
fault the central must have stored something new (the system got over the last one). At the
end everything drains and the central holds every (device, entity, record_id, version) the
device ever queued exactly once with the device's content hash, every crop complete with its
hash, no half-assembled file, the device outbox is empty, and the only ingestion errors are the
allowed "no_key" (a record reaching a receiver before the hello another one is pinning).
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import os
import random
import re
import sqlite3
import threading
import time

import pytest
from figures import report
from sync_agent_helpers import (
    CELLS,
    DEMO_FRAMES,
    Process,
    assert_files_complete,
    assert_synced_exactly_once,
    crop_hashes,
    enrol_device,
    keep_outbox_history,
    outbox_history,
    png_bytes,
    populate,
    setup_central,
)
from sync_fixtures import wait_until

from device.core.imageio import load_image
from device.store.datadir import DataDir

DEVICE = "clinic-fault-loop"
KILLS = int(os.environ.get("ALLSCOPE_FAULT_KILLS", "12"))
SEED = int(os.environ.get("ALLSCOPE_FAULT_SEED", "20260106"))
KINDS = ("agent", "broker", "receiver", "central")
BOUND = 60.0  # seconds any one wait may take (a bound for a hung test, never a pass condition)
AGENT_SETTINGS = dict(max_message_bytes=8 * 1024, window=16, ack_timeout_s=3, backoff_initial_s=0.2,
                      backoff_max_s=1.5, status_interval_s=2)
ALLOWED_ERRORS = {"no_key"}


class Writer(threading.Thread):
    """The device's steady stream of clinical work, through the device's own code (binds db_proxy here)."""

    def __init__(self, device, start: int, rng: random.Random):
        super().__init__(daemon=True, name="clinical-writer")
        self.device, self.next, self.rng = device, start, rng
        self.halt = threading.Event()
        self.counts: collections.Counter = collections.Counter()
        self.error: BaseException | None = None

    def run(self) -> None:
        from device.store.records import db_proxy, open_database

        try:
            open_database(self.device.database)
            while not self.halt.is_set():
                self._patient(self.next)
                self.next += 1
                if self.rng.random() < 0.3:
                    self._edit_an_earlier_patient()
                self.halt.wait(self.rng.uniform(0.2, 0.5))
        except BaseException as error:  # noqa: BLE001 - handed to the test, which fails with it
            self.error = error
        finally:
            db_proxy.close()

    def _patient(self, number: int) -> None:
        """A patient and sample, 1-2 captures of demo frames with crops, relabelled cells, a signed report and
        (mostly) a signed amendment: what ``populate`` makes, written as the device service does it (no query
        left open while another transaction runs)."""
        from device.services import signoff
        from device.store.records import Capture, Cell, Patient, Sample, db_proxy

        data = DataDir(self.device.data_dir)
        with db_proxy.atomic():
            patient = Patient.create(identifier=f"MRN-{number:05d}", name=f"Patient Nummer {number} Ōkubo",
                                     date_of_birth=dt.date(1950 + number % 50, 1 + number % 12, 1 + number % 28),
                                     sex=("female", "male")[number % 2], symptoms="fatigue", wbc=12.5 + number)
            sample = Sample.create(patient=patient, collected_at=dt.datetime(2026, 1, 5, 9, 30), created_by="tech")
        self.counts.update(patients=1, samples=1)
        for index in range(self.rng.choice((1, 1, 2))):
            frame = DEMO_FRAMES[(number + index) % len(DEMO_FRAMES)]
            rgb = load_image(frame)
            relative, digest = data.store_image(png_bytes(rgb))
            with db_proxy.atomic():
                capture = Capture.create(sample=sample, image_path=relative, sha256=digest, source="upload",
                                         original_name=frame.name, width=rgb.shape[1], height=rgb.shape[0],
                                         status="done", flag="needs_review", model_id="test-model",
                                         quality={"usable": True, "problems": []}, created_by="tech")
                for cell_index, spec in enumerate(CELLS):
                    shifted = dict(spec, x=spec["x"] + (number % 23) * 2 + index)  # most crops differ, some repeat
                    x0, y0 = int(shifted["x"] - spec["w"] / 2), int(spec["y"] - spec["h"] / 2)
                    crop_path = data.store_crop(capture.id, cell_index,
                                                png_bytes(rgb[y0:y0 + spec["h"], x0:x0 + spec["w"]]))
                    Cell.create(capture=capture, crop_path=crop_path, **shifted)
            self.counts.update(captures=1, crops=len(CELLS))
            for cell in list(Cell.select().where((Cell.capture == capture) & Cell.needs_review)):
                signoff.relabel(cell, "blast" if cell.p_blast >= 0.5 else "normal", username="path")
        signed = signoff.sign(sample, f"Blasts seen in patient {number}.", username="path", override_reason="few cells")
        self.counts.update(reports=1)
        if self.rng.random() < 0.6:
            signoff.start_amendment(signed, "second opinion", username="path")
            signoff.sign(sample, f"Blasts confirmed in patient {number}.", username="path", override_reason="few cells")
            self.counts.update(amendments=1)

    def _edit_an_earlier_patient(self) -> None:
        """A later change to a record whose earlier versions may still be on their way."""
        from device.store.records import Patient, audit, db_proxy

        with db_proxy.atomic():
            patient = Patient.select().order_by(Patient.id.desc()).offset(self.rng.randrange(3)).first()
            before = patient.symptoms
            Patient.update(symptoms=f"{before}; follow-up {self.counts['edits'] + 1}",
                           version=Patient.version + 1).where(Patient.id == patient.id).execute()
            audit("update", "patient", patient.id, username="tech", before={"symptoms": before})
        self.counts.update(edits=1)

    def stop(self) -> dict:
        self.halt.set()
        self.join(BOUND)
        assert not self.is_alive(), "the writer did not stop"
        if self.error is not None:
            raise self.error
        return dict(self.counts)


class Receivers:
    """The central's receivers by client id (each a persistent MQTT session), started and killed at will."""

    def __init__(self, central, broker):
        self.central, self.broker = central, broker
        self.running: dict = {}
        self.known: list[str] = []
        self.processes: list = []

    def start(self, client_id: str) -> None:
        process = Process(["-v", "central", "run", "--data-dir", str(self.central.root), "--central-db",
                           str(self.central.database), "--pki", str(self.central.pki.root), "--broker",
                           f"{self.broker.host}:{self.broker.port}", "--client-id", client_id],
                          self.central.root / f"{client_id}.log")
        process.wait_for_line("receiving on")
        self.running[client_id] = process
        self.processes.append(process)
        if client_id not in self.known:
            self.known.append(client_id)

    def kill(self, client_id: str) -> None:
        self.running.pop(client_id).kill()

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()
        self.running.clear()


def test_random_kills_of_agent_broker_and_receivers_lose_and_duplicate_nothing(pki, mqtt_broker, tmp_path):
    started = time.monotonic()
    rng = random.Random(SEED)
    schedule = rng.sample(KINDS, len(KINDS))[:KILLS] + [rng.choice(KINDS) for _ in range(KILLS - len(KINDS))]
    central = setup_central(tmp_path / "central", pki, [(DEVICE, "Fault Loop Clinic")])
    device = enrol_device(pki, mqtt_broker, tmp_path / "device", DEVICE, **AGENT_SETTINGS)
    keep_outbox_history(device)
    first = populate(device.data_dir, 4)  # a backlog to begin with

    def stored() -> int:
        return central.rows("SELECT COUNT(*) FROM received_record")[0][0]

    def progressed(before: int, or_drained: bool = False):
        """A predicate: the central stored something new; fails at once if a process died by itself."""
        def check() -> bool:
            for process in [agents[-1], *receivers.running.values()]:
                if process.proc.poll() is not None:
                    pytest.fail(f"{process.args[:3]} exited ({process.proc.returncode}) by itself:\n{process.tail()}")
            if writer.error is not None:
                raise writer.error
            return stored() > before or (or_drained and not device.rows("SELECT 1 FROM outbox LIMIT 1"))
        return check

    receivers = Receivers(central, mqtt_broker)
    writer = Writer(device, start=4, rng=random.Random(SEED + 1))
    agents = [device.run_agent()]
    survived: collections.Counter = collections.Counter()
    mid_sync = 0
    try:
        receivers.start("central-a")
        writer.start()
        for number in range(KILLS):
            # The system got over the last fault: the central stores something new.
            wait_until(progressed(stored()), BOUND, f"progress before fault {number + 1}")
            time.sleep(rng.uniform(0.1, 0.8))
            kind = schedule[number]
            mid_sync += bool(device.rows("SELECT 1 FROM outbox LIMIT 1"))
            delay = rng.uniform(0.2, 1.5)
            if kind == "agent":
                agents[-1].kill()
                time.sleep(delay)
                agents.append(device.run_agent())
            elif kind == "broker":
                hard = rng.random() < 0.5
                if hard:
                    mqtt_broker.kill()
                else:
                    mqtt_broker.stop()
                kind = "broker (SIGKILL)" if hard else "broker (SIGTERM)"
                time.sleep(delay)
                mqtt_broker.start()
            elif kind == "receiver":
                if len(receivers.running) == 1 and rng.random() < 0.5:
                    spare = next((cid for cid in ("central-a", "central-b") if cid not in receivers.running))
                    receivers.start(spare)  # two side by side, then one of them dies
                    survived["second receiver started"] += 1
                victim = rng.choice(sorted(receivers.running))
                receivers.kill(victim)
                time.sleep(delay)
                receivers.start(victim)
            else:  # the whole central down for a while
                down = sorted(receivers.running)
                for client_id in down:
                    receivers.kill(client_id)
                time.sleep(delay + rng.uniform(0.5, 2.0))
                for client_id in down:
                    receivers.start(client_id)
            survived[kind] += 1
            print(f"{time.strftime('%H:%M:%S')} fault {number + 1}: {kind} ({delay:.1f} s)", flush=True)
        written = writer.stop()
        drain_started = time.monotonic()
        wait_until(progressed(stored(), or_drained=True), BOUND, "progress after the last fault")
        # Drain: every receiver ever used is running (its persistent session may hold messages).
        for client_id in receivers.known:
            if client_id not in receivers.running:
                receivers.start(client_id)
        wait_until(lambda: progressed(-1)() and not device.rows("SELECT 1 FROM outbox LIMIT 1"), BOUND * 2,
                   "an empty device outbox")
        drained_s = round(time.monotonic() - drain_started, 1)
        assert agents[-1].stop() == 0, agents[-1].tail()
    finally:
        writer.halt.set()
        for agent in agents:
            agent.stop()
        receivers.stop_all()

    expected = outbox_history(device)
    checked = assert_synced_exactly_once(central, device, expected)
    crops = crop_hashes(device)
    files_checked = assert_files_complete(central, crops)
    half_done = central.rows("SELECT sha256, received_chunks, chunks FROM received_file WHERE NOT complete")
    assert not half_done, f"files left half-assembled at the central: {half_done[:5]}"
    assert central.rows("SELECT COUNT(*) FROM file_chunk") == [(0,)], "chunk rows left behind"
    reasons = central.errors()
    assert set(reasons) <= ALLOWED_ERRORS, f"unexpected ingestion errors: {reasons}"
    duplicates = sum(_count(line, "duplicate") for process in receivers.processes for line in process.lines
                     if "stopped after" in line)

    total = collections.Counter(first) + collections.Counter(written)
    faults = sum(count for kind, count in survived.items() if kind != "second receiver started")
    assert faults == KILLS
    assert mid_sync >= KILLS // 2, f"only {mid_sync} of {KILLS} faults hit a sync in progress"
    figures = {"seed": SEED, "faults": dict(survived), "faults with a backlog": mid_sync,
               "records checked": checked, "files checked": files_checked,
               "duplicates acked (receivers stopped cleanly)": duplicates, "ingestion errors": reasons,
               "agents": len(agents), "receiver starts": len(receivers.processes), **dict(total),
               "drain seconds": drained_s,
               "seconds": round(time.monotonic() - started, 1)}
    print(f"\nfault loop: {figures}")
    for kind, count in sorted(survived.items()):
        report(f"sync fault loop: {kind} survived" if kind != "second receiver started"
               else "sync fault loop: second receivers started", count)
    report("sync fault loop: records checked exactly once", checked)
    report("sync fault loop: files checked complete with their hash", files_checked)


def _count(line: str, key: str) -> int:
    """A figure from a receiver's last line, "... stopped after N envelopes (duplicate 3, stored 40)"."""
    match = re.search(rf"\b{key} (\d+)", line)
    return int(match.group(1)) if match else 0


def test_a_device_transaction_that_reads_then_writes_survives_a_commit_from_the_agent(tmp_path):
    """What the loop found first: in WAL mode a deferred transaction that reads and then writes failed at once
    ("database is locked") when another connection committed in between; the agent died in file_progress and
    a relabel on the device failed alike. Transactions now take the write lock at BEGIN, so the other writer
    waits its turn instead of breaking the one already running (here it has no busy wait: refused at once)."""
    from device.store.records import Patient, db_proxy, open_database

    database = tmp_path / "allscope.db"
    open_database(database)
    try:
        patient = Patient.create(identifier="MRN-1", name="A", date_of_birth=dt.date(1970, 1, 1), sex="female")
        agent = sqlite3.connect(database, timeout=0)  # the agent's connection, committing an ack batch
        ack = "INSERT OR REPLACE INTO sync_state (key, value, updated_at) VALUES ('last_ack_at', 'x', 'x')"
        with db_proxy.atomic():
            symptoms = Patient.get_by_id(patient.id).symptoms
            try:
                with agent:
                    agent.execute(ack)
                interleaved = True
            except sqlite3.OperationalError:
                interleaved = False  # the device's transaction holds the write lock
            # Before the fix this raised "database is locked": the read snapshot was older than the agent's commit.
            Patient.update(symptoms=f"{symptoms} fever", version=Patient.version + 1).where(
                Patient.id == patient.id).execute()
        with agent:
            agent.execute(ack)  # the agent's turn comes after
        agent.close()
        assert not interleaved
        assert Patient.get_by_id(patient.id).version == 2
    finally:
        db_proxy.close()


class _Killed(BaseException):
    """The receiver process dying (SIGKILL): nothing after this point runs, no ack, no PUBACK."""


def test_a_receiver_killed_between_the_last_chunk_and_the_assembly_still_makes_the_file(tmp_path, monkeypatch):
    """A receiver SIGKILLed after committing a file's last missing chunk but before assembling it: the broker
    redelivers that chunk (it was never PUBACKed), which is now a duplicate. The duplicate must still
    assemble the file, else every chunk is acked, the device deems the file complete and never sends it
    again, and the central keeps a half-received file for good."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from sync.central import files as central_files
    from sync.central.db import open_central_database
    from sync.central.ingest import Ingestor
    from sync.central.models import Device, FileChunk, ReceivedFile
    from sync.wire import envelope
    from sync.wire.keys import fingerprint

    database = open_central_database(tmp_path / "central.db")
    try:
        server, device_key = X25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        ingestor = Ingestor(server, tmp_path / "central-data")
        Device.create(device_id=DEVICE, clinic="Clinic", signing_key_fingerprint=fingerprint(device_key))
        hello = envelope.make_hello(device_id=DEVICE, signing_key=device_key, server_public=server.public_key())
        assert ingestor.handle(DEVICE, hello)[0]["status"] == "stored"
        content = png_bytes(load_image(DEMO_FRAMES[0])[:80, :80])
        sha, size = hashlib.sha256(content).hexdigest(), 1000
        parts = [content[start:start + size] for start in range(0, len(content), size)]

        def chunk(index: int) -> bytes:
            extra = {"index": index, "count": len(parts), "size": len(content), "name": "crops/1/0000.png"}
            return envelope.seal(parts[index], kind="chunk", device_id=DEVICE, record=f"file:{sha}", version=1,
                                 entry=7, created="2026-01-06T10:00:00.000Z", signing_key=device_key,
                                 server_public=server.public_key(), extra=extra)

        assert len(parts) > 2
        for index in range(len(parts) - 1):
            assert ingestor.handle(DEVICE, chunk(index))[0]["status"] == "stored"

        def killed(*_args, **_kwargs):
            raise _Killed()

        with monkeypatch.context() as patch:
            patch.setattr(central_files, "_assemble", killed)
            with pytest.raises(_Killed):
                ingestor.handle(DEVICE, chunk(len(parts) - 1))
        assert FileChunk.select().count() == len(parts) and not ReceivedFile.get().complete

        (ack,) = ingestor.handle(DEVICE, chunk(len(parts) - 1))  # the broker's redelivery to a new receiver
        assert ack["status"] == "duplicate"
        received = ReceivedFile.get()
        assert received.complete, "every chunk is stored and acked, but the file was never assembled"
        assert (tmp_path / "central-data" / received.stored_path).read_bytes() == content
        assert FileChunk.select().count() == 0

        # Two receivers assembling at once: the second read the chunks after the first had dropped them. It
        # must leave the complete file alone (it used to delete its row as a hash mismatch).
        stale = ReceivedFile.get()
        stale.complete = False
        central_files._assemble(stale, envelope.parse(chunk(0)), tmp_path / "central-data")
        assert ReceivedFile.get().complete
    finally:
        database.close()
