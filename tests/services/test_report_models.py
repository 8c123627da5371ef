"""A report names the model that produced each capture's results, with that model's own validation figures,
and orders cells by their distance from the decision threshold in force (issue 11, defect 2).

Real model files (the shipped float32 file copied under another name, and the int8 file re-embedded with
other metadata), real analyses of a demo frame, a real SQLite file per test.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sqlite3
import zipfile

import pytest
from review_data import REPO_ROOT, add_capture, add_sample, api_headers, app_data

from device.core.decision import DecisionSettings
from device.inference.model_info import read_model_info, tflite_metadata_general
from device.resources import DEFAULT_MODEL
from device.services import fhir, reporting
from device.services.jobs import AnalysisWorker, encode_png
from device.services.report_model import NOT_RECORDED, model_line
from device.services.report_pdf import render_report_pdf
from device.store import migrations
from device.store.records import Capture, Cell, Patient, Report, Sample, open_database

MODELS = REPO_ROOT / "models"
CARD = json.loads((MODELS / "model_card.json").read_text())
# The paper's network (the default before v2.0.0), kept selectable with its own card: its float32 file is
# "another model" here, with figures of its own.
FLOAT32 = MODELS / "paper" / "allscope_blast_float32.tflite"
PAPER_CARD = json.loads((MODELS / "paper" / "model_card.json").read_text())
SITE_SENSITIVITY, SITE_AUC = 0.6543, 0.8765  # the re-embedded model's own (made-up) figures


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def site_model(tmp_path_factory):
    """The shipped int8 graph re-embedded with other metadata: another name, version and validation figures."""
    from model_conversion.metadata import embed_metadata

    data = DEFAULT_MODEL.read_bytes()
    raw = data[:min(info.header_offset for info in zipfile.ZipFile(io.BytesIO(data)).infolist())]
    provenance = dict(read_model_info(DEFAULT_MODEL).provenance)
    provenance["validation"] = dict(provenance["validation"], sensitivity=SITE_SENSITIVITY, roc_auc=SITE_AUC)
    path = tmp_path_factory.mktemp("models") / "site_blast.tflite"
    path.write_bytes(embed_metadata(raw, name="allscope_blast_site_int8", version="1.1.0", description="site model",
                                    author="a site", license="test", provenance=provenance))
    return path


@pytest.fixture(scope="module")
def demo_png():
    from device.core.imageio import load_image

    return encode_png(load_image(REPO_ROOT / "device" / "demo" / "BloodImage_00000.jpg"))


def analyse(app, model, decision: DecisionSettings | None = None, png: bytes = b"", sample_id: int | None = None):
    """One capture of the demo frame analysed by the real worker with ``model``; returns (sample id, capture)."""
    data = app_data(app)
    with app.app_context():
        if sample_id is None:
            patient = Patient.get_or_none(Patient.identifier == "MRN-M") or Patient.create(identifier="MRN-M",
                                                                                            name="Model Test")
            sample_id = Sample.create(patient=patient, created_by="tech").id
        relative, digest = data.store_image(png)
        capture = Capture.create(sample=sample_id, image_path=relative, sha256=digest, source="upload",
                                 status="queued")
    worker = AnalysisWorker(data, model, decision=decision, watchdog_seconds=None).start()
    try:
        worker.enqueue(capture.id)
        assert worker.wait_idle(120)
    finally:
        worker.stop()
    with app.app_context():
        capture = Capture.get_by_id(capture.id)
    assert capture.status == "done", capture.error
    return sample_id, capture


def sign(app, client, auth, sample_id: int) -> int:
    """Label every flagged cell, sign, and return the report id."""
    auth.login("path")
    headers = api_headers(client)
    with app.app_context():
        flagged = [c.id for c in Cell.select().join(Capture).where(Capture.sample == sample_id, Cell.needs_review)]
    for cell_id in flagged:
        assert client.post(f"/api/cells/{cell_id}/label", json={"label": "normal"}, headers=headers).status_code == 200
    response = client.post(f"/api/samples/{sample_id}/report/sign", json={"conclusion": "Reviewed."}, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["report"]["id"]


def fhir_of(client, report_id: int) -> tuple[dict, str, dict]:
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    resource = client.get(f"/reports/{report_id}/fhir.json").get_json()
    DiagnosticReport.model_validate(resource)
    lines = " ".join(e.get("valueString", "") for e in resource["extension"] if e["url"] == "urn:allscope:fhir:model")
    devices = {d["identifier"][0]["value"]: d for d in resource["contained"] if d["resourceType"] == "Device"}
    return resource, lines, devices


# --- the model file says who it is -----------------------------------------------------------------------

def test_model_file_names_itself_from_its_metadata(site_model):
    from model_conversion.frozen_fit import FROZEN_MODEL_VERSION as MODEL_VERSION

    shipped = read_model_info(DEFAULT_MODEL)
    assert (shipped.name, shipped.version) == ("allscope_blast_int8", MODEL_VERSION)
    identity = read_model_info(site_model).identity()
    assert (identity["name"], identity["version"], identity["variant"]) == ("allscope_blast_site_int8", "1.1.0", "int8")
    assert identity["sha256"] == sha(site_model) != shipped.sha256 and identity["file"] == "site_blast.tflite"
    assert identity["validation"]["sensitivity"] == SITE_SENSITIVITY
    for broken in (b"", b"TFL3" * 3, DEFAULT_MODEL.read_bytes()[:5000]):
        assert tflite_metadata_general(broken) == {}


# --- a capture records the model and threshold it was analysed with --------------------------------------

def test_worker_records_the_model_file_and_threshold_that_ran(app, demo_png, tmp_path):
    other = tmp_path / "another_name.tflite"
    shutil.copyfile(FLOAT32, other)
    _, capture = analyse(app, other, DecisionSettings(threshold=0.4, review_low=0.2, review_high=0.7), demo_png)
    recorded = capture.model_identity
    assert recorded["sha256"] == sha(FLOAT32) and capture.model_id == recorded["short_id"] == sha(FLOAT32)[:12]
    assert (recorded["name"], recorded["variant"], recorded["version"]) == ("allscope_blast_float32", "float32", "1.0.0")
    assert recorded["file"] == "another_name.tflite" and recorded["input_size"] == 96
    assert capture.decision == {"threshold": 0.4, "review_low": 0.2, "review_high": 0.7}
    _, default = analyse(app, DEFAULT_MODEL, None, demo_png)
    assert default.model_identity["sha256"] == sha(DEFAULT_MODEL)
    assert default.decision == DecisionSettings.from_model(read_model_info(DEFAULT_MODEL).provenance).as_dict()


# --- the report, its PDF and FHIR name the model that ran -----------------------------------------------

def test_report_pdf_and_fhir_name_the_float32_model_that_ran_with_its_own_figures(app, client, auth, demo_png,
                                                                                   tmp_path):
    other = tmp_path / "renamed.tflite"
    shutil.copyfile(FLOAT32, other)
    sample_id, capture = analyse(app, other, png=demo_png)
    report_id = sign(app, client, auth, sample_id)
    float_id, int8_id = sha(FLOAT32)[:12], sha(DEFAULT_MODEL)[:12]
    f32, i8 = PAPER_CARD["cell_level"]["float32"], CARD["cell_level"]["int8"]
    assert f32["sensitivity"] != i8["sensitivity"]  # else this test could not tell them apart

    page = client.get(f"/samples/{sample_id}/report").get_data(as_text=True)
    assert "allscope_blast_float32" in page and float_id in page and int8_id not in page
    assert f"sensitivity {f32['sensitivity']}" in page and f"ROC AUC {f32['roc_auc']}" in page
    assert f"sensitivity {i8['sensitivity']}" not in page  # never the shipped int8 figures for another model

    resource, lines, devices = fhir_of(client, report_id)
    assert float_id in lines and int8_id not in lines and f"sensitivity {f32['sensitivity']:.3f}" in lines
    assert list(devices) == [sha(FLOAT32)]
    device = devices[sha(FLOAT32)]
    assert device["deviceName"][0]["name"] == "allscope_blast_float32" and device["version"] == [{"value": "1.0.0"}]
    observations = [o for o in resource["contained"] if o["resourceType"] == "Observation"]
    assert {o["device"]["reference"] for o in observations} == {f"#{device['id']}"}

    with app.app_context():
        content = reporting.report_content(Report.get_by_id(report_id))
    raw = render_report_pdf(content, lambda c: None, unicode_font=None, compress=False)
    assert b"Model allscope_blast_float32 \\(float32, version 1.0.0, sha256 " + float_id.encode() in raw
    assert float_id.encode() in raw and int8_id.encode() not in raw


def test_a_sample_analysed_by_two_models_names_both_each_with_its_own_figures(app, client, auth, site_model):
    sample_id, _ = add_sample(app, cells=[dict(x=100, y=100, w=60, h=60, ai_label="blast", p_blast=0.9,
                                               needs_review=False, edge=False)])
    add_capture(app, sample_id, [dict(x=250, y=120, w=60, h=60, ai_label="normal", p_blast=0.1, needs_review=False,
                                      edge=False)], model=site_model)
    add_capture(app, sample_id, [], model=None)  # analysed before captures recorded their model
    report_id = sign(app, client, auth, sample_id)
    page = client.get(f"/samples/{sample_id}/report").get_data(as_text=True)
    assert "allscope_blast_int8" in page and "allscope_blast_site_int8" in page and "version 1.1.0" in page
    assert f"sensitivity {SITE_SENSITIVITY}" in page and "embedded in the model file" in page
    assert f"sensitivity {CARD['cell_level']['int8']['sensitivity']}" in page  # the shipped file: the card's
    assert "Frame 3: <strong>model not recorded</strong>" in page

    resource, lines, devices = fhir_of(client, report_id)
    assert set(devices) == {sha(DEFAULT_MODEL), sha(site_model)}
    assert "frame 1" in lines and "frame 2" in lines and f"sensitivity {SITE_SENSITIVITY:.3f}" in lines
    assert f"Frame 3: {NOT_RECORDED}" in lines
    assert all("device" not in o for o in resource["contained"] if o["resourceType"] == "Observation")
    references = {e["valueReference"]["reference"] for e in resource["extension"] if "valueReference" in e}
    assert references == {f"#{d['id']}" for d in devices.values()}  # every contained Device is referenced


def test_a_model_without_figures_is_said_to_have_none(app, client, auth, tmp_path):
    """A file that is neither the card's nor carries figures: no borrowed figures."""
    from model_conversion.metadata import embed_metadata

    data = DEFAULT_MODEL.read_bytes()
    raw = data[:min(info.header_offset for info in zipfile.ZipFile(io.BytesIO(data)).infolist())]
    provenance = {k: v for k, v in read_model_info(DEFAULT_MODEL).provenance.items() if k != "validation"}
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(embed_metadata(raw, name="bare_model", version="0.1", description="d", author="a", license="l",
                                    provenance=provenance))
    sample_id, _ = add_sample(app, cells=[], status="done")
    with app.app_context():
        Capture.delete().where(Capture.sample == sample_id).execute()
    add_capture(app, sample_id, [], model=bare)
    report_id = sign(app, client, auth, sample_id)
    page = client.get(f"/reports/{report_id}").get_data(as_text=True)
    assert "bare_model" in page and "No validation figures are recorded for this model." in page
    assert f"sensitivity {CARD['cell_level']['int8']['sensitivity']}" not in page


