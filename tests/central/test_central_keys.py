"""A device's Ed25519 signing key is bound to its enrolment; a USB import never chooses one (issue 13 item 3).

Before: the central pinned whatever key the first self-signed hello carried (trust on first use), from MQTT
or from a USB export whose manifest named the device, so a forged export made with only a device id and the
central's public key (in every bundle) stored records under that device and locked the real device out
(``key_mismatch``); a re-enrolment reopened that window to an old bundle. Now a hello pins its key only when
it is the key an admin registered, or (over MQTT, none registered) when it carries a proof signed with the
TLS certificate recorded at the device's current enrolment; an import needs a pinned or registered key.

Real parts: the fleet PKI and enrolment functions, SQLite and PostgreSQL, the CLI, and for the end-to-end
case mosquitto with mutual TLS and real ``allscope sync run`` / ``allscope central run`` processes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from figures import report
from sync_agent_helpers import (
    REPO_ROOT,
    assert_synced_exactly_once,
    enrol_device,
    populate,
    setup_central,
    sync_until_empty,
)

from device.errors import AllscopeError
from sync.central.db import open_central_database
from sync.central.enrolment import enrol_device as central_enrol
from sync.central.enrolment import register_signing_key
from sync.central.ingest import Ingestor
from sync.central.models import Device, IngestError, ReceivedRecord
from sync.fleet.pki import init_pki, load_private_key, load_public_key
from sync.wire import envelope, keyproof, keys

DEVICE = "clinic-key-01"
CREATED = "2026-11-20T08:30:00.000Z"


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device.cli", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)


def _forged_export(root, device_id: str, central_public) -> object:
    """What anyone can make with a device id and the central's encryption key: a self-signed hello, a patient
    and a signed report with "Blasts 85 %", all under that device, in a well-formed export folder."""
    forger = Ed25519PrivateKey.generate()
    patient = json.dumps({"id": 1, "identifier": "MRN-00000", "name": "Someone Else", "version": 1}).encode()
    report = json.dumps({"id": 1, "sample_id": 1, "status": "signed", "signed_by": "path", "version": 1,
                         "conclusion": "Blasts 85 %", "patient_identifier": "MRN-00000"}).encode()
    envelopes = [envelope.make_hello(device_id=device_id, signing_key=forger, server_public=central_public)]
    for entry, (record, body) in enumerate((("patient:1", patient), ("report:1", report)), start=1):
        envelopes.append(envelope.seal(body, kind="record", device_id=device_id, record=record, version=1,
                                       entry=entry, created=CREATED, signing_key=forger,
                                       server_public=central_public))
    folder = root / f"allscope-export-{device_id}-20261120T083000Z"
    folder.mkdir(parents=True)
    for number, data in enumerate(envelopes, start=1):
        (folder / f"{number:06d}.env").write_bytes(data)
    (folder / "manifest.json").write_text(json.dumps({
        "format": "allscope-export", "v": 1, "device": device_id, "created": CREATED,
        "envelopes": [{"file": f"{n:06d}.env"} for n in range(1, len(envelopes) + 1)]}))
    return folder


def test_a_forged_usb_export_pins_nothing_and_the_real_device_then_syncs(pki, mqtt_broker, tmp_path):
    central = setup_central(tmp_path / "central", pki, [(DEVICE, "Clinic K")])
    device = enrol_device(pki, mqtt_broker, tmp_path / "device", DEVICE)
    populate(device.data_dir, 1, amend=False)
    expected = device.outbox()

    usb = tmp_path / "usb"
    _forged_export(usb, DEVICE, load_public_key(pki.enc_pub))
    imported = _cli("central", "import", str(usb), "--data-dir", str(central.root), "--central-db",
                    str(central.database), "--pki", str(pki.root))
    lines = imported.stderr.splitlines()  # one warning line per refused envelope, then the verdict
    assert imported.returncode == 2 and lines[-1] == "allscope: 3 envelopes rejected (see the ingestion errors " \
        "in the admin UI)" and len(lines) == 4, imported.stderr
    assert "key_not_registered: a USB import cannot pin a signing key" in lines[0]
    assert (f"3 envelopes from {DEVICE}: 0 stored, 0 duplicate, 3 rejected (key_not_registered: 1, no_key: 2)"
            in imported.stdout), imported.stdout
    assert central.records() == []
    assert central.rows("SELECT signing_public_key FROM device") == [("",)]
    details = dict(central.rows("SELECT reason, detail FROM ingest_error"))
    assert "a USB import cannot pin a signing key" in details["key_not_registered"]
    assert "allscope central register-key" in details["no_key"]
    assert all("\n" not in detail for detail in details.values())

    # The real device, online, proves its key with its enrolment certificate and syncs as if nothing happened.
    sync_until_empty(central, mqtt_broker, device)
    assert_synced_exactly_once(central, device, expected)
    assert "key_mismatch" not in central.errors() and "bad_signature" not in central.errors()
    report("sync: envelopes of a forged USB export refused", 3)


# --- the rules at the ingestor, on SQLite and PostgreSQL --------------------------------------------------

class Central:
    """A central database, a PKI whose enrolment writes real bundles, and an Ingestor."""

    def __init__(self, tmp_path, url):
        self.tmp = tmp_path
        self.pki = init_pki(tmp_path / "pki")
        self.database = open_central_database(url)
        self.server = X25519PrivateKey.generate()
        self.ingestor = Ingestor(self.server, tmp_path / "central-data")
        self.bundles = 0

    def enrol(self, device_id: str = DEVICE):
        """``allscope central enrol``'s work: certificate, bundle, Device row; returns the bundle directory."""
        self.bundles += 1
        out = self.tmp / f"bundle-{self.bundles}"
        central_enrol(device_id, out=out, pki_dir=self.pki.root, broker_host="localhost")
        return out

    def hello(self, key, bundle=None, *, device_id: str = DEVICE, proof_for=None, via: str = "mqtt") -> dict:
        """A hello from ``key``, with a proof signed by ``bundle``'s TLS key (none without a bundle)."""
        created = envelope.utc_timestamp()
        proof = None
        if bundle is not None:
            proof = keyproof.make_proof(device_id=device_id, signing_public=proof_for or key,
                                        cert_pem_or_der=(bundle / "device.crt").read_bytes(),
                                        tls_private_key=load_private_key(bundle / "device.key"), created=created)
        data = envelope.make_hello(device_id=device_id, signing_key=key, server_public=self.server.public_key(),
                                   created=created, proof=proof)
        (ack,) = self.ingestor.handle(device_id, data, via=via)
        return ack

    def record(self, key, record_id: int, *, via: str = "mqtt") -> dict:
        body = json.dumps({"id": record_id, "identifier": f"K-{record_id}", "version": 1}).encode()
        data = envelope.seal(body, kind="record", device_id=DEVICE, record=f"patient:{record_id}", version=1,
                             entry=record_id, created=CREATED, signing_key=key, server_public=self.server.public_key())
        (ack,) = self.ingestor.handle(DEVICE, data, via=via)
        return ack

    def pinned(self) -> str:
        pem = Device.get(Device.device_id == DEVICE).signing_public_key
        return keys.fingerprint(keys.ed25519_public_from_pem(pem)) if pem else ""


