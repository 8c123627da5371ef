"""JSON API for patients and samples: the same forms (validation), store (audit, versions) and roles as the pages.

    GET   /api/patients?q=&page=        list, newest first
    POST  /api/patients                 register          -> 201 {"patient": {...}}
    GET   /api/patients/<id>            one, with samples (audited "view")
    PATCH /api/patients/<id>            partial update    -> 200 {"patient": {...}, "changed": bool}
    POST  /api/patients/<id>/samples    new sample        -> 201 {"sample": {...}}
    GET   /api/samples/<id>             one, with captures (audited "view")

Validation failures answer 400 ``{"error": "one line", "fields": {name: message}}``.
``collected_at`` is sent as device-local "YYYY-MM-DDTHH:MM" like the form (default: now); stored
times come back in UTC.
"""

from __future__ import annotations

import datetime as dt

from flask import abort, jsonify, request, url_for
from werkzeug.datastructures import MultiDict

from device.services import patients as store
from device.store.records import Patient, Sample, row_dict
from webui.api.base import bp
from webui.forms.patients import (
    PATIENT_FIELDS,
    SAMPLE_FIELDS,
    PatientForm,
    PayloadError,
    SampleForm,
    field_errors,
    json_formdata,
    patient_formdata,
)
from webui.kit.access import CLINICAL, allow
from webui.kit.runtime import actor

DUPLICATE = "This identifier is already registered to another patient."


def _payload():
    body = request.get_json(silent=True)
    if body is None:
        raise PayloadError("send a JSON object (Content-Type: application/json)")
    return body


def _invalid(form):
    fields = field_errors(form)
    first = next(iter(fields.items()))
    return jsonify(error=f"{first[0]}: {first[1]}", fields=fields), 400


def _get(model, row_id: int):
    row = model.get_or_none(model.id == row_id)
    if row is None:
        abort(404)
    return row


def _bind(form_class, formdata: MultiDict, **kwargs):
    """A form validated against explicit data: never the request's own body; CSRF is checked globally."""
    return form_class(formdata=formdata, meta={"csrf": False}, **kwargs)


def patient_json(patient: Patient, sample_count: int | None = None, latest: str | None = None) -> dict:
    out = row_dict(patient)
    if sample_count is not None:
        out["sample_count"] = sample_count
        out["latest_report_status"] = latest
    return out


@bp.get("/patients")
@allow(*CLINICAL)
def api_patient_list():
    page = request.args.get("page", "1")
    result = store.search_patients(request.args.get("q", "")[:100], int(page) if page.isdigit() else 1)
    return jsonify(patients=[patient_json(p, result.sample_counts.get(p.id, 0), result.latest_status.get(p.id))
                             for p in result.patients],
                   page=result.page, pages=result.pages, total=result.total)


@bp.post("/patients")
@allow(*CLINICAL)
def api_patient_create():
    form = _bind(PatientForm, json_formdata(_payload(), PATIENT_FIELDS))
    if not form.validate():
        return _invalid(form)
    try:
        patient = store.create_patient(form.values(), actor())
    except store.DuplicateIdentifier:
        return jsonify(error=f"identifier: {DUPLICATE}", fields={"identifier": DUPLICATE}), 400
    response = jsonify(patient=patient_json(patient))
    response.headers["Location"] = url_for("api.api_patient", patient_id=patient.id)
    return response, 201


@bp.get("/patients/<int:patient_id>")
@allow(*CLINICAL)
def api_patient(patient_id: int):
    patient = _get(Patient, patient_id)
    store.record_view("patient", patient.id, actor())
    samples = [dict(row_dict(item["sample"]), capture_count=item["capture_count"],
                    reports=[row_dict(r) for r in item["reports"]])
               for item in store.patient_samples(patient)]
    return jsonify(patient=patient_json(patient), samples=samples)


@bp.patch("/patients/<int:patient_id>")
@allow(*CLINICAL)
def api_patient_update(patient_id: int):
    patient = _get(Patient, patient_id)
    form = _bind(PatientForm, json_formdata(_payload(), PATIENT_FIELDS, base=patient_formdata(patient)),
                 patient_id=patient.id)
    if not form.validate():
        return _invalid(form)
    try:
        changed = store.update_patient(patient, form.values(), actor())
    except store.DuplicateIdentifier:
        return jsonify(error=f"identifier: {DUPLICATE}", fields={"identifier": DUPLICATE}), 400
    return jsonify(patient=patient_json(patient), changed=changed)


@bp.post("/patients/<int:patient_id>/samples")
@allow(*CLINICAL)
def api_sample_create(patient_id: int):
    patient = _get(Patient, patient_id)
    now = dt.datetime.now().strftime("%Y-%m-%dT%H:%M")  # like the form's default
    form = _bind(SampleForm, json_formdata(_payload(), SAMPLE_FIELDS, base=MultiDict({"collected_at": now})))
    if not form.validate():
        return _invalid(form)
    sample = store.create_sample(patient, form.values(), actor())
    response = jsonify(sample=row_dict(sample))
    response.headers["Location"] = url_for("api.api_sample", sample_id=sample.id)
    return response, 201


@bp.get("/samples/<int:sample_id>")
@allow(*CLINICAL)
def api_sample(sample_id: int):
    sample = _get(Sample, sample_id)
    store.record_view("sample", sample.id, actor())
    captures = [row_dict(c) for c in store.sample_captures(sample)]
    return jsonify(sample=row_dict(sample), patient=patient_json(sample.patient), captures=captures)