# --- a signed report never changes ------------------------------------------------------------------------

def test_signed_reports_keep_what_they_froze(app, client, auth, site_model):
    sample_id, _ = add_sample(app)
    report_id = sign(app, client, auth, sample_id)
    with app.app_context():
        frozen = Report.get_by_id(report_id).ai_summary
        # the capture's record changing afterwards (it cannot through the app) does not reach the signed report
        Capture.update(model_identity=read_model_info(site_model).identity()).execute()
    page = client.get(f"/reports/{report_id}").get_data(as_text=True)
    assert "allscope_blast_site_int8" not in page and sha(DEFAULT_MODEL)[:12] in page
    with app.app_context():
        assert Report.get_by_id(report_id).ai_summary == frozen

    # a report signed before captures recorded their model froze one "model" (the card's): shown as frozen
    legacy = {k: v for k, v in frozen.items() if k != "models"}
    legacy["model"] = {"name": "allscope_blast", "variant": "int8", "short_id": "0123456789ab", "input_size": 96,
                       "validation": {"description": "frozen", "cells": 1187, "sensitivity": 0.7212,
                                      "specificity": 0.8938, "precision": 0.7964, "roc_auc": 0.9248}}
    with app.app_context():
        Report.update(ai_summary=legacy).where(Report.id == report_id).execute()
    page = client.get(f"/reports/{report_id}").get_data(as_text=True)
    assert "Model allscope_blast (int8, sha256 <code>0123456789ab</code>" in page and "sensitivity 0.7212" in page
    _, lines, devices = fhir_of(client, report_id)
    assert "Model allscope_blast (int8, sha256 0123456789ab, input 96 px). Held-out validation on 1187" in lines
    with app.app_context():
        assert Report.get_by_id(report_id).ai_summary == legacy


