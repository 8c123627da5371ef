"""Health at a glance on the devices page: silent devices, certificate expiry (a real fleet PKI), software and
model from status messages, ingestion errors per day (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from central_web_kit import admin, central, device_row  # noqa: F401  (fixtures)

from device.store.records import utcnow


def _reissue(pki, name: str, days_left: float) -> None:
    """Replace ``name``'s certificate with one signed by the fleet CA that expires in ``days_left`` days."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import CertificateBuilder, random_serial_number

    from sync.fleet.pki import load_certificate

    ca_cert, ca_key = pki.load_ca()
    old = load_certificate(pki.cert_path(name))
    now = dt.datetime.now(dt.UTC)
    cert = (CertificateBuilder().subject_name(old.subject).issuer_name(ca_cert.subject).public_key(old.public_key())
            .serial_number(random_serial_number()).not_valid_before(now - dt.timedelta(days=400))
            .not_valid_after(now + dt.timedelta(days=days_left)).sign(ca_key, hashes.SHA256()))
    pki.cert_path(name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture
def fleet_pki(central):
    from sync.fleet.pki import init_pki, issue

    pki = init_pki(central.central.pki_dir)
    for name in ("scope-kano-01", "scope-jos-02"):
        issue(pki, name)
    return pki


@pytest.fixture(params=["sqlite", "postgresql"])
def bound(request, tmp_path):
    from sync.central.db import open_central_database

    url = tmp_path / "central.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    database = open_central_database(url)
    yield database
    database.close()


def test_errors_per_day_counts_each_of_the_last_14_days(bound):
    from sync.central.fleet_health import errors_per_day
    from sync.central.models import IngestError

    now = dt.datetime(2026, 3, 15, 10, 0)
    for days_ago, n in ((0, 2), (1, 1), (13, 4), (14, 5), (40, 1)):  # 14 and 40 days ago: outside the window
        for _ in range(n):
            IngestError.create(at=now - dt.timedelta(days=days_ago), reason="bad_signature", device_id="x")
    days = errors_per_day(14, now=now)
    assert len(days) == 14 and days[0][0] == dt.date(2026, 3, 2) and days[-1][0] == dt.date(2026, 3, 15)
    assert dict(days)[dt.date(2026, 3, 15)] == 2 and dict(days)[dt.date(2026, 3, 14)] == 1
    assert dict(days)[dt.date(2026, 3, 2)] == 4 and sum(n for _, n in days) == 7


def test_silent_devices_by_last_seen_or_enrolment(bound):
    from sync.central.fleet_health import silent_devices

    now = utcnow()
    device_row("heard-today", last_seen_at=now - dt.timedelta(hours=2))
    device_row("quiet-5-days", last_seen_at=now - dt.timedelta(days=5))
    device_row("never-heard", enrolled_at=now - dt.timedelta(days=9))
    device_row("just-enrolled", enrolled_at=now - dt.timedelta(hours=1))
    device_row("revoked-long-ago", state="revoked", last_seen_at=now - dt.timedelta(days=90))
    assert [d.device_id for d in silent_devices(3, now=now)] == ["never-heard", "quiet-5-days"]
    assert [d.device_id for d in silent_devices(7, now=now)] == ["never-heard"]


def test_certificate_expiry_levels_from_the_pki(central, fleet_pki):
    from sync.central.fleet_health import certificate_expiries

    _reissue(fleet_pki, "scope-kano-01", days_left=10)
    _reissue(fleet_pki, "broker", days_left=-2)
    with central.app_context():
        device_row("scope-kano-01")
        device_row("scope-jos-02")
        device_row("scope-lost-03")  # enrolled, but its certificate is not in issued/
        rows = {row.name: row for row in certificate_expiries(fleet_pki.root, warn_days=30)}
    assert set(rows) == {"fleet CA", "broker", "central", "scope-kano-01", "scope-jos-02", "scope-lost-03"}
    assert rows["broker"].level == "expired" and rows["broker"].days_left < 0
    assert rows["scope-kano-01"].level == "warning" and rows["scope-kano-01"].days_left in (9, 10)
    assert rows["scope-lost-03"].level == "missing"
    assert rows["fleet CA"].level == rows["central"].level == rows["scope-jos-02"].level == "ok"
    first = certificate_expiries(fleet_pki.root, warn_days=30)
    assert [row.level for row in first][:3] == ["expired", "missing", "warning"]


def test_devices_page_shows_health_at_a_glance(central, admin, fleet_pki):
    from sync.central.models import IngestError

    _reissue(fleet_pki, "scope-jos-02", days_left=5)
    now = utcnow()
    with central.app_context():
        device_row("scope-kano-01", last_seen_at=now - dt.timedelta(minutes=3), software_version="0.1.0",
                   model_id="3f2a9c1b", model_name="allscope_blast", model_version="2.0.0")
        device_row("scope-jos-02", clinic="Jos", last_seen_at=now - dt.timedelta(days=6))
        for _ in range(3):
            IngestError.create(reason="bad_signature", device_id="scope-jos-02")
    html = admin.get("/devices").get_data(as_text=True)
    health = html.split('id="health-title"')[1].split("</section>")[0]
    silent = health.split("<h3>Certificates")[0]
    assert "Silent for more than 3 days" in silent and "scope-jos-02" in silent and "scope-kano-01" not in silent
    assert "1 certificate expired, missing or expiring within 30 days" in health
    assert re.search(r'ce-cert-warning"><td>scope-jos-02', health)
    assert re.search(r'ce-cert-ok"><td>fleet CA', health) and re.search(r'ce-cert-ok"><td>broker', health)
    today = now.date().isoformat()
    assert re.search(rf"<td>{today}</td><td><a href=\"/errors\">3</a>", health)
    assert health.count("<meter") == 14
    table = html.split('class="list ce-devices"')[1]
    assert "0.1.0" in table and "allscope_blast 2.0.0" in table and "3f2a9c1b" in table
    assert table.count("badge ce-warn") == 1  # the silent device, in its row
