"""JSON API: review (relabel, review state, sign-off) and reading a report.

Same rules as the pages (``device/services/signoff.py``): 400 for a bad request,
404 for an unknown record, 409 when the workflow refuses (report signed,
cells still unreviewed, captures still analysing, empty conclusion, a failed
capture not acknowledged: sign with ``{"conclusion": ..., "acknowledge_failed": true}``
to sign without the frames whose analysis failed; fewer white cells counted than the
minimum: sign with ``{"conclusion": ..., "override_reason": "..."}``, stored and printed
on the report). ``POST /api/samples/<id>/accept-ai-labels`` records that the reviewer
accepted the AI's label of every remaining (unflagged, unlabelled) cell.
"""

from __future__ import annotations

from flask import jsonify, request
from flask_login import current_user

from device.config.choices import CELL_LABELS
from device.services import reporting, signoff
from device.services.differential import count_progress
from device.store.records import Cell, Report, Sample, audit, db_proxy
from webui.api.base import bp
from webui.forms.review import ReportForm, bound, first_error
from webui.kit.access import CLINICAL, PATHOLOGIST, allow
from webui.kit.runtime import count_policy as policy


def _error(message: str, status: int):
    return jsonify(error=message), status


def _counts(summary: dict) -> dict:
    keys = ("cells_found", "edge_cells", "counted_cells", "by_label", "blast_count", "evaluable_cells",
            "blast_percentage", "needs_review", "unreviewed", "reviewed", "overridden", "differential", "review",
            "accept_remaining")
    out = {k: summary[k] for k in keys}
    rules = policy()
    out["progress"] = count_progress(summary["evaluable_cells"], rules.target, rules.minimum)
    out["differential_by_label"] = {row["label"]: row for row in summary["differential"]["rows"]}
    return out


def _review_state(sample: Sample) -> dict:
    """The counts and sign-off blockers after a change of labels."""
    return {"counts": _counts(reporting.sample_summary(sample)),
            "sign_blockers": signoff.sign_blockers(sample, policy=policy())}


@bp.post("/cells/<int:cell_id>/label")
@allow(PATHOLOGIST)
def api_label_cell(cell_id: int):
    cell = Cell.get_or_none(Cell.id == cell_id)
    if cell is None:
        return _error("no such cell", 404)
    body = request.get_json(silent=True)
    label = body.get("label") if isinstance(body, dict) else None
    if not isinstance(label, str):
        return _error('send {"label": ' + " | ".join(f'"{name}"' for name in CELL_LABELS) + "}", 400)
    # A ReviewError (locked labels, unknown label, ...) is answered by webui/kit/errors.py: its kind's status.
    cell = signoff.relabel(cell, label, username=current_user.username, address=request.remote_addr or "")
    return jsonify(cell=reporting.cell_dict(cell), **_review_state(cell.capture.sample))


@bp.post("/samples/<int:sample_id>/accept-ai-labels")
@allow(PATHOLOGIST)
def api_accept_ai_labels(sample_id: int):
    """Accept the AI's label of every remaining cell (not flagged, not labelled, not at the edge), recorded as
    accepted by this reviewer; flagged cells keep needing the reviewer's own label."""
    sample = Sample.get_or_none(Sample.id == sample_id)
    if sample is None:
        return _error("no such sample", 404)
    accepted = signoff.accept_ai_labels(sample, username=current_user.username, address=request.remote_addr or "")
    return jsonify(accepted=accepted, **_review_state(sample))


@bp.get("/samples/<int:sample_id>/review")
@allow(PATHOLOGIST)
def api_sample_review(sample_id: int):
    sample = Sample.get_or_none(Sample.id == sample_id)
    if sample is None:
        return _error("no such sample", 404)
    summary = reporting.sample_summary(sample, include_cells=True)
    latest = signoff.latest_report(sample)
    return jsonify(sample_id=sample.id, cells=summary.pop("cells"), summary=summary,
                   unreviewed=summary["unreviewed"], counts=_counts(summary),
                   report=signoff.report_dict(latest) if latest else None,
                   labels_locked=signoff.labels_locked(sample),
                   sign_blockers=signoff.sign_blockers(sample, policy=policy()))


@bp.post("/samples/<int:sample_id>/report/sign")
@allow(PATHOLOGIST)
def api_sign(sample_id: int):
    sample = Sample.get_or_none(Sample.id == sample_id)
    if sample is None:
        return _error("no such sample", 404)
    body = request.get_json(silent=True)
    conclusion = body.get("conclusion", "") if isinstance(body, dict) else None
    if not isinstance(conclusion, str):
        return _error('send {"conclusion": "..."}', 400)
    acknowledge = body.get("acknowledge_failed", False)
    if not isinstance(acknowledge, bool):
        return _error("acknowledge_failed: send true or false", 400)
    override = body.get("override_reason", "")
    if override is None:
        override = ""
    if not isinstance(override, str):
        return _error('override_reason: send text ("" for none)', 400)
    form = bound(ReportForm, {"conclusion": conclusion, "override_reason": override})
    if not form.validate():
        return _error(first_error(form), 400)
    report = signoff.sign(sample, conclusion, username=current_user.username,  # ReviewError: webui/kit/errors.py
                          address=request.remote_addr or "", acknowledge_failed=acknowledge,
                          override_reason=override, policy=policy())
    return jsonify(report=signoff.report_dict(report))


@bp.get("/reports/<int:report_id>")
@allow(*CLINICAL)
def api_report(report_id: int):
    report = Report.get_or_none(Report.id == report_id)
    if report is None:
        return _error("no such report", 404)
    with db_proxy.atomic():
        audit("view", "report", report.id, username=current_user.username, address=request.remote_addr or "",
              detail="api")
    out = signoff.report_dict(report)
    out["summary"] = reporting.report_summary(report)
    return jsonify(report=out)