# --- hardest first: |p - threshold in force| -------------------------------------------------------------

CELLS = [dict(x=100 + 120 * i, y=150, w=60, h=60, ai_label="normal", p_blast=p, needs_review=False, edge=False)
         for i, p in enumerate((0.33, 0.52, 0.15))]


def _order(client, sample_id: int) -> list[int]:
    return [c["id"] for c in client.get(f"/api/samples/{sample_id}/review").get_json()["cells"]]


def test_hardest_first_uses_the_threshold_the_capture_was_analysed_with(app, client, auth):
    sample_id, ids = add_sample(app, cells=[])
    ids = add_capture(app, sample_id, CELLS, threshold=0.3)
    auth.login("path")
    # |p - 0.3| = 0.03, 0.22, 0.15 (by |p - 0.5| it would be 0.52, 0.15, 0.33)
    assert _order(client, sample_id) == [ids[0], ids[2], ids[1]]
    page = client.get(f"/samples/{sample_id}/review").get_data(as_text=True)
    import re

    assert [int(i) for i in re.findall(r'<article class="tile[^"]*" id="cell-(\d+)"', page)] == [ids[0], ids[2], ids[1]]


def test_hardest_first_without_a_recorded_threshold_uses_the_one_in_force(app, client, auth):
    from device.services.settings import DeviceSettings

    sample_id, _ = add_sample(app, cells=[])
    ids = add_capture(app, sample_id, CELLS, model=None)
    auth.login("path")
    with app.app_context():
        DeviceSettings.save({"threshold": "0.2", "review_low": "0.1"}, actor="admin")
    # |p - 0.2| = 0.13, 0.32, 0.05
    assert _order(client, sample_id) == [ids[2], ids[0], ids[1]]


