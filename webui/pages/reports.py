"""Reports (technicians and pathologists read; only pathologists sign, in ``webui/pages/review.py``).

The page, the PDF and the FHIR export show the same content
(``device.services.reporting.report_content``): a signed version from its frozen
snapshot, a draft from the live cells under a "DRAFT — not signed" banner.
Every view or export writes an audit event.
"""

from __future__ import annotations

import re

from flask import Blueprint, abort, current_app, jsonify, render_template, request, url_for
from flask_login import current_user

from device.errors import AllscopeError
from device.services import fhir, reporting
from device.services.report_pdf import render_report_pdf
from device.store.records import Capture, Report, Sample, audit, db_proxy
from webui.kit.access import CLINICAL, allow
from webui.kit.errors import http_status
from webui.kit.runtime import appliance

bp = Blueprint("reports", __name__)


def _get_report(report_id: int) -> Report:
    report = Report.get_or_none(Report.id == report_id)
    if report is None:
        abort(404)
    return report


def _audit_view(report: Report, detail: str = "") -> None:
    with db_proxy.atomic():
        audit("view", "report", report.id, username=current_user.username, address=request.remote_addr or "",
              detail=detail)


def _render(report: Report):
    _audit_view(report)
    content = reporting.report_content(report)
    return render_template("reports/report.html", c=content, r=content["report"], s=content["summary"],
                           sample_id=report.sample_id)


@bp.get("/samples/<int:sample_id>/report")
@allow(*CLINICAL)
def sample_report(sample_id: int):
    sample = Sample.get_or_none(Sample.id == sample_id)
    if sample is None:
        abort(404)
    latest = Report.select().where(Report.sample == sample).order_by(Report.version.desc()).first()
    if latest is None:
        return render_template("error.html", status=404,
                               message="No report has been started for this sample yet."), 404
    return _render(latest)


@bp.get("/reports/<int:report_id>")
@allow(*CLINICAL)
def report_version(report_id: int):
    return _render(_get_report(report_id))


def _safe_name(content: dict, ext: str) -> str:
    ident = re.sub(r"[^A-Za-z0-9_-]+", "_", content["patient"]["identifier"]).strip("_")[:40] or "patient"
    return f"allscope-report-{ident}-s{content['sample']['id']}-v{content['report']['version']}.{ext}"


@bp.get("/reports/<int:report_id>.pdf")
@allow(*CLINICAL)
def report_pdf(report_id: int):
    report = _get_report(report_id)
    content = reporting.report_content(report)
    data = appliance().data

    def crop_file(cell: dict):
        try:
            return data.read_bytes(cell["crop_path"]) if cell.get("crop_path") else None  # decrypted if need be
        except (ValueError, OSError, AllscopeError):  # outside the data directory, missing, does not decrypt
            return None

    def frame_file(capture: dict):  # the full frame, or its thumbnail once pruned (device/services/retention.py)
        stored = Capture.get_or_none(Capture.id == capture["id"])
        for relative in ((stored.image_path, stored.thumb_path) if stored is not None else ()):
            if not relative or (relative == stored.image_path and stored.frame_pruned_at is not None):
                continue
            try:
                return data.read_bytes(relative)
            except (ValueError, OSError, AllscopeError):
                continue
        return None

    pdf = render_report_pdf(content, crop_file, frame_file=frame_file)
    inline = request.args.get("inline") == "1"
    _audit_view(report, detail="pdf shown" if inline else "pdf")
    response = current_app.response_class(pdf, mimetype="application/pdf")
    # A download by default: opened in the tab, the PDF viewer would strand a kiosk user (no back button, no
    # idle logout there). Inline only inside the app's own viewer page (report_viewer), framed by this origin.
    disposition = "inline" if inline else "attachment"
    response.headers["Content-Disposition"] = f'{disposition}; filename="{_safe_name(content, "pdf")}"'
    if inline:
        response.headers["Content-Security-Policy"] = "frame-ancestors 'self'"
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


@bp.get("/reports/<int:report_id>/view")
@allow(*CLINICAL)
def report_viewer(report_id: int):
    """The PDF shown inside the app (top bar, idle logout) with Back and Print, for the kiosk."""
    report = _get_report(report_id)
    content = reporting.report_content(report)
    return render_template("reports/viewer.html", r=content["report"], patient=content["patient"],
                           pdf_url=url_for("reports.report_pdf", report_id=report.id, inline=1),
                           download_url=url_for("reports.report_pdf", report_id=report.id),
                           back_url=url_for("reports.report_version", report_id=report.id),
                           filename=_safe_name(content, "pdf"))


@bp.get("/reports/<int:report_id>/fhir.json")
@allow(*CLINICAL)
def report_fhir(report_id: int):
    report = _get_report(report_id)
    content = reporting.report_content(report)
    try:
        resource = fhir.fhir_diagnostic_report(report, signer_name=content["report"]["signer_name"])
    except reporting.NotExportable as error:  # a Conflict: the JSON body the FHIR client expects
        return jsonify(error=str(error)), http_status(error)
    _audit_view(report, detail="fhir")
    response = jsonify(resource)
    response.mimetype = "application/fhir+json"
    response.headers["Content-Disposition"] = f'attachment; filename="{_safe_name(content, "json")}"'
    return response