@pytest.fixture(params=["sqlite", "postgresql"])
def central(request, tmp_path):
    url = tmp_path / "central.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    central = Central(tmp_path, url)
    yield central
    central.database.close()


def _refused(ack: dict) -> str:
    assert ack["status"] == "rejected", ack
    if ack["record"] == "hello":
        report("sync: hellos refused a key not bound to the enrolment", 1)
    return ack["reason"]


def test_a_hello_pins_its_key_only_with_a_proof_from_the_current_enrolment_certificate(central):
    first = central.enrol()
    other_device = central.enrol("clinic-key-02")
    device_key, intruder = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()

    assert _refused(central.hello(intruder)) == "no_key_proof"                    # self-signed only
    assert _refused(central.hello(intruder, other_device)) == "bad_key_proof"     # another device's certificate
    assert _refused(central.hello(intruder, first, proof_for=device_key)) == "bad_key_proof"  # vouches for another key
    assert central.pinned() == ""
    assert _refused(central.record(intruder, 1)) == "no_key"
    assert central.hello(device_key, first)["status"] == "stored"
    assert central.pinned() == keys.fingerprint(device_key)
    assert central.record(device_key, 1)["status"] == "stored"

    # Re-enrolment (a new certificate) clears the pinned key, and the old bundle proves nothing any more,
    # even while the broker has not reloaded its CRL yet: only the new bundle's certificate can pin a key.
    second = central.enrol()
    assert central.pinned() == ""
    assert _refused(central.hello(intruder, first)) == "bad_key_proof"
    assert _refused(central.hello(device_key, first)) == "bad_key_proof"
    assert central.hello(device_key, second)["status"] == "stored"
    assert central.hello(device_key, second)["status"] == "duplicate"
    assert _refused(central.hello(intruder, second)) == "key_mismatch"
    assert ReceivedRecord.select().count() == 1
    details = [row.detail for row in IngestError.select()]
    assert all("\n" not in detail for detail in details)
    assert any("not the one issued at the device's current enrolment" in detail for detail in details)


