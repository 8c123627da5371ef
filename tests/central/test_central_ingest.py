"""Central ingestion (sync.central.ingest.Ingestor) against a real SQLite file and a real PostgreSQL server.

Envelopes are sealed with the real envelope code and real keys; each test gets a fresh
central database with one enrolled device. Every rejection must be acked as rejected
(when an entry is known), counted as an IngestError row, and never raise.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import peewee as pw
import pytest
from conftest import REPO_ROOT
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sync_fixtures import issue_device

from sync.central.db import open_central_database
from sync.central.ingest import Ingestor
from sync.central.models import Device, FileChunk, IngestError, ReceivedFile, ReceivedRecord
from sync.fleet.pki import load_private_key
from sync.wire import envelope, keyproof, keys
from sync.wire.acks import parse_ack

DEVICE = "clinic-a-01"
CREATED = "2026-11-20T08:30:00.000Z"


class Fleet:
    """One central (keys, database, Ingestor) and one enrolled device that seals envelopes for it."""

    def __init__(self, tmp_path, url, issued):
        self.database = open_central_database(url)
        self.server = X25519PrivateKey.generate()
        self.device_key = Ed25519PrivateKey.generate()
        self.data_dir = tmp_path / "central-data"
        self.ingestor = Ingestor(self.server, self.data_dir)
        self.issued = issued  # the device's TLS certificate and key, as in its enrolment bundle
        Device.create(device_id=DEVICE, clinic="Clinic A", cert_fingerprint=issued.fingerprint)
        self.entry = 0

    def seal(self, plaintext: bytes, *, kind="record", record="patient:1", version=1, device=DEVICE, key=None,
             server_public="default", extra=None, entry=None) -> bytes:
        if entry is None:
            self.entry += 1
            entry = self.entry
        public = self.server.public_key() if server_public == "default" else server_public
        return envelope.seal(plaintext, kind=kind, device_id=device, record=record, version=version, entry=entry,
                             created=CREATED, signing_key=key or self.device_key, server_public=public,
                             extra=extra)

    def record(self, entity="patient", record_id=1, version=1, **payload) -> bytes:
        body = {"id": record_id, "version": version, **payload}
        if entity == "patient":
            body.setdefault("identifier", f"P-{record_id:04d}")
        return self.seal(json.dumps(body).encode(), record=f"{entity}:{record_id}", version=version)

    def hello(self, key=None, device=DEVICE, *, issued="default", via="mqtt") -> list[dict]:
        """A hello with the proof signed by ``issued`` (default: this device's certificate; None: no proof)."""
        return self.ingestor.handle(device, self.hello_bytes(key, device, issued=issued), via=via)

    def hello_bytes(self, key=None, device=DEVICE, *, issued="default", proof_key=None) -> bytes:
        key = key or self.device_key
        issued = self.issued if issued == "default" else issued
        created = envelope.utc_timestamp()
        proof = None
        if issued is not None:
            proof = keyproof.make_proof(device_id=device, signing_public=proof_key or key,
                                        cert_pem_or_der=issued.cert.read_bytes(),
                                        tls_private_key=load_private_key(issued.key), created=created)
        return envelope.make_hello(device_id=device, signing_key=key, server_public=self.server.public_key(),
                                   created=created, proof=proof)

    def send(self, data: bytes, topic_device=DEVICE) -> dict:
        acks = self.ingestor.handle(topic_device, data)
        assert len(acks) == 1, acks
        return acks[0]

    def errors(self) -> dict[str, int]:
        return {row.reason: row.n for row in IngestError.select(IngestError.reason, pw.fn.COUNT(IngestError.id)
                                                                .alias("n")).group_by(IngestError.reason)}


@pytest.fixture(params=["sqlite", "postgresql"])
def fleet(request, tmp_path, pki):
    url = tmp_path / "central.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    fleet = Fleet(tmp_path, url, issue_device(pki, DEVICE))
    yield fleet
    fleet.database.close()


@pytest.fixture
def greeted(fleet):
    assert fleet.hello()[0]["status"] == "stored"
    return fleet


# --- the happy path, duplicates, versions ----------------------------------------------------------------

def test_hello_pins_the_key_then_a_record_is_stored_and_acked(fleet):
    ack = fleet.hello()[0]
    assert (ack["status"], ack["entry"], ack["record"]) == ("stored", 0, "hello")
    device = Device.get(Device.device_id == DEVICE)
    assert "BEGIN PUBLIC KEY" in device.signing_public_key and device.last_seen_at is not None
    assert fleet.hello()[0]["status"] == "duplicate"  # the same key again: fine

    ack = fleet.send(fleet.record(name="Ada", patient_identifier="P-0001"))
    assert ack == {"entry": fleet.entry, "record": "patient:1", "version": 1, "status": "stored", "reason": ""}
    row = ReceivedRecord.get()
    assert (row.device.device_id, row.entity, row.record_id, row.version) == (DEVICE, "patient", 1, 1)
    assert row.payload["name"] == "Ada" and row.patient_identifier == "P-0001"
    assert row.created_at.isoformat() == "2026-11-20T08:30:00"
    assert fleet.errors() == {}


def test_duplicate_is_acked_and_stored_once(greeted):
    plaintext = json.dumps({"id": 1, "identifier": "P-1", "version": 1}).encode()
    first = greeted.seal(plaintext)
    assert greeted.send(first)["status"] == "stored"
    assert greeted.send(first)["status"] == "duplicate"          # the same bytes (a QoS 1 redelivery)
    again = greeted.seal(plaintext)                               # resealed: new entry, key, nonce, signature
    ack = greeted.send(again)
    assert (ack["status"], ack["entry"]) == ("duplicate", greeted.entry)
    assert ReceivedRecord.select().count() == 1 and greeted.errors() == {}


def test_replay_with_other_content_is_rejected(greeted):
    assert greeted.send(greeted.record(name="Ada"))["status"] == "stored"
    ack = greeted.send(greeted.record(name="Eve"))  # same patient:1 version 1, other content
    assert (ack["status"], ack["reason"]) == ("rejected", "replay_conflict")
    assert ReceivedRecord.get().payload["name"] == "Ada"
    assert greeted.errors() == {"replay_conflict": 1}


def test_every_version_is_kept_and_searchable(greeted):
    for version, name in ((1, "Ada"), (2, "Ada L.")):
        assert greeted.send(greeted.record(version=version, name=name))["status"] == "stored"
    sample = greeted.seal(json.dumps({"id": 5, "patient_id": 1, "patient_identifier": "P-0001"}).encode(),
                          record="sample:5")
    assert greeted.send(sample)["status"] == "stored"
    assert greeted.send(greeted.record(record_id=2))["status"] == "stored"  # another patient
    found = ReceivedRecord.select().where(ReceivedRecord.patient_identifier == "P-0001").order_by(
        ReceivedRecord.entity, ReceivedRecord.version)
    assert [(r.entity, r.version) for r in found] == [("patient", 1), ("patient", 2), ("sample", 1)]
    with pytest.raises(pw.DatabaseError):  # versions are append-only, enforced by the database
        with greeted.database.atomic():
            ReceivedRecord.update(payload={}).execute()
    with pytest.raises(pw.DatabaseError):
        with greeted.database.atomic():
            ReceivedRecord.delete().execute()
    assert ReceivedRecord.select().count() == 4


# --- who may send --------------------------------------------------------------------------------------

def test_unknown_revoked_and_mismatched_devices_are_rejected(greeted):
    stranger = greeted.seal(b'{"id": 1}', device="clinic-z-99")
    assert greeted.send(stranger, topic_device="clinic-z-99")["reason"] == "unknown_device"
    assert greeted.send(greeted.record(), topic_device="clinic-b-02")["reason"] == "device_mismatch"
    Device.update(state="revoked").execute()
    assert greeted.send(greeted.record())["reason"] == "revoked"
    assert greeted.hello()[0]["reason"] == "revoked"
    assert ReceivedRecord.select().count() == 0
    assert greeted.errors() == {"unknown_device": 1, "device_mismatch": 1, "revoked": 2}


def test_hello_with_another_key_is_refused_and_records_need_a_pinned_key(fleet):
    assert fleet.send(fleet.record())["reason"] == "no_key"
    assert fleet.hello()[0]["status"] == "stored"
    intruder = Ed25519PrivateKey.generate()
    ack = fleet.hello(key=intruder)[0]
    assert (ack["status"], ack["reason"]) == ("rejected", "key_mismatch")
    assert fleet.send(fleet.record(), )["status"] == "stored"  # the pinned key still works
    assert fleet.errors() == {"no_key": 1, "key_mismatch": 1}


def test_forged_and_tampered_envelopes_are_rejected(greeted):
    forged = greeted.seal(b'{"id": 1}', key=Ed25519PrivateKey.generate())
    assert greeted.send(forged)["reason"] == "bad_signature"
    fields = json.loads(greeted.record())
    fields["version"] = 7  # a broker bumping the version to overwrite history
    assert greeted.send(json.dumps(fields).encode())["reason"] == "bad_signature"
    other_server = X25519PrivateKey.generate().public_key()
    assert greeted.send(greeted.seal(b'{"id": 1}', server_public=other_server))["reason"] == "decrypt_failed"
    assert ReceivedRecord.select().count() == 0
    assert greeted.errors() == {"bad_signature": 2, "decrypt_failed": 1}


def test_plaintext_is_refused_unless_allowed(greeted):
    clear = greeted.seal(b'{"id": 1, "identifier": "P-1"}', server_public=None)
    assert greeted.send(clear)["reason"] == "plaintext_refused"
    greeted.ingestor.allow_plaintext = True
    assert greeted.send(clear)["status"] == "stored"
    assert greeted.errors() == {"plaintext_refused": 1}


def test_malformed_messages_are_counted_and_never_raise(greeted):
    assert greeted.ingestor.handle(DEVICE, b"\xff not json") == []
    assert greeted.ingestor.handle(DEVICE, b"[1, 2]") == []
    fields = json.loads(greeted.record())
    fields["v"] = 3
    ack = greeted.send(json.dumps(fields).encode())  # the entry is still readable: acked as rejected
    assert (ack["entry"], ack["reason"]) == (fields["entry"], "unsupported_version")
    not_json = greeted.seal(b"not json", record="patient:3")
    assert greeted.send(not_json)["reason"] == "malformed"
    wrong_id = greeted.seal(b'{"id": 4}', record="patient:3")
    assert greeted.send(wrong_id)["reason"] == "malformed"
    assert greeted.send(greeted.seal(b"{}", record="invoice:3"))["reason"] == "malformed"
    assert greeted.errors() == {"malformed": 5, "unsupported_version": 1}
    assert ReceivedRecord.select().count() == 0


def test_a_database_failure_is_an_internal_error_not_an_exception(greeted):
    greeted.database.execute_sql("DROP TABLE received_record")
    ack = greeted.send(greeted.record())
    assert (ack["status"], ack["reason"]) == ("rejected", "internal_error")
    assert greeted.errors() == {"internal_error": 1}


def test_a_lost_postgresql_connection_is_reopened(request, tmp_path, pki):
    import psycopg2

    url = request.getfixturevalue("postgres_url")
    fleet = Fleet(tmp_path, url, issue_device(pki, DEVICE))
    assert fleet.hello()[0]["status"] == "stored"
    pid = fleet.database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    admin = psycopg2.connect(url)
    admin.autocommit = True
    with admin.cursor() as cursor:  # what a server restart does to the receiver's connection
        cursor.execute("SELECT pg_terminate_backend(%s)", (pid,))
    admin.close()
    assert fleet.send(fleet.record(record_id=1))["reason"] == "internal_error"  # acked, kept on the device
    assert fleet.send(fleet.record(record_id=2))["status"] == "stored"
    assert fleet.send(fleet.record(record_id=1))["status"] == "stored"      # the device's resend
    fleet.database.close()


# --- files ---------------------------------------------------------------------------------------------

def _chunks(content: bytes, size: int) -> list[bytes]:
    return [content[i:i + size] for i in range(0, len(content), size)] or [b""]


def _chunk(fleet, content, parts, index, *, data=None, sha=None, count=None, size=None, name="crops/7/3.png"):
    extra = {"index": index, "count": count or len(parts), "size": len(content) if size is None else size,
             "name": name}
    sha = sha or hashlib.sha256(content).hexdigest()
    return fleet.seal(parts[index] if data is None else data, kind="chunk", record=f"file:{sha}", extra=extra,
                      entry=42)


def test_chunks_out_of_order_and_duplicated_make_one_checked_file(greeted):
    content = bytes(range(256)) * 40 + b"tail"  # 10 244 bytes: 4 chunks of 3000, the last of 1244
    parts = _chunks(content, 3000)
    sha = hashlib.sha256(content).hexdigest()
    statuses = [greeted.send(_chunk(greeted, content, parts, i)) for i in (3, 1, 1, 0)]
    assert [(a["status"], a["index"], a["entry"]) for a in statuses] == \
        [("stored", 3, 42), ("stored", 1, 42), ("duplicate", 1, 42), ("stored", 0, 42)]
    assert not ReceivedFile.get().complete
    assert greeted.send(_chunk(greeted, content, parts, 2))["status"] == "stored"
    received = ReceivedFile.get()
    assert received.complete and received.received_chunks == 4 and received.name == "crops/7/3.png"
    assert received.stored_path == f"files/{sha[:2]}/{sha}.png"
    assert (greeted.data_dir / received.stored_path).read_bytes() == content
    assert FileChunk.select().count() == 0  # assembled: the chunk rows are dropped
    for index in (0, 3):  # a resend after completion: duplicate, checked against the stored file
        assert greeted.send(_chunk(greeted, content, parts, index))["status"] == "duplicate"
    bad = greeted.send(_chunk(greeted, content, parts, 1, data=b"x" * 3000))
    assert (bad["status"], bad["reason"]) == ("rejected", "replay_conflict")
    assert greeted.errors() == {"replay_conflict": 1}


def test_chunks_of_the_wrong_size_or_content_are_rejected(greeted):
    content = b"0123456789" * 100  # 1000 bytes in 4 chunks of 250 (the last one full)
    parts = _chunks(content, 250)
    assert greeted.send(_chunk(greeted, content, parts, 0))["status"] == "stored"
    assert greeted.send(_chunk(greeted, content, parts, 1, data=b"z" * 200))["reason"] == "chunk_size"
    assert greeted.send(_chunk(greeted, content, parts, 3, data=b"z" * 260))["reason"] == "chunk_size"
    assert greeted.send(_chunk(greeted, content, parts, 2, count=5))["reason"] == "chunk_mismatch"
    assert greeted.send(_chunk(greeted, content, parts, 4, data=b"z"))["reason"] == "malformed"  # index >= count
    only_last = b"abcdefghij" * 10  # a new file whose last chunk arrives first and cannot end it
    assert greeted.send(_chunk(greeted, only_last, [b""] * 3, 2, data=b"q" * 60, count=3))["reason"] == "chunk_size"

    liar = b"the declared hash is not of this content"
    wrong_sha = hashlib.sha256(b"something else").hexdigest()
    ack = greeted.send(_chunk(greeted, liar, [liar], 0, sha=wrong_sha))
    assert (ack["status"], ack["reason"]) == ("rejected", "file_hash_mismatch")
    assert ReceivedFile.select().where(ReceivedFile.sha256 == wrong_sha).count() == 0  # discarded, can be resent
    assert greeted.errors() == {"chunk_size": 3, "chunk_mismatch": 1, "malformed": 1, "file_hash_mismatch": 1}
    assert not list(greeted.data_dir.rglob("*.png"))


def test_an_empty_file_is_one_empty_chunk(greeted):
    assert greeted.send(_chunk(greeted, b"", [b""], 0, name="x.jpg"))["status"] == "stored"
    assert ReceivedFile.get().complete


# --- status messages -----------------------------------------------------------------------------------

def test_status_messages_update_the_device(greeted):
    greeted.ingestor.handle_status(DEVICE, b'{"state": "online", "backlog": 17}')
    device = Device.get()
    assert device.online and device.backlog == 17 and device.last_seen_at is not None
    seen = device.last_seen_at
    greeted.ingestor.handle_status(DEVICE, b'{"state": "offline"}', retained=True)  # replayed by the broker
    device = Device.get()
    assert not device.online and device.backlog == 17 and device.last_seen_at == seen
    greeted.ingestor.handle_status(DEVICE, b"")  # a cleared retained message: nothing to do
    greeted.ingestor.handle_status(DEVICE, b'{"state": "dancing"}')
    greeted.ingestor.handle_status("clinic-z-99", b'{"state": "online"}')
    assert greeted.errors() == {"malformed_status": 1, "unknown_device": 1}


def test_status_messages_carry_software_and_model(greeted):
    model = {"id": "3f2a9c1b", "name": "allscope_blast", "version": "2.0.0"}
    greeted.ingestor.handle_status(DEVICE, json.dumps({"state": "online", "backlog": 2, "software": "0.1.0",
                                                       "model": model}).encode())
    device = Device.get()
    assert (device.software_version, device.model_id, device.model_name, device.model_version) == (
        "0.1.0", "3f2a9c1b", "allscope_blast", "2.0.0")
    greeted.ingestor.handle_status(DEVICE, b'{"state": "offline"}')  # the last will says nothing of them: kept
    assert Device.get().model_version == "2.0.0" and Device.get().software_version == "0.1.0"
    greeted.ingestor.handle_status(DEVICE, json.dumps({"state": "online", "software": "x" * 65}).encode())
    greeted.ingestor.handle_status(DEVICE, json.dumps({"state": "online", "model": "2.0.0"}).encode())
    assert greeted.errors() == {"malformed_status": 2}
    assert Device.get().software_version == "0.1.0"


# --- USB import ----------------------------------------------------------------------------------------

def _export(tmp_path, envelopes: list[bytes]):
    directory = tmp_path / "usb" / f"allscope-export-{DEVICE}-20261120T083000Z"
    directory.mkdir(parents=True)
    names = []
    for number, data in enumerate(envelopes, start=1):
        names.append(f"{number:06d}.env")
        (directory / names[-1]).write_bytes(data)
    (directory / "manifest.json").write_text(json.dumps({"format": "allscope-export", "v": 1, "device": DEVICE,
                                                         "created": CREATED,
                                                         "envelopes": [{"file": n} for n in names]}))
    return directory


def test_central_import_runs_the_same_checks_and_writes_signed_acks(tmp_path):
    from sync.fleet.pki import init_pki, load_central_keys

    pki = init_pki(tmp_path / "pki")
    fleet = Fleet(tmp_path, tmp_path / "central" / "central.db", issue_device(pki, DEVICE))
    fleet.server, _ = load_central_keys(pki)
    hello = fleet.hello_bytes()
    records = [fleet.record(record_id=n, name=f"patient {n}") for n in (1, 2)]
    directory = _export(tmp_path, [hello, *records, fleet.seal(b"{}", key=Ed25519PrivateKey.generate())])
    fleet.database.close()
    command = [sys.executable, "-m", "device.cli", "central", "import", str(directory.parent), "--pki", str(pki.root),
               "--data-dir", str(tmp_path / "central")]
    # An import pins no key by itself: the admin registers the fingerprint the device printed at enrolment.
    registered = subprocess.run([sys.executable, "-m", "device.cli", "central", "register-key", DEVICE,
                                 keys.fingerprint(fleet.device_key), "--data-dir", str(tmp_path / "central")],
                                capture_output=True, text=True, cwd=REPO_ROOT)
    assert registered.returncode == 0 and "registered signing key" in registered.stdout, registered.stderr
    first = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    assert first.returncode == 2 and "1 envelopes rejected" in first.stderr, first.stderr
    assert "4 envelopes from clinic-a-01: 3 stored, 0 duplicate, 1 rejected (bad_signature: 1)" in first.stdout

    _, sign = load_central_keys(pki)
    acks = parse_ack((directory / "acks.json").read_bytes(), sign.public_key(), device_id=DEVICE).acks
    assert [(a["entry"], a["status"]) for a in acks] == [(0, "stored"), (1, "stored"), (2, "stored"), (3, "rejected")]

    (directory / "000004.env").unlink()  # the device dropped the forged one; import the stick again
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["envelopes"] = manifest["envelopes"][:3]
    (directory / "manifest.json").write_text(json.dumps(manifest))
    second = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    assert second.returncode == 0, second.stderr
    assert "3 envelopes from clinic-a-01: 0 stored, 3 duplicate, 0 rejected" in second.stdout
    open_central_database(tmp_path / "central" / "central.db")
    assert ReceivedRecord.select().count() == 2


def test_central_import_of_a_wrong_path_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "device.cli", "central", "import", str(tmp_path)],
                            capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no export found" in result.stderr
