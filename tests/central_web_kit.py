"""Shared by the central admin UI tests: the app with its users, a logged-in admin, received records."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
from conftest import Auth, csrf_from

# endpoint -> who may call it ("anonymous" means everyone)
ANON, ADMIN_ONLY = "anonymous", "admin"


TABLE = {
    "static": ANON,
    "central_static": ANON,
    "auth.login": ANON,
    "auth.setup": ANON,        # 404 once a user exists, for everyone
    "auth.home": ADMIN_ONLY,
    "auth.logout": "any user",
    "devices.device_list": ADMIN_ONLY,
    "devices.device_page": ADMIN_ONLY,
    "devices.enrol": ADMIN_ONLY,
    "devices.revoke_confirm": ADMIN_ONLY,
    "devices.revoke": ADMIN_ONLY,
    "devices.register_key": ADMIN_ONLY,
    "records.record_list": ADMIN_ONLY,
    "records.record_page": ADMIN_ONLY,
    "records.patient_page": ADMIN_ONLY,
    "records.received_file": ADMIN_ONLY,
    "ingest.error_list": ADMIN_ONLY,
    "monitoring.healthz": ANON,   # no authentication
    "monitoring.metrics": ANON,   # by network, not by role (tests/central/test_central_monitoring.py)
    "people.user_list": ADMIN_ONLY,
    "people.user_create": ADMIN_ONLY,
    "people.user_disable": ADMIN_ONLY,
    "people.user_enable": ADMIN_ONLY,
    "people.user_password": ADMIN_ONLY,
    "people.user_roles": ADMIN_ONLY,
    "people.audit_trail": ADMIN_ONLY,
    "exports.export_page": ADMIN_ONLY,  # and pathologists (none among CENTRAL_USERS: test_central_export.py)
    "exports.export_csv": ADMIN_ONLY,   # likewise
}


@pytest.fixture
def central(tmp_path, central_users_db):
    from sync.central.web.app import create_central_app

    data = tmp_path / "central"
    data.mkdir()
    shutil.copyfile(central_users_db, data / "central.db")
    app = create_central_app(data / "central.db", data, pki_dir=tmp_path / "pki", page_size=5)
    app.testing = True
    yield app
    app.central.database.close()


@pytest.fixture
def admin(central):
    client = central.test_client()
    response = Auth(client).login("boss")
    assert response.status_code == 302 and response.location.endswith("/devices")
    return client


def device_row(device_id="scope-kano-01", clinic="Kano General", **fields):
    from sync.central.models import Device

    return Device.create(device_id=device_id, clinic=clinic, cert_fingerprint="AB:" * 31 + "CD", **fields)


def record_row(device, entity, record_id, version, payload, identifier, when=None):
    from sync.central.models import ReceivedRecord

    when = when or dt.datetime(2024, 5, 1, 12, 0) + dt.timedelta(minutes=record_id * 10 + version)
    return ReceivedRecord.create(device=device, entity=entity, record_id=record_id, version=version,
                                 content_sha256=f"{entity}{record_id}v{version}".ljust(64, "0"), payload=payload,
                                 created_at=when, patient_identifier=identifier)


def patient_row(device, record_id, identifier, name, version=1):
    return record_row(device, "patient", record_id, version,
                   {"id": record_id, "identifier": identifier, "name": name, "sex": "female", "version": version},
                   identifier)


def report_row(device, record_id, identifier, *, status, version=1, sync_version=1, signed_by=None, conclusion="",
               **payload):
    return record_row(device, "report", record_id, sync_version,
                   {"id": record_id, "sample_id": 7, "version": version, "status": status, "signed_by": signed_by,
                    "conclusion": conclusion, "patient_identifier": identifier, **payload}, identifier)


def form_token(client, path):
    return csrf_from(client.get(path).get_data(as_text=True))
