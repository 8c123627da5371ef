"""A sample's results, read-only, for everyone on the clinical side: the outlined frames and each cell's result.

Technicians need to see what the analysis found (to judge whether to capture more fields) without the review
controls: no labelling, no draft, no signing here (pathologists do that in ``webui/pages/review.py``). The
figures are ``device.services.reporting.sample_summary``'s, the same as the review page and the report.
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, render_template, request, url_for
from flask_login import current_user

from device.services import reporting, signoff
from device.store.records import Patient, Report, Sample, audit, db_proxy
from webui.kit.access import CLINICAL, PATHOLOGIST, allow

bp = Blueprint("results", __name__)


def _link(endpoint: str, **values) -> str | None:
    return url_for(endpoint, **values) if endpoint in current_app.view_functions else None


@bp.get("/samples/<int:sample_id>/results")
@allow(*CLINICAL)
def sample_results(sample_id: int):
    sample = Sample.select(Sample, Patient).join(Patient).where(Sample.id == sample_id).first()
    if sample is None:
        abort(404)
    with db_proxy.atomic():  # the page shows the patient's record: viewing it is audited
        audit("view", "sample", sample.id, username=current_user.username, address=request.remote_addr or "",
              detail="results")
    summary = reporting.sample_summary(sample, include_cells=True)
    by_capture: dict[int, list[dict]] = {}
    for cell in summary["cells"]:
        by_capture.setdefault(cell["capture_id"], []).append(cell)
    has_report = Report.select().where(Report.sample == sample.id).exists()
    links = {"capture": _link("capture.sample_capture", sample_id=sample.id),
             "sample": _link("patients.sample_page", sample_id=sample.id),
             "review": _link("review.sample_review", sample_id=sample.id)
             if current_user.has_any_role(PATHOLOGIST) else None,
             "report": _link("reports.sample_report", sample_id=sample.id) if has_report else None}
    return render_template("capture/results.html", sample=sample, patient=sample.patient, summary=summary,
                           cells=summary["cells"], cells_by_capture=by_capture, links=links,
                           locked=signoff.labels_locked(sample))
