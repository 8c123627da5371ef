"""Enrolment and revocation: `allscope central enrol|revoke`, `allscope device enrol`, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
import zipfile

import pytest
from conftest import REPO_ROOT
from cryptography.hazmat.primitives.asymmetric import ec
from sync_fixtures import Refused, close, mqtt_client

from device.errors import AllscopeError
from sync.central.enrolment import enrol_device, revoke_device
from sync.fleet.enrol import install_bundle, parse_broker, write_bundle
from sync.fleet.pki import cert_fingerprint, init_pki, issue, load_certificate, revoked_serials
from sync.wire import keys

BUNDLE = {"bundle.json", "ca.crt", "device.crt", "device.key", "central_enc_x25519.pub", "central_sign_ed25519.pub"}


def allscope(*args):
    return subprocess.run([sys.executable, "-m", "device.cli", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def fleet(tmp_path):
    return init_pki(tmp_path / "pki")


def central_db(path):
    from sync.central.db import open_central_database

    return open_central_database(path)


def test_central_enrol_then_device_enrol(tmp_path, fleet):
    central_dir, bundle = tmp_path / "central", tmp_path / "usb" / "bundle-dev-a"
    made = allscope("central", "enrol", "dev-a", "--out", str(bundle), "--pki", str(fleet.root), "--data-dir",
                    str(central_dir), "--broker", "mqtt.clinic.example:8884", "--clinic", "Clinic A")
    assert made.returncode == 0, made.stderr
    assert {p.name for p in bundle.iterdir()} == BUNDLE
    assert mode(bundle / "device.key") == 0o600 and mode(bundle) == 0o700
    assert not any(b"PRIVATE KEY" in p.read_bytes() for p in bundle.iterdir() if p.name != "device.key")
    meta = json.loads((bundle / "bundle.json").read_text())
    assert {k: meta[k] for k in ("device_id", "broker_host", "broker_port", "clinic", "format")} == \
        {"device_id": "dev-a", "broker_host": "mqtt.clinic.example", "broker_port": 8884, "clinic": "Clinic A",
         "format": 1}
    cert = load_certificate(bundle / "device.crt")
    assert (bundle / "ca.crt").read_bytes() == fleet.ca_cert.read_bytes()
    assert (bundle / "central_enc_x25519.pub").read_bytes() == fleet.enc_pub.read_bytes()

    from device.store.records import AuditEvent
    from sync.central.models import Device

    central_db(central_dir / "central.db")
    device = Device.get(Device.device_id == "dev-a")
    assert (device.state, device.clinic, device.cert_fingerprint, device.signing_public_key) == \
        ("enrolled", "Clinic A", cert_fingerprint(cert), "")
    assert cert_fingerprint(cert) in made.stdout
    event = AuditEvent.get(AuditEvent.action == "enrol")
    assert event.entity_id == "dev-a" and event.username.startswith("cli:")

    data = tmp_path / "appliance"
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    installed = allscope("device", "enrol", str(bundle), "--data-dir", str(data))
    assert installed.returncode == 0, installed.stderr
    sync_dir = data / "sync"
    assert {p.name for p in sync_dir.iterdir()} == BUNDLE | {"device_sign_ed25519.key", "device_sign_ed25519.pub"}
    assert mode(sync_dir) == 0o700 and mode(sync_dir / "device.key") == 0o600
    assert mode(sync_dir / "device_sign_ed25519.key") == 0o600
    signing = keys.load_ed25519_private(sync_dir / "device_sign_ed25519.key")
    assert keys.load_ed25519_public(sync_dir / "device_sign_ed25519.pub").public_bytes_raw() == \
        signing.public_key().public_bytes_raw()
    assert keys.fingerprint(signing) in installed.stdout
    # the signing key was made on the device: the bundle is unchanged and holds no trace of it
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
    assert not any(signing.public_key().public_bytes_raw() in b for b in before.values())

    again = allscope("device", "enrol", str(bundle), "--data-dir", str(data))  # same bundle: same key
    assert again.returncode == 0 and "existing" in again.stdout
    assert keys.load_ed25519_private(sync_dir / "device_sign_ed25519.key").private_bytes_raw() == \
        signing.private_bytes_raw()
    rotated = allscope("device", "enrol", str(bundle), "--data-dir", str(data), "--new-key")
    assert rotated.returncode == 0 and "new" in rotated.stdout
    assert keys.load_ed25519_private(sync_dir / "device_sign_ed25519.key").private_bytes_raw() != \
        signing.private_bytes_raw()

    from device.store.records import open_database

    open_database(data / "allscope.db")
    events = list(AuditEvent.select().where(AuditEvent.action == "enrol"))
    assert len(events) == 3 and events[0].after["signing_key"] == keys.fingerprint(signing)


def test_the_agent_accepts_an_installed_bundle(tmp_path, fleet):
    from sync.agent.config import load_config

    out = tmp_path / "bundle"
    write_bundle(fleet, "dev-b", out, broker_host="127.0.0.1", broker_port=18883)
    install_bundle(out, tmp_path / "data")
    config = load_config(tmp_path / "data")
    assert (config.device_id, config.broker_host, config.broker_port) == ("dev-b", "127.0.0.1", 18883)


def _bundle(fleet, tmp_path, name="dev-a"):
    out = tmp_path / f"bundle-{name}"
    write_bundle(fleet, name, out, broker_host="localhost", broker_port=8883)
    return out


def _edit_json(path, **changes):
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("damage, message", [
    (lambda b, t: (b / "device.key").unlink(), "device.key is missing"),
    (lambda b, t: _edit_json(b / "bundle.json", format=2), "unsupported bundle format 2"),
    (lambda b, t: _edit_json(b / "bundle.json", device_id="dev-other"), "issued to 'dev-a', not to 'dev-other'"),
    (lambda b, t: _edit_json(b / "bundle.json", broker_port="many"), "port must be a number"),
    (lambda b, t: shutil.copy(init_pki(t / "rogue").ca_cert, b / "ca.crt"), "does not verify against the fleet CA"),
    (lambda b, t: shutil.copy(issue(init_pki(t / "rogue2"), "dev-a").cert, b / "device.crt"),
     "does not verify against the fleet CA"),
    (lambda b, t: (b / "device.key").write_bytes(keys.private_pem(ec.generate_private_key(ec.SECP256R1()))),
     "device.key does not belong to device.crt"),
    (lambda b, t: shutil.copy(b / "central_sign_ed25519.pub", b / "central_enc_x25519.pub"), "not an X25519"),
    (lambda b, t: (b / "bundle.json").write_text("{not json"), "unreadable"),
])
def test_a_damaged_or_foreign_bundle_is_refused_and_nothing_is_installed(tmp_path, fleet, damage, message):
    bundle = _bundle(fleet, tmp_path)
    damage(bundle, tmp_path)
    with pytest.raises(AllscopeError, match=message) as error:
        install_bundle(bundle, tmp_path / "data")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "data" / "sync" / "bundle.json").exists()
    assert not (tmp_path / "data" / "sync" / "device_sign_ed25519.key").exists()


def test_a_bundle_zip_from_the_admin_ui_installs(tmp_path, fleet):
    bundle = _bundle(fleet, tmp_path)
    archive = tmp_path / "allscope-bundle-dev-a.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in bundle.iterdir():
            zipped.write(path, f"allscope-bundle-dev-a/{path.name}")
        zipped.writestr("allscope-bundle-dev-a/../../evil.sh", "rm -rf /")  # ignored, never written
    done = install_bundle(archive, tmp_path / "data")
    assert done.device_id == "dev-a" and (tmp_path / "data" / "sync" / "bundle.json").exists()
    assert not list(tmp_path.rglob("evil.sh"))
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(AllscopeError, match="not a readable bundle zip"):
        install_bundle(broken, tmp_path / "data2")


def test_enrol_refuses_reserved_names_and_a_used_directory(tmp_path, fleet):
    central_db(tmp_path / "central.db")
    for name in ("central", "central-2", "broker"):
        with pytest.raises(AllscopeError, match="reserved"):
            enrol_device(name, out=tmp_path / name, pki_dir=fleet.root, broker_host="localhost")
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("keep me")
    with pytest.raises(AllscopeError, match="not an empty directory"):
        enrol_device("dev-a", out=used, pki_dir=fleet.root, broker_host="localhost")
    assert [p.name for p in used.iterdir()] == ["notes.txt"]
    assert parse_broker("[::1]:8884") == ("::1", 8884) and parse_broker("mqtt.lan") == ("mqtt.lan", 8883)
    with pytest.raises(AllscopeError):
        parse_broker("mqtt.lan:0")


def test_re_enrolment_unpins_the_key_and_supersedes_the_old_certificate(tmp_path, fleet):
    from sync.central.models import Device

    central_db(tmp_path / "central.db")
    first = enrol_device("dev-a", out=tmp_path / "b1", pki_dir=fleet.root, broker_host="localhost", clinic="A")
    old_serial = load_certificate(tmp_path / "b1" / "device.crt").serial_number
    Device.update(signing_public_key="-----BEGIN PUBLIC KEY-----pinned").execute()
    revoke_device("dev-a", pki_dir=fleet.root)
    second = enrol_device("dev-a", out=tmp_path / "b2", pki_dir=fleet.root, broker_host="localhost")
    assert not first.re_enrolled and second.re_enrolled
    device = Device.get(Device.device_id == "dev-a")
    assert (device.state, device.revoked_at, device.signing_public_key, device.clinic) == ("enrolled", None, "", "A")
    assert device.cert_fingerprint == second.cert_fingerprint != first.cert_fingerprint
    revoked = revoked_serials(fleet)
    assert old_serial in revoked
    assert load_certificate(tmp_path / "b2" / "device.crt").serial_number not in revoked


def test_central_revoke_cli_marks_the_device_and_writes_the_crl(tmp_path, fleet):
    from device.store.records import AuditEvent
    from sync.central.models import Device

    db = tmp_path / "central.db"
    assert allscope("central", "enrol", "dev-a", "--out", str(tmp_path / "b"), "--pki", str(fleet.root),
                    "--central-db", str(db)).returncode == 0
    serial = load_certificate(tmp_path / "b" / "device.crt").serial_number
    done = allscope("central", "revoke", "dev-a", "--pki", str(fleet.root), "--central-db", str(db))
    assert done.returncode == 0, done.stderr
    assert "revoked" in done.stdout and "stays connected to the broker until the broker restarts" in done.stdout
    central_db(db)
    device = Device.get(Device.device_id == "dev-a")
    assert device.state == "revoked" and device.revoked_at is not None
    assert serial in revoked_serials(fleet)
    assert AuditEvent.get(AuditEvent.action == "revoke").after["crl_serials"] == [str(serial)]
    unknown = allscope("central", "revoke", "dev-zz", "--pki", str(fleet.root), "--central-db", str(db))
    assert unknown.returncode == 2 and unknown.stderr.strip() == "allscope: no enrolled device 'dev-zz'"
    no_pki = allscope("central", "revoke", "dev-a", "--pki", str(tmp_path / "nope"), "--central-db", str(db))
    assert no_pki.returncode == 2 and "pki init" in no_pki.stderr


def test_a_failed_crl_write_leaves_the_device_enrolled(tmp_path, fleet):
    from sync.central.models import Device

    central_db(tmp_path / "central.db")
    enrol_device("dev-a", out=tmp_path / "b", pki_dir=fleet.root, broker_host="localhost")
    fleet.ca_key.unlink()  # the CA key kept offline: the CRL cannot be signed here
    with pytest.raises(AllscopeError, match="ca.key"):
        revoke_device("dev-a", pki_dir=fleet.root)
    assert Device.get(Device.device_id == "dev-a").state == "enrolled"


def test_revoked_by_the_cli_the_device_is_refused_by_the_broker(tmp_path, mqtt_broker):
    pki, db = mqtt_broker.pki, tmp_path / "central.db"
    bundle = tmp_path / "bundle"
    made = allscope("central", "enrol", "dev-cli-revoked", "--out", str(bundle), "--pki", str(pki.root),
                    "--central-db", str(db), "--broker", f"{mqtt_broker.host}:{mqtt_broker.port}")
    assert made.returncode == 0, made.stderr
    close(mqtt_client(mqtt_broker, bundle / "device.crt", bundle / "device.key", ca=bundle / "ca.crt",
                      client_id="dev-cli-revoked"))
    assert allscope("central", "revoke", "dev-cli-revoked", "--pki", str(pki.root),
                    "--central-db", str(db)).returncode == 0
    mqtt_broker.restart()
    with pytest.raises(Refused):
        mqtt_client(mqtt_broker, bundle / "device.crt", bundle / "device.key", ca=bundle / "ca.crt",
                    client_id="dev-cli-revoked")


def test_enrol_and_revoke_on_postgresql(tmp_path, fleet, postgres_url):
    """The central database at a postgresql:// URL: opens, migrates, stores and reads a Device."""
    from sync.central.migrations import schema_version
    from sync.central.models import Device

    made = allscope("central", "enrol", "dev-pg", "--out", str(tmp_path / "b"), "--pki", str(fleet.root),
                    "--central-db", postgres_url, "--clinic", "Clinic P")
    assert made.returncode == 0, made.stderr
    assert allscope("central", "revoke", "dev-pg", "--pki", str(fleet.root),
                    "--central-db", postgres_url).returncode == 0
    database = central_db(postgres_url)
    try:
        assert type(database).__name__.startswith("Postgres") and schema_version(database) >= 1
        device = Device.get(Device.device_id == "dev-pg")
        assert (device.clinic, device.state) == ("Clinic P", "revoked") and device.revoked_at is not None
        assert device.cert_fingerprint == cert_fingerprint(load_certificate(tmp_path / "b" / "device.crt"))
    finally:
        database.close()