# --- existing databases migrate -----------------------------------------------------------------------------

def test_a_v3_database_migrates_and_its_captures_say_model_not_recorded(tmp_path, monkeypatch):
    path = tmp_path / "allscope.db"
    with monkeypatch.context() as patch:
        patch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:3])
        open_database(path).close()
    old = sqlite3.connect(path)
    old.execute("INSERT INTO patient (identifier, name, sex, referring_clinician, symptoms, notes, created_at, "
                "updated_at, version) VALUES ('P-1', 'A', 'unknown', '', '', '', 0, 0, 1)")
    old.execute("INSERT INTO sample (patient_id, specimen_type, stain, notes, created_at, created_by, version) "
                "VALUES (1, 'blood', 'MGG', '', 0, 'tech', 1)")
    old.execute("INSERT INTO capture (sample_id, image_path, sha256, source, original_name, width, height, status, "
                "error, flag, cell_count, blast_count, review_count, model_id, created_at, created_by, version) "
                "VALUES (1, 'x.png', 'ab', 'upload', '', 1, 1, 'done', '', 'no_blasts_seen', 0, 0, 0, "
                "'cf378aeb0307', 0, 'tech', 3)")
    old.commit()
    old.close()

    database = open_database(path)
    try:
        assert migrations.schema_version(database) == len(migrations.MIGRATIONS)
        assert path.with_name("allscope.db.bak-v3").exists()
        capture = Capture.get_by_id(1)
        assert capture.model_identity is None and capture.decision is None
        [entry] = reporting.sample_summary(Sample.get_by_id(1))["models"]
        assert entry["recorded"] is False and entry["model_ids"] == ["cf378aeb0307"]
        assert model_line(entry) == ("Frame 1: model not recorded (analysed before the device recorded which model "
                                     "ran; model id cf378aeb0307).")
        # the new columns travel to the central server with the capture's next version
        Capture.update(model_identity={"sha256": "ff"}, decision={"threshold": 0.5}).execute()
        payload = json.loads(database.execute_sql(
            "SELECT payload FROM outbox WHERE entity = 'capture' ORDER BY id DESC LIMIT 1").fetchone()[0])
        assert payload["model_identity"] == {"sha256": "ff"} and payload["decision"] == {"threshold": 0.5}
    finally:
        database.close()


def test_fhir_module_is_the_export(app, client, auth):
    """The page and the API still answer through the FHIR module (no second builder)."""
    sample_id, _ = add_sample(app)
    report_id = sign(app, client, auth, sample_id)
    with app.app_context():
        direct = fhir.fhir_diagnostic_report(Report.get_by_id(report_id))
    assert direct["contained"][-1]["resourceType"] == "Device"
    from model_conversion.frozen_fit import FROZEN_MODEL_VERSION

    assert direct["extension"][1]["valueString"].startswith(
        f"Model allscope_blast_int8 (int8, version {FROZEN_MODEL_VERSION}")
