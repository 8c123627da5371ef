"""Schema v5 (issue 14): a cell's label source and a report's override reason, on a database made by v4."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

from device.store import migrations
from device.store.records import Capture, Cell, Patient, Report, Sample, db_proxy, open_database


def test_v4_labels_become_the_reviewers_own_and_the_new_columns_travel(tmp_path, monkeypatch):
    path = tmp_path / "allscope.db"
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:4])
    database = open_database(path)
    with db_proxy.atomic():
        patient = Patient.create(identifier="P-5", name="Ada")
        sample = Sample.create(patient=patient, created_by="tech")
        capture = Capture.create(sample=sample, image_path="images/x.png", sha256="ab" * 32, source="upload")
    for label in ("lymphocyte", None):  # raw SQL: the v5 models know columns v4 has not
        database.execute_sql("INSERT INTO cell (capture_id, x, y, w, h, crop_path, ai_label, p_blast, needs_review, "
                             "edge, reviewer_label, reviewed_by, reviewed_at) VALUES (?, 1, 1, 1, 1, '', 'normal', 0.1, "
                             "0, 0, ?, ?, ?)", (capture.id, label, "path" if label else None,
                                                 dt.datetime(2026, 1, 6) if label else None))
    database.execute_sql("INSERT INTO report (sample_id, version, status, conclusion, amendment_reason, created_at, "
                         "created_by) VALUES (?, 1, 'draft', '', '', '2026-01-06', 'path')", (sample.id,))
    database.close()
    monkeypatch.undo()

    database = open_database(path)
    assert migrations.schema_version(database) == len(migrations.MIGRATIONS) >= 5
    assert path.with_name("allscope.db.bak-v4").exists()
    labelled, unlabelled = Cell.select().order_by(Cell.id)
    assert (labelled.reviewer_label, labelled.label_source) == ("lymphocyte", "reviewer")
    assert unlabelled.label_source is None and Report.get().override_reason is None
    Capture.update(version=Capture.version + 1).where(Capture.id == capture.id).execute()  # re-sent: cells embedded
    Report.update(status="signed", override_reason="few cells").execute()
    database.close()
    raw = sqlite3.connect(path)
    payloads = {entity: json.loads(payload) for entity, payload in raw.execute(
        "SELECT entity, payload FROM outbox WHERE entity IN ('capture', 'report') ORDER BY id")}
    raw.close()
    assert [c["label_source"] for c in payloads["capture"]["cells"]] == ["reviewer", None]
    assert payloads["report"]["override_reason"] == "few cells"
