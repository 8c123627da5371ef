"""Patients and samples pages: list with search, register, edit, patient page, new sample, sample page.

Links to the capture, review and report areas are built only when those
endpoints are registered (``link``), so this area works on its own.
"""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from device.services import patients as store
from device.store.records import Patient, Report, Sample
from webui.forms.patients import PatientForm, SampleForm
from webui.kit.access import CLINICAL, PATHOLOGIST, allow
from webui.kit.runtime import actor

bp = Blueprint("patients", __name__)


def link(endpoint: str, **values) -> str | None:
    """URL of an endpoint of another area, or None while that area is not registered."""
    return url_for(endpoint, **values) if endpoint in current_app.view_functions else None


def when(value: dt.datetime | None) -> str:
    """A stored (UTC) timestamp in device-local time, minutes precision."""
    local = store.to_local(value)
    return local.strftime("%Y-%m-%d %H:%M") if local else ""


@bp.context_processor
def _helpers():
    return {"link": link, "age_years": store.age_years, "when": when,
            "is_pathologist": current_user.is_authenticated and current_user.has_any_role(PATHOLOGIST)}


def _page_arg() -> int:
    raw = request.args.get("page", "1")
    return int(raw) if raw.isdigit() else 1


@bp.get("/")
@allow(*CLINICAL)
def patient_list():
    q = request.args.get("q", "")[:100]
    result = store.search_patients(q, _page_arg())
    return render_template("patients/list.html", result=result, q=q)


@bp.route("/patients/new", methods=["GET", "POST"])
@allow(*CLINICAL)
def patient_new():
    form = PatientForm()
    if form.validate_on_submit():
        try:
            patient = store.create_patient(form.values(), actor())
        except store.DuplicateIdentifier:
            form.identifier.errors = ["This identifier is already registered to another patient."]
        else:
            flash(f"Patient {patient.identifier} registered.", "info")
            return redirect(url_for("patients.patient_page", patient_id=patient.id))
    return render_template("patients/form.html", form=form, patient=None), (400 if form.errors else 200)


@bp.route("/patients/<int:patient_id>/edit", methods=["GET", "POST"])
@allow(*CLINICAL)
def patient_edit(patient_id: int):
    patient = _get_or_404(Patient, patient_id)
    form = PatientForm(obj=patient, patient_id=patient.id)
    if form.validate_on_submit():
        try:
            changed = store.update_patient(patient, form.values(), actor())
        except store.DuplicateIdentifier:
            form.identifier.errors = ["This identifier is already registered to another patient."]
        else:
            flash("Patient details saved." if changed else "Nothing was changed.", "info")
            return redirect(url_for("patients.patient_page", patient_id=patient.id))
    return render_template("patients/form.html", form=form, patient=patient), (400 if form.errors else 200)


@bp.get("/patients/<int:patient_id>")
@allow(*CLINICAL)
def patient_page(patient_id: int):
    patient = _get_or_404(Patient, patient_id)
    store.record_view("patient", patient.id, actor())
    return render_template("patients/detail.html", patient=patient, samples=store.patient_samples(patient))


@bp.route("/patients/<int:patient_id>/samples/new", methods=["GET", "POST"])
@allow(*CLINICAL)
def sample_new(patient_id: int):
    patient = _get_or_404(Patient, patient_id)
    form = SampleForm()
    if request.method == "GET":
        form.collected_at.data = dt.datetime.now().replace(second=0, microsecond=0)
    if form.validate_on_submit():
        sample = store.create_sample(patient, form.values(), actor())
        flash(f"Sample {sample.id} added for {patient.identifier}.", "info")
        target = link("capture.sample_capture", sample_id=sample.id)
        return redirect(target or url_for("patients.patient_page", patient_id=patient.id))
    return render_template("patients/sample_form.html", form=form, patient=patient), (400 if form.errors else 200)


@bp.get("/samples/<int:sample_id>")
@allow(*CLINICAL)
def sample_page(sample_id: int):
    sample = _get_or_404(Sample, sample_id)
    store.record_view("sample", sample.id, actor())
    return render_template("patients/sample.html", sample=sample, patient=sample.patient,
                           captures=store.sample_captures(sample),
                           has_report=Report.select().where(Report.sample == sample.id).exists())


def _get_or_404(model, row_id: int):
    row = model.get_or_none(model.id == row_id)
    if row is None:
        abort(404)
    return row
