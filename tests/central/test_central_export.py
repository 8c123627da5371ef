"""The per-clinic CSV export: one row per report with identifiers, dates, counts and conclusion, no names or
images; admins and pathologists only; every download audited."""

from __future__ import annotations

import csv
import io

from central_web_kit import admin, central, device_row, patient_row, record_row, report_row  # noqa: F401
from conftest import TEST_PASSWORD, Auth


def _fill():
    kano = device_row("scope-kano-01", clinic="Kano General")
    other = device_row("scope-kano-02", clinic="Kano General")
    jos = device_row("scope-jos-01", clinic="Jos")
    patient_row(kano, 1, "P-1", "Ada Obi")
    record_row(kano, "sample", 7, 1, {"id": 7, "patient_identifier": "P-1", "collected_at": "2026-01-05T09:30:00"},
               "P-1")
    for capture_id, cells, blasts, status in ((1, 120, 3, "done"), (2, 90, 0, "done"), (3, 0, 0, "failed")):
        record_row(kano, "capture", capture_id, 1, {"id": capture_id, "sample_id": 7, "status": status,
                                                    "cell_count": cells, "blast_count": blasts, "review_count": 2},
                   "P-1")
    record_row(kano, "capture", 2, 2, {"id": 2, "sample_id": 7, "status": "done", "cell_count": 95, "blast_count": 1,
                                       "review_count": 0}, "P-1")  # a later version of capture 2 counts, not both
    report_row(kano, 4, "P-1", status="draft")
    report_row(kano, 4, "P-1", status="signed", sync_version=2, signed_by="dr.bello",
               conclusion="=HYPERLINK(\"x\") blasts seen, refer", signed_at="2026-01-06T10:00:00")
    report_row(other, 1, "P-9", status="draft", sample_id=3)
    report_row(jos, 1, "J-1", status="signed", conclusion="no blasts")


def test_admin_downloads_one_clinic_as_csv_and_it_is_audited(central, admin):
    from device.store.records import AuditEvent

    with central.app_context():
        _fill()
    page = admin.get("/export").get_data(as_text=True)
    assert "Kano General (CSV)" in page and "Jos (CSV)" in page
    response = admin.get("/export.csv", query_string={"clinic": "Kano General"})
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert 'filename="allscope-Kano-General.csv"' in response.headers["Content-Disposition"]
    text = response.get_data(as_text=True)
    assert "Ada Obi" not in text and "J-1" not in text and ".png" not in text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["device"], r["report_id"], r["status"]) for r in rows] == [
        ("scope-kano-01", "4", "signed"), ("scope-kano-02", "1", "draft")]
    first = rows[0]
    assert first["patient_identifier"] == "P-1" and first["sample_id"] == "7"
    assert first["collected_at"] == "2026-01-05T09:30:00" and first["signed_by"] == "dr.bello"
    assert (first["captures"], first["white_cells"], first["blasts"], first["needs_review"]) == ("2", "215", "4", "2")
    assert first["conclusion"] == "'=HYPERLINK(\"x\") blasts seen, refer"  # never a formula in a spreadsheet
    assert rows[1]["captures"] == "0" and rows[1]["white_cells"] == "0"
    with central.app_context():
        event = AuditEvent.select().where(AuditEvent.action == "export").get()
    assert (event.username, event.entity, event.entity_id) == ("boss", "clinic", "Kano General")
    assert event.detail == "CSV of 2 reports of Kano General"
    assert admin.get("/export.csv", query_string={"clinic": "Nowhere"}).status_code == 404


def test_pathologist_may_export_and_sees_nothing_else(central):
    from device.services import accounts

    with central.app_context():
        _fill()
        accounts.create_user("lab", TEST_PASSWORD, ["pathologist"])
    client = central.test_client()
    login = Auth(client).login("lab")
    assert login.status_code == 302 and login.location.endswith("/export")
    page = client.get("/export").get_data(as_text=True)
    assert 'href="/devices"' not in page and 'href="/users"' not in page  # the nav shows what the role may open
    assert client.get("/export.csv", query_string={"clinic": "Jos"}).status_code == 200
    for url in ("/devices", "/records", "/errors", "/users", "/audit"):
        assert client.get(url).status_code == 403, url
    tech = central.test_client()
    Auth(tech).login("tech")
    assert tech.get("/export").status_code == 403
    assert tech.get("/export.csv", query_string={"clinic": "Jos"}).status_code == 403
