"""Central admin UI: records per clinic and device with search, one record, a patient's diagnoses,
ingestion errors, and the ``central users`` / ``central serve`` commands."""

from __future__ import annotations

import re

import pytest
from central_web_kit import (  # noqa: F401  (shared fixtures and helpers)
    admin,
    central,
    device_row,
    patient_row,
    report_row,
)
from conftest import TEST_PASSWORD


@pytest.fixture
def fleet():
    kano = device_row("scope-kano-01", clinic="Kano General")
    jos = device_row("scope-jos-02", clinic="Jos Teaching")
    patient_row(kano, 1, "KN-100", "Ada Obi")
    patient_row(kano, 1, "KN-100", "Ada Obi-Eze", version=2)
    patient_row(kano, 2, "KN-200", "Musa Bello")
    patient_row(jos, 1, "JT-9", "Zoë Ibrahim")
    report_row(kano, 5, "KN-100", status="amended", version=1, sync_version=1, signed_by="drbala",
               conclusion="No blasts.")
    report_row(kano, 6, "KN-100", status="signed", version=2, sync_version=1, signed_by="drbala",
            conclusion="Blasts 30 %: refer to haematology.", override_reason="Dry tap: 40 white cells only.")
    report_row(jos, 3, "JT-9", status="draft")
    return {"kano": kano, "jos": jos}


def _listed(html: str) -> set[str]:
    return set(re.findall(r">((?:patient|sample|capture|report) \d+ · v\d+)<", html))


def test_records_search_by_identifier_and_by_name(admin, fleet):
    everything = admin.get("/records").get_data(as_text=True)
    assert "7 record versions" in everything and "page 1 of 2" in everything  # page size 5 in the fixture
    by_id = admin.get("/records?q=kn-1").get_data(as_text=True)  # case-insensitive, part of the identifier
    assert _listed(by_id) == {"patient 1 · v1", "patient 1 · v2", "report 5 · v1", "report 6 · v1"}
    by_name = admin.get("/records?q=bello").get_data(as_text=True)
    assert _listed(by_name) == {"patient 2 · v1"}
    accented = admin.get("/records?q=zoë").get_data(as_text=True)  # non-ASCII names are stored \\u-escaped
    assert _listed(accented) == {"patient 1 · v1", "report 3 · v1"} and "scope-jos-02" in accented
    nothing = admin.get("/records?q=nobody").get_data(as_text=True)
    assert "No record matches." in nothing and "0 record versions" in nothing


def test_records_per_clinic_device_and_kind(admin, fleet):
    jos = admin.get("/records?clinic=Jos+Teaching").get_data(as_text=True)
    assert _listed(jos) == {"patient 1 · v1", "report 3 · v1"}
    assert "Kano General: 5 records, 1 device" in jos
    reports = admin.get("/records?device=scope-kano-01&entity=report").get_data(as_text=True)
    assert _listed(reports) == {"report 5 · v1", "report 6 · v1"}
    page2 = admin.get("/records?page=2").get_data(as_text=True)
    assert len(_listed(page2)) == 2 and "page 2 of 2" in page2


def test_record_page_shows_payload_and_versions_and_audits(admin, fleet):
    from device.store.records import AuditEvent
    from sync.central.models import ReceivedRecord

    record = ReceivedRecord.get((ReceivedRecord.entity == "patient") & (ReceivedRecord.version == 2))
    html = admin.get(f"/records/{record.id}").get_data(as_text=True)
    assert "Ada Obi-Eze" in html and "v1" in html and "v2" in html
    assert AuditEvent.select().where((AuditEvent.action == "view") & (AuditEvent.entity == "received_record")
                                     & (AuditEvent.entity_id == str(record.id))).count() == 1
    assert admin.get("/records/99999").status_code == 404


def test_patient_page_lists_diagnoses_newest_first_with_status_and_signer(admin, fleet):
    from device.store.records import AuditEvent

    response = admin.get("/patients/KN-100")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.index("Report 6 v2") < html.index("Report 5 v1")  # newest first
    assert "Signed by <strong>drbala</strong>" in html and "Blasts 30 %: refer to haematology." in html
    assert "amended" in html and "Ada Obi-Eze" in html and "Musa Bello" not in html
    assert "Signed below the minimum white cell count because: Dry tap: 40 white cells only." in html  # schema v5
    assert AuditEvent.get((AuditEvent.action == "view") & (AuditEvent.entity == "patient")).entity_id == "KN-100"
    assert "Not signed" in admin.get("/patients/JT-9").get_data(as_text=True)
    assert admin.get("/patients/NOPE").status_code == 404


def test_errors_page_counts_per_reason_and_filters(admin):
    from sync.central.models import IngestError

    for reason, n in (("bad_signature", 3), ("revoked", 2), ("replay_conflict", 1)):
        for i in range(n):
            IngestError.create(device_id="scope-kano-01" if i else "scope-x", reason=reason, detail=f"{reason} #{i}")
    html = admin.get("/errors").get_data(as_text=True)
    counts = dict(re.findall(r'<span class="ce-reason">(\w+)</span> <strong class="ce-n">(\d+)</strong>', html))
    assert counts == {"bad_signature": "3", "revoked": "2", "replay_conflict": "1"}
    assert list(counts) == ["bad_signature", "revoked", "replay_conflict"]  # most frequent first
    assert "6 errors" in html
    only = admin.get("/errors?reason=revoked").get_data(as_text=True)
    assert "2 errors" in only and "revoked #1" in only and "bad_signature #0" not in only
    by_device = admin.get("/errors?device=scope-x").get_data(as_text=True)
    assert "3 errors" in by_device


def _cli(*args, stdin=""):
    import subprocess
    import sys

    from conftest import REPO_ROOT

    return subprocess.run([sys.executable, "-m", "device.cli", "central", *args], input=stdin, text=True,
                          capture_output=True, cwd=REPO_ROOT, timeout=120)


def test_cli_users_create_and_list(tmp_path):
    data = str(tmp_path / "central")
    created = _cli("users", "create", "boss", "--role", "admin", "--data-dir", data, stdin=TEST_PASSWORD + "\n")
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "created boss (admin)"
    again = _cli("users", "--data-dir", data, "create", "boss", stdin=TEST_PASSWORD + "\n")
    assert again.returncode == 2 and again.stderr.strip() == "allscope: user 'boss' already exists"
    weak = _cli("users", "create", "other", "--data-dir", data, stdin="short\n")
    assert weak.returncode == 2 and "password too short" in weak.stderr and "Traceback" not in weak.stderr
    listed = _cli("users", "list", "--central-db", str(tmp_path / "central" / "central.db"))
    assert listed.returncode == 0 and listed.stdout.startswith("boss\tadmin\tactive\tlast login never")


def test_cli_serve_answers_the_login_page(tmp_path):
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from conftest import REPO_ROOT, free_port

    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "device.cli", "central", "serve", "--data-dir",
                                str(tmp_path / "central"), "--port", str(port)], stdout=log, stderr=log,
                               cwd=REPO_ROOT, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/setup", timeout=2) as response:
                    body = response.read().decode()
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail((tmp_path / "serve.log").read_text())
                time.sleep(0.2)
        assert "create the central administrator" in body
        assert (tmp_path / "central" / "central.db").exists()
        assert oct((tmp_path / "central" / "secret_key").stat().st_mode & 0o777) == "0o600"
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0
        log.close()
    assert "/setup" in (tmp_path / "serve.log").read_text()
