"""Helpers for the sync agent, end-to-end and fault tests: an enrolled device, its records, a central.

A test process is a device *or* a central (both bind ``device.store.records.db_proxy``), so:
the central is set up (migrated, device registered) and then runs as a real
``allscope central run`` process; the agent runs as ``allscope sync run`` (a real
process too, so it can be SIGKILLed); the test process writes the device's
records through the device's own code (models, triggers, sign-off) and reads
both databases with plain ``sqlite3`` to check the outcome.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest
from sync_fixtures import WAIT, issue_device

from device.core.imageio import load_image
from device.store.datadir import DataDir

# These records hold a few cells each: signed below the sign-off minimum, with the reason the report prints.
FEW_CELLS = "test records: a few cells per frame"

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO_ROOT / "device" / "demo"
DEMO_FRAMES = sorted(DEMO_DIR.glob("*.jpg"))
CENTRAL_ID = "central-test"


def png_bytes(rgb) -> bytes:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buffer.tobytes()


# --- central -------------------------------------------------------------------------------------------

@dataclass
class Central:
    root: Path
    pki: object

    @property
    def database(self) -> Path:
        return self.root / "central.db"

    def rows(self, sql: str, params=()) -> list[tuple]:
        if not self.database.exists():
            return []
        connection = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30)
        try:
            return connection.execute(sql, params).fetchall()
        finally:
            connection.close()

    def records(self) -> list[tuple]:
        """(device, entity, record_id, version, content_sha256) of every stored record version."""
        return self.rows("SELECT d.device_id, r.entity, r.record_id, r.version, r.content_sha256 "
                         "FROM received_record AS r JOIN device AS d ON d.id = r.device_id")

    def files(self) -> dict[str, tuple]:
        """sha256 -> (complete, stored_path) of received files."""
        return {sha: (bool(complete), path) for sha, complete, path in
                self.rows("SELECT sha256, complete, stored_path FROM received_file")}

    def errors(self) -> dict[str, int]:
        return dict(self.rows("SELECT reason, COUNT(*) FROM ingest_error GROUP BY reason"))


def setup_central(root: Path, pki, devices: list[tuple[str, str]]) -> Central:
    """A migrated central database with ``devices`` [(device_id, clinic)] enrolled (in a subprocess)."""
    root.mkdir(parents=True, exist_ok=True)
    script = ("import sys, json\n"
              "from sync.central.db import open_central_database\n"
              "from sync.central.models import Device\n"
              "from sync.fleet.pki import load_certificate, cert_fingerprint\n"
              "db = open_central_database(sys.argv[1])\n"
              "for device_id, clinic, cert in json.loads(sys.argv[2]):\n"
              "    Device.create(device_id=device_id, clinic=clinic,\n"
              "                  cert_fingerprint=cert_fingerprint(load_certificate(cert)))\n")
    listed = [(device_id, clinic, str(issue_device(pki, device_id).cert)) for device_id, clinic in devices]
    subprocess.run([sys.executable, "-c", script, str(root / "central.db"), json.dumps(listed)], check=True,
                   cwd=REPO_ROOT, timeout=60)
    return Central(root, pki)


class Process:
    """A real allscope process with its output collected on a thread (so it never blocks on a full pipe)."""

    def __init__(self, args: list[str], log_path: Path, env: dict | None = None):
        self.args = args
        self.lines: list[str] = []
        self.log_path = log_path
        self.proc = subprocess.Popen([sys.executable, "-m", "device.cli", *args], cwd=REPO_ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})})
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        with open(self.log_path, "a") as log:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                log.write(line)
                log.flush()

    def wait_for_line(self, text: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None:
                time.sleep(0.2)
                if any(text in line for line in self.lines):
                    return
                pytest.fail(f"{self.args[:2]} exited ({self.proc.returncode}) before {text!r}:\n{self.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.args[:2]}: no {text!r} within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.05)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"{self.args[:2]} did not finish within {timeout:.0f} s:\n{self.tail()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it does not end; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.reader.join(5)
        return self.proc.returncode

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.lines[-n:])


def start_central(central: Central, broker, client_id: str = CENTRAL_ID) -> Process:
    process = Process(["central", "run", "--data-dir", str(central.root), "--central-db", str(central.database),
                       "--pki", str(central.pki.root), "--broker", f"{broker.host}:{broker.port}",
                       "--client-id", client_id], central.root / f"{client_id}.log")
    process.wait_for_line("receiving on")
    return process


def sync_until_empty(central: Central, broker, device: "Device", *agent_args: str) -> Process:
    """Start `central run`, run the device's agent with --until-empty (must exit 0), stop the central.

    Returns the stopped central process, whose ``lines`` hold its summary.
    """
    receiver = start_central(central, broker)
    try:
        agent = device.run_agent("--until-empty", *agent_args)
        assert agent.wait(120) == 0, agent.tail()
    finally:
        receiver.stop()
    return receiver


# --- device --------------------------------------------------------------------------------------------

@dataclass
class Device:
    device_id: str
    data_dir: Path

    @property
    def database(self) -> Path:
        return self.data_dir / "allscope.db"

    def rows(self, sql: str, params=()) -> list[tuple]:
        connection = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30)
        try:
            return connection.execute(sql, params).fetchall()
        finally:
            connection.close()

    def outbox(self) -> list[tuple]:
        """(entity, record_id, version, sha256 of the payload) of every pending entry."""
        return [(entity, record_id, version, hashlib.sha256(payload.encode()).hexdigest())
                for entity, record_id, version, payload in
                self.rows("SELECT entity, record_id, version, payload FROM outbox ORDER BY id")]

    def run_agent(self, *extra: str) -> Process:
        return Process(["sync", "run", "--data-dir", str(self.data_dir), *extra],
                       self.data_dir / "agent.log")


def enrol_device(pki, broker, data_dir: Path, device_id: str, **agent_settings) -> Device:
    """Install an enrolment bundle in ``data_dir/sync`` as ``allscope device enrol`` does, plus agent.json.

    Bundle: CA, the device's client certificate and key, the central's public keys, bundle.json;
    the device's own Ed25519 signing key is generated here (it never leaves the device).
    """
    from sync.wire import keys

    sync_dir = data_dir / "sync"
    sync_dir.mkdir(parents=True, exist_ok=True)
    issued = issue_device(pki, device_id)
    for source, name, mode in ((pki.ca_cert, "ca.crt", 0o644), (issued.cert, "device.crt", 0o644),
                               (issued.key, "device.key", 0o600), (pki.enc_pub, "central_enc_x25519.pub", 0o644),
                               (pki.sign_pub, "central_sign_ed25519.pub", 0o644)):
        shutil.copyfile(source, sync_dir / name)
        os.chmod(sync_dir / name, mode)
    (sync_dir / "bundle.json").write_text(json.dumps({
        "device_id": device_id, "broker_host": broker.host if broker else "127.0.0.1",
        "broker_port": broker.port if broker else 8883, "created": "2026-01-01T00:00:00Z", "format": 1}))
    if not (sync_dir / "device_sign_ed25519.key").exists():
        keys.generate_ed25519(sync_dir / "device_sign_ed25519.key")
    if agent_settings:
        (sync_dir / "agent.json").write_text(json.dumps(agent_settings))
    return Device(device_id, data_dir)


def register_signing_key(central: Central, device: Device) -> str:
    """``allscope central register-key``: the admin registers the key fingerprint the device printed at
    enrolment (what an offline clinic needs before its first USB import). Returns the command's output."""
    from sync.wire import keys

    fingerprint = keys.fingerprint(keys.load_ed25519_private(device.data_dir / "sync" / "device_sign_ed25519.key"))
    result = subprocess.run([sys.executable, "-m", "device.cli", "central", "register-key", device.device_id,
                             fingerprint, "--central-db", str(central.database), "--data-dir", str(central.root)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def enrol_with_cli(central: Central, broker, data_dir: Path, device_id: str, clinic: str,
                   **agent_settings) -> Device:
    """The real enrolment: ``allscope central enrol`` writes the bundle and registers the device,
    ``allscope device enrol`` installs it and generates the signing key on the device."""
    bundle = central.root / f"bundle-{device_id}"
    for args in (["central", "enrol", device_id, "--out", str(bundle), "--broker", f"{broker.host}:{broker.port}",
                  "--clinic", clinic, "--pki", str(central.pki.root), "--central-db", str(central.database),
                  "--data-dir", str(central.root)],
                 ["device", "enrol", str(bundle), "--data-dir", str(data_dir)]):
        result = subprocess.run([sys.executable, "-m", "device.cli", *args], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    device = Device(device_id, data_dir)
    if agent_settings:
        write_agent_settings(device, **agent_settings)
    return device


def write_agent_settings(device: Device, **settings) -> None:
    (device.data_dir / "sync" / "agent.json").write_text(json.dumps(settings))


# --- clinical records, made through the device's own code (the triggers fill the outbox) ------------------

CELLS = [
    dict(x=100, y=100, w=60, h=60, ai_label="blast", p_blast=0.92, needs_review=False, edge=False),
    dict(x=250, y=120, w=60, h=60, ai_label="normal", p_blast=0.08, needs_review=False, edge=False),
    dict(x=400, y=200, w=70, h=70, ai_label="blast", p_blast=0.58, needs_review=True, edge=False),
    dict(x=520, y=300, w=60, h=60, ai_label="normal", p_blast=0.44, needs_review=True, edge=False),
]


def populate(data_dir: Path, patients: int, *, captures_per_sample: int = 1, amend: bool = True,
             start: int = 0) -> dict:
    """Patients, each with a sample, captures of real demo frames with crops, a signed report and
    (``amend``) an amendment signed as version 2. Returns counts. Binds db_proxy to the device database."""
    from device.services import signoff
    from device.store.records import Capture, Cell, Patient, Sample, db_proxy, open_database

    open_database(data_dir / "allscope.db")
    data = DataDir(data_dir)
    counts = {"patients": 0, "samples": 0, "captures": 0, "crops": 0, "reports": 0}
    for number in range(start, start + patients):
        with db_proxy.atomic():
            patient = Patient.create(identifier=f"MRN-{number:05d}", name=f"Patient Nummer {number} Ōkubo",
                                     date_of_birth=dt.date(1950 + number % 50, 1 + number % 12, 1 + number % 28),
                                     sex=("female", "male")[number % 2], referring_clinician="Dr. Grünwald",
                                     symptoms="fatigue", wbc=12.5 + number, hemoglobin=9.1, platelets=80)
            sample = Sample.create(patient=patient, collected_at=dt.datetime(2026, 1, 5, 9, 30), created_by="tech")
        counts["patients"] += 1
        counts["samples"] += 1
        for index in range(captures_per_sample):
            frame = DEMO_FRAMES[(number + index) % len(DEMO_FRAMES)]
            rgb = load_image(frame)
            height, width = rgb.shape[:2]
            relative, digest = data.store_image(png_bytes(rgb))
            with db_proxy.atomic():
                capture = Capture.create(sample=sample, image_path=relative, sha256=digest, source="upload",
                                         original_name=frame.name, width=width, height=height, status="done",
                                         flag="needs_review", model_id="test-model",
                                         quality={"usable": True, "problems": []}, created_by="tech")
                for cell_index, spec in enumerate(CELLS):
                    shifted = dict(spec, x=spec["x"] + (number % 7) * 3)  # crops differ between patients
                    x0, y0 = int(shifted["x"] - spec["w"] / 2), int(spec["y"] - spec["h"] / 2)
                    crop = rgb[y0:y0 + spec["h"], x0:x0 + spec["w"]]
                    crop_path = data.store_crop(capture.id, cell_index, png_bytes(crop))
                    Cell.create(capture=capture, crop_path=crop_path, **shifted)
                    counts["crops"] += 1
            counts["captures"] += 1
            for cell in Cell.select().where((Cell.capture == capture) & Cell.needs_review):
                signoff.relabel(cell, "blast" if cell.p_blast >= 0.5 else "normal", username="path")
        report = signoff.sign(sample, f"Blasts seen in patient {number}.", username="path",
                     override_reason=FEW_CELLS)
        counts["reports"] += 1
        if amend:
            signoff.start_amendment(report, "second opinion", username="path")
            signoff.sign(sample, f"Blasts confirmed in patient {number} (amended).", username="path",
                     override_reason=FEW_CELLS)
            counts["reports"] += 1
    db_proxy.close()
    return counts


def crop_hashes(device: Device) -> set[str]:
    return {hashlib.sha256((device.data_dir / path).read_bytes()).hexdigest()
            for (path,) in device.rows("SELECT crop_path FROM cell")}


def assert_synced_exactly_once(central: Central, device: Device, expected: list[tuple]) -> int:
    """Every (entity, record_id, version) the device queued is stored once, with the device's content hash."""
    stored = [row for row in central.records() if row[0] == device.device_id]
    keys = [(entity, record_id, version) for _, entity, record_id, version, _ in stored]
    assert len(keys) == len(set(keys)), "a record version is stored twice"
    want = {(entity, record_id, version): sha for entity, record_id, version, sha in expected}
    got = {(entity, record_id, version): sha for _, entity, record_id, version, sha in stored}
    missing = sorted(set(want) - set(got))
    assert not missing, f"{len(missing)} versions never arrived, e.g. {missing[:5]}"
    assert set(got) == set(want), f"unexpected versions: {sorted(set(got) - set(want))[:5]}"
    assert got == want, "a stored version's content differs from what the device queued"
    assert device.outbox() == [], "the device outbox is not empty"
    return len(got)


# --- what the device ever queued (the outbox shrinks as acks arrive; the fault loop needs every version) -------

def keep_outbox_history(device: Device) -> None:
    """Copy every outbox row, as the triggers insert it, into ``test_outbox_history`` (a test-only table and
    trigger in the device database; the agent never reads them). Migrates the database first if needed."""
    from device.store.records import db_proxy, open_database

    open_database(device.database)
    db_proxy.close()
    connection = sqlite3.connect(device.database, timeout=30)
    try:
        with connection:
            connection.execute("CREATE TABLE IF NOT EXISTS test_outbox_history (id INTEGER PRIMARY KEY, "
                               "entity TEXT NOT NULL, record_id INTEGER NOT NULL, version INTEGER NOT NULL, "
                               "payload TEXT NOT NULL)")
            connection.execute("INSERT OR IGNORE INTO test_outbox_history SELECT id, entity, record_id, version, "
                               "payload FROM outbox")
            connection.execute("CREATE TRIGGER IF NOT EXISTS test_outbox_history_copy AFTER INSERT ON outbox BEGIN "
                               "INSERT INTO test_outbox_history VALUES (NEW.id, NEW.entity, NEW.record_id, "
                               "NEW.version, NEW.payload); END")
    finally:
        connection.close()


def outbox_history(device: Device) -> list[tuple]:
    """(entity, record_id, version, sha256 of the payload) of every entry ever queued (see keep_outbox_history)."""
    return [(entity, record_id, version, hashlib.sha256(payload.encode()).hexdigest())
            for entity, record_id, version, payload in
            device.rows("SELECT entity, record_id, version, payload FROM test_outbox_history ORDER BY id")]


def assert_files_complete(central: Central, hashes: set[str]) -> int:
    """Every file in ``hashes`` is complete at the central and its stored bytes have that SHA-256."""
    files = central.files()
    missing = sorted(sha[:12] for sha in hashes if not files.get(sha, (False,))[0])
    assert not missing, f"{len(missing)} files missing or incomplete at the central, e.g. {missing[:5]}"
    for sha in hashes:
        stored = central.root / files[sha][1]
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == sha, f"file {stored} differs from its hash"
    return len(hashes)