def test_a_registered_key_is_the_only_key_pinned_and_a_usb_import_needs_one(central):
    bundle = central.enrol()
    device_key, intruder = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()

    # Nothing pinned or registered: an import's hello and records are refused, each with one line.
    assert _refused(central.hello(device_key, bundle, via="usb")) == "key_not_registered"
    assert _refused(central.record(device_key, 1, via="usb")) == "no_key"
    assert central.pinned() == ""

    done = register_signing_key(DEVICE, keys.fingerprint(device_key).upper().replace(":", ""))
    assert (done.fingerprint, done.previous, done.unpinned) == (keys.fingerprint(device_key), "", False)
    # A valid certificate proof does not override the registration (a copied bundle cannot win the race).
    assert _refused(central.hello(intruder, bundle)) == "key_not_registered"
    assert central.hello(device_key, None, via="usb")["status"] == "stored"  # the registered key: pinned
    assert central.record(device_key, 1, via="usb")["status"] == "stored"
    assert central.pinned() == keys.fingerprint(device_key)

    # The admin registers another key (the pinned one came from someone else's hello): it is unpinned.
    again = register_signing_key(DEVICE, keys.fingerprint(intruder))
    assert again.unpinned and again.pinned == keys.fingerprint(device_key) and "no longer trusted" in again.line()
    assert central.pinned() == ""
    assert _refused(central.hello(device_key, bundle)) == "key_not_registered"
    assert _refused(central.record(device_key, 2)) == "no_key"

    with pytest.raises(AllscopeError, match="expected the 64 hex digits") as typo:
        register_signing_key(DEVICE, "ab:cd")
    assert "\n" not in str(typo.value)
    with pytest.raises(AllscopeError, match="no enrolled device"):
        register_signing_key("clinic-nobody", keys.fingerprint(device_key))
    # Re-enrolment clears the registration with the pinned key: the new enrolment starts clean.
    central.enrol()
    row = Device.get(Device.device_id == DEVICE)
    assert (row.signing_key_fingerprint, row.signing_public_key) == ("", "")


def test_register_key_cli_is_audited_and_a_typo_is_one_line(tmp_path):
    from device.store.records import AuditEvent

    database = tmp_path / "central.db"
    open_central_database(database)
    Device.create(device_id=DEVICE, clinic="Clinic K")
    key = Ed25519PrivateKey.generate()
    typo = _cli("central", "register-key", DEVICE, "12:34", "--central-db", str(database))
    assert typo.returncode == 2 and typo.stderr.count("\n") == 1 and "64 hex digits" in typo.stderr
    done = _cli("central", "register-key", DEVICE, keys.fingerprint(key), "--central-db", str(database))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"registered signing key {keys.fingerprint(key)} for {DEVICE}: only this key "
                                   f"is pinned, online or from a USB import")
    open_central_database(database)
    event = AuditEvent.get(AuditEvent.action == "register-key")
    assert (event.entity, event.entity_id) == ("device", DEVICE) and event.username.startswith("cli:")
    assert event.before == {"signing_key_fingerprint": "", "pinned": ""}
    assert event.after == {"signing_key_fingerprint": keys.fingerprint(key), "unpinned": False}
    assert Device.get(Device.device_id == DEVICE).signing_key_fingerprint == keys.fingerprint(key)


def test_migration_v4_adds_the_registered_key_column_to_an_older_database(request, tmp_path):
    """A central database at schema 3 (before this column) gains it, on SQLite and PostgreSQL."""
    from sync.central.migrations import MIGRATIONS, STATUS_COLUMNS, schema_version

    for url in (tmp_path / "old.db", request.getfixturevalue("postgres_url")):
        database = open_central_database(url)
        for column in ("signing_key_fingerprint", *STATUS_COLUMNS):  # v4's, and v5's (issue 16)
            database.execute_sql(f'ALTER TABLE "device" DROP COLUMN "{column}"')
        database.execute_sql("DELETE FROM central_schema WHERE version > 3")
        database.execute_sql("INSERT INTO device (device_id, clinic, state, cert_fingerprint, signing_public_key, "
                             "enrolled_at, online, backlog) VALUES ('clinic-old-1', '', 'enrolled', '', '', "
                             "'2026-01-01 00:00:00', false, 0)")
        database.close()
        database = open_central_database(url)
        try:
            assert schema_version(database) == len(MIGRATIONS) >= 4
            assert "signing_key_fingerprint" in {c.name for c in database.get_columns("device")}
            old = Device.get(Device.device_id == "clinic-old-1")
            assert old.signing_key_fingerprint == "" and old.software_version == old.model_version == ""
        finally:
            database.close()
