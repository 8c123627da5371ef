"""Keys and certificates as the README's "Keys and certificates" says: the device's TLS key only in its bundle,
web enrolment off (one line) when ca.key is kept offline, and `central renew` for a device's certificate."""

from __future__ import annotations

import subprocess
import sys

from central_web_kit import admin, central, form_token  # noqa: F401  (shared fixtures)
from conftest import REPO_ROOT

from sync.fleet.pki import init_pki, load_certificate, revoked_serials


def allscope(*args):
    return subprocess.run([sys.executable, "-m", "device.cli", *args], check=False, capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=120)


def _where(tmp_path):
    return ["--pki", str(tmp_path / "pki"), "--central-db", str(tmp_path / "central.db"), "--data-dir",
            str(tmp_path / "central")]


def test_the_central_keeps_the_certificate_not_the_key_of_an_enrolled_device(tmp_path):
    pki = init_pki(tmp_path / "pki")
    done = allscope("central", "enrol", "dev-k", "--out", str(tmp_path / "bundle"), *_where(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "bundle" / "device.key").is_file()
    assert pki.cert_path("dev-k").is_file() and not pki.key_path("dev-k").exists()
    assert sorted(p.name for p in (pki.root / "issued").iterdir()) == ["dev-k.crt"]


def test_renew_issues_a_new_certificate_keeps_the_pinned_key_and_revokes_the_old_one(tmp_path):
    from device.store.records import AuditEvent
    from sync.central.db import open_central_database
    from sync.central.models import Device

    pki = init_pki(tmp_path / "pki")
    assert allscope("central", "enrol", "dev-r", "--clinic", "Clinic R", "--out", str(tmp_path / "b1"),
                    *_where(tmp_path)).returncode == 0
    old = load_certificate(pki.cert_path("dev-r"))
    database = open_central_database(tmp_path / "central.db")
    Device.update(signing_public_key="PINNED", signing_key_fingerprint="REGISTERED").execute()
    database.close()

    done = allscope("central", "renew", "dev-r", "--out", str(tmp_path / "b2"), "--broker", "mqtt.example.org:8883",
                    *_where(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "renewed dev-r" in done.stdout and "keeps its signing key" in done.stdout
    new = load_certificate(tmp_path / "b2" / "device.crt")
    assert new.serial_number != old.serial_number and old.serial_number in revoked_serials(pki)
    assert new.serial_number not in revoked_serials(pki) and not pki.key_path("dev-r").exists()
    database = open_central_database(tmp_path / "central.db")
    device = Device.get(Device.device_id == "dev-r")
    assert (device.signing_public_key, device.signing_key_fingerprint, device.state, device.clinic) == \
        ("PINNED", "REGISTERED", "enrolled", "Clinic R")
    assert device.cert_fingerprint in done.stdout
    event = AuditEvent.get(AuditEvent.action == "renew")
    assert event.entity_id == "dev-r" and event.after["cert_fingerprint"] == device.cert_fingerprint
    Device.update(state="revoked").execute()
    database.close()

    refused = allscope("central", "renew", "dev-r", "--out", str(tmp_path / "b3"), *_where(tmp_path))
    assert refused.returncode != 0 and refused.stderr.count("\n") == 1, refused.stderr
    assert "dev-r is revoked: renewing would readmit it" in refused.stderr and not (tmp_path / "b3").exists()
    unknown = allscope("central", "renew", "dev-x", "--out", str(tmp_path / "b4"), *_where(tmp_path))
    assert unknown.returncode != 0 and "no enrolled device 'dev-x'" in unknown.stderr


def test_web_enrolment_says_in_one_line_that_it_needs_the_ca_key_kept_offline(admin, central):  # noqa: F811
    from sync.central.models import Device

    pki = init_pki(central.central.pki_dir)
    pki.ca_key.rename(pki.root.parent / "ca.key.offline")  # the admin moved it to removable media
    page = admin.get("/devices/enrol")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Web enrolment is off: the CA key" in html and "kept offline" in html
    assert "allscope central enrol" in html and '<form method="post" class="stack">' not in html
    token = form_token(admin, "/devices")
    posted = admin.post("/devices/enrol", data={"csrf_token": token, "device_id": "scope-off-1", "clinic": "",
                                                "broker": "localhost:8883"})
    assert posted.status_code == 409 and "Web enrolment is off" in posted.get_data(as_text=True)
    assert not Device.select().where(Device.device_id == "scope-off-1").exists()
    assert not pki.cert_path("scope-off-1").exists()
