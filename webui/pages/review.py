"""Review (pathologists): the queue, one sample's cells, relabelling, the draft, sign-off and amendments.

The rules (when labels may change, what blocks sign-off, how an amendment
works) live in ``device/services/signoff.py``; these views only turn forms into calls
and refusals into one line on the page. The same operations are on the JSON
API in ``webui/api/review.py`` (the page's buttons use it without reloading).
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import AnyOf, InputRequired

from device.services import reporting, signoff
from device.services.differential import DIFFERENTIAL_CLASSES, count_progress
from device.store.records import CELL_LABELS, Cell, Report, Sample, audit, db_proxy
from webui.forms.review import AmendForm, ReportForm
from webui.kit.access import PATHOLOGIST, allow
from webui.kit.errors import http_status
from webui.kit.runtime import count_policy as policy
from webui.pages.review_gallery import GROUPINGS, group_cells, grouping, next_flagged

bp = Blueprint("review", __name__)

LOCK_RULE = ("Cell labels can be changed until the report is signed. After signing they are frozen; "
             "“Start amendment” opens a new draft version in which labels can change again. Signing it "
             "replaces the previous version, which stays viewable, marked amended.")


QUICK_LABELS = ("blast", "normal", "other", "unusable")  # one tap each; the white cell classes from a list


class LabelForm(FlaskForm):
    label = StringField(validators=[InputRequired(), AnyOf(CELL_LABELS, message="Unknown label.")])


class AcceptForm(FlaskForm):
    """The "accept the remaining AI labels" button: just the CSRF token."""


def url_if(endpoint: str, **values) -> str | None:
    """url_for, or None while the endpoint is not registered (areas are built in parallel)."""
    return url_for(endpoint, **values) if endpoint in current_app.view_functions else None


@bp.app_context_processor
def _image_urls():
    return {
        "url_if": url_if,
        "capture_image_url": lambda capture_id, w=None: url_if("capture.capture_image", capture_id=capture_id,
                                                                **({"w": w} if w else {})),
        "cell_crop_url": lambda cell_id: url_if("capture.cell_crop", cell_id=cell_id),
        "cell_labels": CELL_LABELS,
        "quick_labels": QUICK_LABELS,
        "class_labels": [label for label in DIFFERENTIAL_CLASSES if label not in QUICK_LABELS],
    }




def get_sample(sample_id: int) -> Sample:
    sample = Sample.get_or_none(Sample.id == sample_id)
    if sample is None:
        abort(404)
    return sample


def address() -> str:
    return request.remote_addr or ""


QUEUE_PAGE = 50  # oldest first: a pathologist works from the top; signing one brings the next in


@bp.get("/review")
@allow(PATHOLOGIST)
def queue():
    """Samples with analysed captures whose latest report is not signed, oldest first."""
    rows = reporting.review_queue(limit=QUEUE_PAGE + 1)  # one extra row tells whether more are waiting
    return render_template("review/queue.html", rows=rows[:QUEUE_PAGE], more=len(rows) > QUEUE_PAGE)


def _render_review(sample: Sample, form: ReportForm | None = None, amend_form: AmendForm | None = None,
                   message: str = "", status: int = 200):
    summary = reporting.sample_summary(sample, include_cells=True)
    rules = policy()
    latest = signoff.latest_report(sample)
    draft = latest if latest is not None and latest.status == "draft" else None
    if form is None:
        form = ReportForm(formdata=None, conclusion=draft.conclusion if draft else "")
    cells_by_capture: dict[int, list[dict]] = {}
    for cell in summary["cells"]:
        cells_by_capture.setdefault(cell["capture_id"], []).append(cell)
    group_by = grouping(request.args.get("group"))
    groups = group_cells(summary["cells"], group_by, list(CELL_LABELS), shown=request.args.get("cell", type=int))
    first_flagged, next_after = next_flagged(groups)
    context = {
        "sample": sample, "patient": sample.patient, "summary": summary, "cells": summary["cells"],
        "groups": groups, "group_by": group_by, "groupings": GROUPINGS, "first_flagged": first_flagged,
        "next_after": next_after,
        "cells_by_capture": cells_by_capture, "latest": latest, "draft": draft,
        "versions": list(Report.select().where(Report.sample == sample).order_by(Report.version.desc())),
        "locked": signoff.labels_locked(sample), "blockers": signoff.sign_blockers(sample, policy=rules),
        "form": form, "amend_form": amend_form or AmendForm(formdata=None), "label_form": LabelForm(formdata=None),
        "accept_form": AcceptForm(formdata=None),
        "progress": count_progress(summary["evaluable_cells"], rules.target, rules.minimum),
        "message": message, "lock_rule": LOCK_RULE,
    }
    return render_template("review/sample.html", **context), status


@bp.get("/samples/<int:sample_id>/review")
@allow(PATHOLOGIST)
def sample_review(sample_id: int):
    sample = get_sample(sample_id)
    with db_proxy.atomic():  # the page shows the patient's record: viewing it is audited
        audit("view", "sample", sample.id, username=current_user.username, address=address(), detail="review")
    return _render_review(sample)


@bp.post("/cells/<int:cell_id>/label")
@allow(PATHOLOGIST)
def label_cell(cell_id: int):
    """The no-JavaScript path of the tile buttons: relabel, then back to the tile."""
    cell = Cell.get_or_none(Cell.id == cell_id)
    if cell is None:
        abort(404)
    sample_id = cell.capture.sample_id
    form = LabelForm()
    if not form.validate_on_submit():
        flash(f"Unknown label: use {', '.join(CELL_LABELS)}.", "error")
    else:
        try:
            signoff.relabel(cell, form.label.data, username=current_user.username, address=address())
        except signoff.ReviewError as error:
            flash(str(error), "error")
    group = request.form.get("group")  # the grouping the page was shown with, kept across the reload
    extra = {"group": group} if group in GROUPINGS and group != grouping(None) else {}
    # cell=: its group is shown open (it may have moved to a collapsed one), and its enlarged view by the anchor
    return redirect(url_for("review.sample_review", sample_id=sample_id, cell=cell_id, _anchor=f"cell-{cell_id}",
                            **extra))


@bp.post("/samples/<int:sample_id>/accept-ai-labels")
@allow(PATHOLOGIST)
def accept_ai_labels(sample_id: int):
    """The no-JavaScript path of "Accept the remaining AI labels"."""
    sample = get_sample(sample_id)
    if not AcceptForm().validate_on_submit():
        abort(400)
    try:
        accepted = signoff.accept_ai_labels(sample, username=current_user.username, address=address())
    except signoff.ReviewError as error:
        flash(str(error), "error")
    else:
        flash(f"Accepted the AI's label of {accepted} cell(s), recorded as accepted by you." if accepted
              else "No AI label was left to accept.", "info")
    return redirect(url_for("review.sample_review", sample_id=sample_id, _anchor="differential"))


@bp.post("/samples/<int:sample_id>/report/draft")
@allow(PATHOLOGIST)
def save_draft(sample_id: int):
    sample = get_sample(sample_id)
    form = ReportForm()
    if not form.validate_on_submit():
        return _render_review(sample, form=form, message="The draft was not saved: see the conclusion field.",
                              status=400)
    try:
        report = signoff.save_draft(sample, form.conclusion.data or "", username=current_user.username,
                                    address=address())
    except signoff.ReviewError as error:
        return _render_review(sample, form=form, message=str(error), status=http_status(error))
    flash(f"Draft (version {report.version}) saved.", "info")
    return redirect(url_for("review.sample_review", sample_id=sample_id, _anchor="report"))


@bp.post("/samples/<int:sample_id>/report/sign")
@allow(PATHOLOGIST)
def sign(sample_id: int):
    sample = get_sample(sample_id)
    form = ReportForm()
    if not form.validate_on_submit():
        return _render_review(sample, form=form, message="Not signed: see the conclusion field.", status=400)
    conclusion = form.conclusion.data or ""
    if not conclusion.strip():
        form.conclusion.errors = ["Write a conclusion before signing."]
    try:
        report = signoff.sign(sample, conclusion, username=current_user.username, address=address(),
                              acknowledge_failed=bool(form.acknowledge_failed.data),
                              override_reason=form.override_reason.data or "", policy=policy())
    except signoff.ReviewError as error:
        return _render_review(sample, form=form, message=str(error), status=http_status(error))
    flash(f"Report version {report.version} signed.", "info")
    return redirect(url_for("reports.report_version", report_id=report.id))


@bp.post("/reports/<int:report_id>/amend")
@allow(PATHOLOGIST)
def amend(report_id: int):
    report = Report.get_or_none(Report.id == report_id)
    if report is None:
        abort(404)
    form = AmendForm()
    if not form.validate_on_submit():
        return _render_review(report.sample, amend_form=form, message="No amendment started: give the reason.",
                              status=400)
    try:
        new = signoff.start_amendment(report, form.reason.data, username=current_user.username, address=address())
    except signoff.ReviewError as error:
        return _render_review(report.sample, amend_form=form, message=str(error), status=http_status(error))
    flash(f"Amendment started: draft version {new.version}. Change labels if needed, then sign it.", "info")
    return redirect(url_for("review.sample_review", sample_id=report.sample_id, _anchor="report"))
