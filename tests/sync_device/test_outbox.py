"""The device outbox: triggers enqueue every change in its own transaction, payloads carry every column,
acks remove entries atomically, file chunk progress survives a restart, and v1 databases are backfilled."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

import peewee as pw
import pytest
from conftest import csrf_from
from review_data import add_sample, api_headers

from device.services import signoff
from device.store import migrations
from device.store.records import Capture, Cell, Patient, Report, Sample, db_proxy, open_database
from sync.agent import outbox
from sync.agent.outbox import OutboxEntry, SyncVersion

PATIENT_FORM = {"identifier": "MRN-0001", "name": "Ada Example", "date_of_birth": "1980-05-17", "sex": "female",
                "referring_clinician": "Dr Who", "symptoms": "fatigue", "wbc": "54.2", "hemoglobin": "8.1",
                "platelets": "31", "notes": ""}
EXTRA_MEMBERS = {"patient": {"patient_identifier"}, "sample": {"patient_identifier"},
                 "capture": {"patient_identifier", "cells"}, "report": {"patient_identifier"}}
MODELS = {"patient": Patient, "sample": Sample, "capture": Capture, "report": Report}


@pytest.fixture
def db(tmp_path):
    database = open_database(tmp_path / "allscope.db")
    yield database
    database.close()


def entries(entity: str | None = None) -> list[OutboxEntry]:
    query = OutboxEntry.select().order_by(OutboxEntry.id)
    return list(query.where(OutboxEntry.entity == entity) if entity else query)


def sync_version(entity: str, record_id: int) -> int:
    return SyncVersion.get((SyncVersion.entity == entity) & (SyncVersion.record_id == record_id)).version


def columns(model) -> set[str]:
    return {field.column_name for field in model._meta.sorted_fields}


def full_rows():
    """One row of each synced model with every nullable column filled, and a capture with two cells."""
    with db_proxy.atomic():
        patient = Patient.create(identifier="P-1", name="Ada", date_of_birth=dt.date(1980, 5, 17), sex="female",
                                 wbc=54.2, hemoglobin=8.1, platelets=31.0, notes="n")
        sample = Sample.create(patient=patient, collected_at=dt.datetime(2026, 1, 5, 9, 30), created_by="tech")
        capture = Capture.create(sample=sample, image_path="images/ab/x.png", sha256="ab" * 32, source="upload",
                                 camera_meta={"exposure": 10}, quality={"usable": True}, timings_ms={"total": 5.5},
                                 analysed_at=dt.datetime(2026, 1, 5, 9, 31))
        for index in range(2):
            Cell.create(capture=capture, x=index, y=2, w=3, h=4, crop_path=f"crops/1/{index}.png", ai_label="blast",
                        p_blast=0.9, reviewer_label="normal", reviewed_by="path", reviewed_at=dt.datetime(2026, 1, 6))
        Capture.update(cell_count=2).where(Capture.id == capture.id).execute()
        first = Report.create(sample=sample, ai_summary={"blast_percent": 50.0}, signed_by="path",
                              signed_at=dt.datetime(2026, 1, 6), status="signed")
        Report.create(sample=sample, version=2, supersedes=first)
    return patient, sample, capture


# --- the schema ------------------------------------------------------------------------------------------

def test_sync_models_agree_with_the_migrated_schema(db):
    for model in outbox.SYNC_MODELS:
        table = model._meta.table_name
        found = {row[1] for row in db.execute_sql(f'PRAGMA table_info("{table}")').fetchall()}
        assert found == columns(model), f"{model.__name__} and migration v2 disagree"
    assert migrations.schema_version(db) == len(migrations.MIGRATIONS) >= 2


def test_every_model_column_travels_in_its_payload(db):
    patient, sample, capture = full_rows()
    for entity, model in MODELS.items():
        latest = entries(entity)[-1].data()
        assert set(latest) == columns(model) | EXTRA_MEMBERS[entity], \
            f"{entity}: payload and model columns differ (a new column needs a migration of the sync triggers)"
        assert latest["patient_identifier"] == "P-1"
    capture_payload = entries("capture")[-1].data()
    assert [set(cell) for cell in capture_payload["cells"]] == [columns(Cell)] * 2
    assert [cell["x"] for cell in capture_payload["cells"]] == [0.0, 1.0]  # cells in id order
    assert capture_payload["quality"] == {"usable": True} and capture_payload["cell_count"] == 2  # JSON as JSON
    report = entries("report")[-1].data()
    assert (report["supersedes_id"], report["version"], report["ai_summary"]) == (1, 2, None)
    assert entries("report")[0].data()["ai_summary"] == {"blast_percent": 50.0}
    patient_payload = entries("patient")[0].data()
    assert (patient_payload["wbc"], patient_payload["date_of_birth"], patient_payload["name"]) == (54.2, "1980-05-17",
                                                                                                  "Ada")


# --- one entry per change, in the change's transaction ---------------------------------------------------

def test_registering_and_editing_a_patient_on_the_web_enqueues_one_entry_per_change(app, client, auth):
    auth.login("tech")
    token = csrf_from(client.get("/patients/new").get_data(as_text=True))
    assert client.post("/patients/new", data=dict(PATIENT_FORM, csrf_token=token)).status_code == 302
    with app.app_context():
        patient = Patient.get(Patient.identifier == "MRN-0001")
        [created] = entries()
        assert (created.record, created.version, created.data()["wbc"]) == (f"patient:{patient.id}", 1, 54.2)
    form = dict(PATIENT_FORM, csrf_token=token, wbc="60")
    assert client.post(f"/patients/{patient.id}/edit", data=form).status_code == 302
    client.post(f"/patients/{patient.id}/edit", data=form)  # nothing changed: no new version, no entry
    with app.app_context():
        assert [(e.version, e.data()["wbc"], e.data()["version"]) for e in entries()] == [(1, 54.2, 1), (2, 60.0, 2)]
        assert sync_version("patient", patient.id) == 2


def test_a_rolled_back_change_leaves_no_entry(db):
    with pytest.raises(RuntimeError):
        with db_proxy.atomic():
            Patient.create(identifier="P-1", name="Ada")
            assert len(entries()) == 1  # visible inside the transaction...
            raise RuntimeError("power cut")
    assert entries() == [] and SyncVersion.select().count() == 0  # ...and gone with it
    patient = Patient.create(identifier="P-1", name="Ada")
    with pytest.raises(pw.IntegrityError):
        with db_proxy.atomic():
            Patient.update(name="Bea", version=2).where(Patient.id == patient.id).execute()
            Patient.create(identifier="P-1", name="duplicate")  # fails: the update rolls back with it
    assert [(e.version, e.data()["name"]) for e in entries()] == [(1, "Ada")]


def test_no_op_writes_enqueue_nothing_and_versions_count_per_record(db):
    first, second = Patient.create(identifier="P-1", name="A"), Patient.create(identifier="P-2", name="B")
    first.save()  # writes every column, changes none
    Patient.update(name="A").where(Patient.id == first.id).execute()
    assert len(entries()) == 2
    for name in ("A2", "A3"):
        first.name = name
        first.save()
    second.notes = "x"
    second.save()
    assert [(e.record, e.version) for e in entries()] == [
        ("patient:1", 1), ("patient:2", 1), ("patient:1", 2), ("patient:1", 3), ("patient:2", 2)]
    assert (sync_version("patient", first.id), sync_version("patient", second.id)) == (3, 2)


def test_relabel_on_the_web_sends_the_capture_with_the_new_label(app, client, auth):
    sample_id, cell_ids = add_sample(app)
    with app.app_context():
        capture_id = Cell.get_by_id(cell_ids[2]).capture_id
        before = len(entries("capture"))
    auth.login("path")
    response = client.post(f"/api/cells/{cell_ids[2]}/label", json={"label": "normal"}, headers=api_headers(client))
    assert response.status_code == 200
    with app.app_context():
        captures = entries("capture")
        assert len(captures) == before + 1
        latest = captures[-1]
        assert latest.record == f"capture:{capture_id}" and latest.version == sync_version("capture", capture_id)
        cells = {cell["id"]: cell for cell in latest.data()["cells"]}
        assert (cells[cell_ids[2]]["reviewer_label"], cells[cell_ids[2]]["ai_label"]) == ("normal", "blast")
        assert cells[cell_ids[2]]["reviewed_by"] == "path" and latest.data()["patient_identifier"] == "MRN-0042"
        assert cells[cell_ids[0]]["reviewer_label"] is None


def test_diagnoses_travel_with_every_version(app):
    sample_id, cell_ids = add_sample(app)
    with app.app_context():
        sample = Sample.get_by_id(sample_id)
        for cell_id, value in ((cell_ids[2], "blast"), (cell_ids[3], "normal"), (cell_ids[5], "normal")):
            signoff.relabel(Cell.get_by_id(cell_id), value, username="path")
        first = signoff.sign(sample, "ALL suspected", username="path")
        second = signoff.start_amendment(first, "typo", username="path")
        signoff.sign(sample, "ALL confirmed", username="path")
        reports = [(e.record_id, e.data()["version"], e.data()["status"], e.data()["conclusion"])
                   for e in entries("report")]
        assert (first.id, 1, "signed", "ALL suspected") in reports
        assert (first.id, 1, "amended", "ALL suspected") in reports
        assert (second.id, 2, "signed", "ALL confirmed") in reports and reports[0][2] == "draft"
        assert all(e.data()["patient_identifier"] == "MRN-0042" for e in entries("report"))


# --- reading and acknowledging ---------------------------------------------------------------------------

def _ack(entry: OutboxEntry, status: str = "stored", **changes) -> dict:
    return {"entry": entry.id, "record": entry.record, "version": entry.version, "status": status, "reason": "",
            **changes}


def test_pending_in_id_order_and_sent_marks(db):
    for number in range(5):
        Patient.create(identifier=f"P-{number}", name="x")
    first_three = outbox.pending(3)
    assert [e.id for e in first_three] == sorted(e.id for e in first_three) and len(first_three) == 3
    assert [e.id for e in outbox.pending(10, after_id=first_three[-1].id)] == [e.id for e in entries()[3:]]
    outbox.mark_sent([e.id for e in first_three])
    outbox.mark_sent([first_three[0].id])
    assert [e.attempts for e in entries()] == [2, 1, 1, 0, 0] and entries()[0].sent_at
    assert outbox.backlog() == 5 and outbox.status()["pending"] == 5


def test_only_matching_acks_remove_entries_and_rejections_stay(db):
    patient = Patient.create(identifier="P-1", name="A")
    patient.name = "B"
    patient.save()
    Patient.create(identifier="P-2", name="C")
    one, two, three = entries()
    removed = outbox.remove_acked([
        _ack(one), _ack(two, version=1),             # right entry; wrong version: ignored
        _ack(three, "rejected", reason="replay_conflict"),
        {"entry": 999, "record": "file:" + "ab" * 32, "version": 1, "status": "stored", "reason": "", "index": 0},
    ])
    assert removed == 1 and [e.id for e in entries()] == [two.id, three.id]
    assert "replay_conflict" in entries()[1].last_error
    status = outbox.status()
    assert status["last_ack_at"] and "replay_conflict" in status["last_error"] and status["pending"] == 2
    assert outbox.remove_acked([_ack(two, "duplicate"), _ack(three)]) == 2 and outbox.backlog() == 0
    assert outbox.status()["last_error"] is None  # entries stored since: the rejection is history (issue 16)


def test_remove_acked_is_one_transaction(db):
    Patient.create(identifier="P-1", name="A")
    Patient.create(identifier="P-2", name="B")
    one, two = entries()
    with pytest.raises(KeyError):
        outbox.remove_acked([_ack(one), {"entry": two.id, "status": "stored"}])  # second item is broken
    assert [e.id for e in entries()] == [one.id, two.id] and outbox.get_state("last_ack_at") == ""


def test_file_chunk_progress_survives_a_reopen(tmp_path):
    path = tmp_path / "allscope.db"
    database = open_database(path)
    row = outbox.file_progress("cd" * 32, name="crops/1/0.png", size=1000, chunks=3)
    assert row.missing() == [0, 1, 2] and not row.complete
    assert outbox.mark_chunk_acked("cd" * 32, 2) is False
    assert outbox.mark_chunk_acked("cd" * 32, 7) is False and outbox.mark_chunk_acked("ef" * 32, 0) is False
    database.close()
    database = open_database(path)
    row = outbox.file_progress("cd" * 32, name="crops/1/0.png", size=1000, chunks=3)
    assert row.missing() == [0, 1]
    assert outbox.mark_chunk_acked("cd" * 32, 0) is False and outbox.mark_chunk_acked("cd" * 32, 1) is True
    assert outbox.file_complete("cd" * 32)
    assert outbox.file_progress("cd" * 32, name="crops/1/0.png", size=1000, chunks=5).missing() == [0, 1, 2, 3, 4]
    database.close()


# --- upgrading a v1 database -----------------------------------------------------------------------------

def test_upgrading_from_v1_queues_the_records_already_there(tmp_path, monkeypatch):
    path = tmp_path / "allscope.db"
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1])
    open_database(path)
    full_rows()
    db_proxy.obj.close()
    monkeypatch.undo()
    database = open_database(path)
    assert path.with_name("allscope.db.bak-v1").exists()
    queued = [(e.entity, e.record_id, e.version) for e in entries()]
    assert queued == [("patient", 1, 1), ("sample", 1, 1), ("capture", 1, 1), ("report", 1, 1), ("report", 2, 1)]
    capture = entries("capture")[0].data()
    assert len(capture["cells"]) == 2 and capture["patient_identifier"] == "P-1" and capture["cell_count"] == 2
    Patient.update(name="Bea").where(Patient.id == 1).execute()
    assert entries("patient")[-1].version == 2  # the triggers continue from the backfilled versions
    database.close()
    raw = sqlite3.connect(path)
    assert json.loads(raw.execute("SELECT payload FROM outbox WHERE entity='patient' ORDER BY id DESC")
                      .fetchone()[0])["name"] == "Bea"
    raw.close()
