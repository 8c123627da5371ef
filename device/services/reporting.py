"""What a report says: counts over a sample's cells and the models that produced them.

No Flask here: the web pages, the PDF (report_pdf.py), the FHIR export (fhir.py),
the API and the sync agent all read the same dicts.

Counting rules (the same everywhere):

* edge cells (cut by the frame border) are listed but never counted;
* the FINAL label is the reviewer's label when there is one, else the AI's;
* the counted white cells, the differential and its percentages, and the review
  record (labelled by a reviewer / accepted as the AI labelled them / not
  reviewed) are defined once in ``device/services/differential.py``: every
  non-edge cell but the "unusable" ones is a counted white cell, and the blast
  percentage is blasts / counted white cells.

"Hardest first" is |p_blast - threshold| ascending, with the decision threshold
the cell's capture was analysed with (recorded since schema v4), else the one in
force now: the cells nearest to flipping their label come first.

A report names the model that produced each capture's results, as the capture
recorded it, with that model's own validation figures (see
``device/services/report_model.py``): never the shipped card's figures for
another model.

A signed report keeps its own snapshot (``Report.ai_summary``, made by
:func:`snapshot`); only drafts are computed from the live cell rows. The snapshot
also freezes the patient's and the sample's details as they were signed
(``patient``, ``sample``, with the rows' versions): a later edit of the patient
record never changes a signed report's page, PDF or FHIR; it shows a notice
("patient details changed after signing on ...", naming the fields) instead.
Versions signed before the details were frozen show the live record and say so. Snapshots
signed before the models were recorded carry one ``model`` (the shipped card's);
newer ones carry ``models``. Both are shown as they were frozen.
"""

from __future__ import annotations

from collections import Counter

from device.core.analysis import DISCLAIMER
from device.core.quality import advice
from device.errors import Conflict
from device.services.differential import (
    differential,
    override_line,
    review_record,
    summary_differential,
    summary_review,
)
from device.services.report_model import capture_model_label, models_of
from device.store.records import CELL_LABELS, Capture, Cell, Patient, Report, Sample, User, db_proxy, utcnow

PENDING_STATES = ("queued", "analysing")


def current_threshold() -> float:
    """The decision threshold in force now (an admin's stored setting, else the default)."""
    from device.services.settings import decision_settings

    return decision_settings().threshold


def capture_threshold(capture: Capture, current: float | None = None) -> float:
    """The threshold ``capture`` was analysed with, else ``current`` (else the one in force now)."""
    recorded = capture.decision.get("threshold") if isinstance(capture.decision, dict) else None
    if isinstance(recorded, (int, float)):
        return float(recorded)
    return current if current is not None else current_threshold()


def cell_dict(cell: Cell, threshold: float | None = None) -> dict:
    """One cell as JSON, with its final label and how far the AI was from flipping it (0 = on the threshold).

    ``threshold``: the decision threshold of the cell's capture (None: looked up, see :func:`capture_threshold`).
    """
    if threshold is None:
        threshold = capture_threshold(cell.capture)
    return {
        "id": cell.id, "capture_id": cell.capture_id,
        "x": cell.x, "y": cell.y, "w": cell.w, "h": cell.h,
        "crop_path": cell.crop_path, "ai_label": cell.ai_label, "p_blast": round(cell.p_blast, 4),
        "needs_review": bool(cell.needs_review), "edge": bool(cell.edge),
        "reviewer_label": cell.reviewer_label, "reviewed_by": cell.reviewed_by,
        "reviewed_at": cell.reviewed_at.isoformat() if cell.reviewed_at else None,
        "label_source": cell.label_source,
        "final_label": cell.final_label,
        "certainty": round(abs(cell.p_blast - threshold), 4),
    }


def review_order(cells: list[dict]) -> list[dict]:
    """Counted cells hardest first (|p_blast - threshold| ascending), then the edge cells the same way."""
    return sorted(cells, key=lambda c: (c["edge"], c["certainty"], c["id"]))


def sample_cells(sample: Sample) -> list[Cell]:
    return list(Cell.select().join(Capture).where((Capture.sample == sample) & (Capture.status != "discarded"))
                .order_by(Cell.id))


def count_cells(cells: list[dict]) -> dict:
    """Counts over cell dicts (see module docstring for the rules)."""
    counted = [c for c in cells if not c["edge"]]
    labels = Counter(c["final_label"] for c in counted)
    blasts = labels["blast"]
    diff = differential(cells)
    evaluable = diff["white_cells"]
    flagged = [c for c in counted if c["needs_review"]]
    return {
        "cells_found": len(cells),
        "edge_cells": len(cells) - len(counted),
        "counted_cells": len(counted),
        "by_label": {label: labels[label] for label in CELL_LABELS},
        "blast_count": blasts,
        "evaluable_cells": evaluable,
        "blast_percentage": round(100.0 * blasts / evaluable, 1) if evaluable else None,
        "ai_blast_count": sum(1 for c in counted if c["ai_label"] == "blast"),
        "needs_review": len(flagged),
        "unreviewed": sum(1 for c in flagged if c["reviewer_label"] is None),
        "reviewed": sum(1 for c in counted if c["reviewer_label"] is not None),
        "overridden": sum(1 for c in counted if c["reviewer_label"] not in (None, c["ai_label"])),
        "differential": diff,
        "review": review_record(cells),
        # what "accept the remaining AI labels" would record: counted, unflagged cells nobody labelled
        "accept_remaining": sum(1 for c in counted if not c["needs_review"] and c["reviewer_label"] is None),
    }


def _capture_entry(index: int, capture: Capture, cells: list[dict], threshold: float) -> dict:
    counts = count_cells(cells)
    quality = capture.quality or {}
    return {
        "id": capture.id, "number": index, "status": capture.status, "flag": capture.flag,
        "error": capture.error, "width": capture.width, "height": capture.height, "model_id": capture.model_id,
        "model": capture_model_label(capture), "threshold": threshold,
        "original_name": capture.original_name, "source": capture.source,
        "quality_problems": list(quality.get("problems") or []),
        "usable": quality.get("usable", capture.status == "done"),
        "counted_cells": counts["counted_cells"], "blast_count": counts["blast_count"],
        "needs_review": counts["needs_review"], "unreviewed": counts["unreviewed"],
    }


def sample_summary(sample: Sample, include_cells: bool = False) -> dict:
    """Counts, review progress, per-capture flags and quality problems of one sample."""
    # A discarded frame (device/services/discard.py) is kept but in no count, list or report.
    captures = list(Capture.select().where((Capture.sample == sample) & (Capture.status != "discarded"))
                    .order_by(Capture.id))
    unrecorded = any(not isinstance(c.decision, dict) for c in captures)
    current = current_threshold() if unrecorded else None
    thresholds = {c.id: capture_threshold(c, current) for c in captures}
    cells = [cell_dict(c, thresholds[c.capture_id]) for c in sample_cells(sample)]
    by_capture: dict[int, list[dict]] = {}
    for cell in cells:
        by_capture.setdefault(cell["capture_id"], []).append(cell)
    entries = [_capture_entry(i, cap, by_capture.get(cap.id, []), thresholds[cap.id])
               for i, cap in enumerate(captures, start=1)]
    problems = []
    for entry in entries:
        if entry["status"] == "failed":
            problems.append(f"Capture {entry['number']}: analysis failed ({entry['error'] or 'no reason given'})")
        elif entry["flag"] == "unusable_image" or entry["quality_problems"]:
            named = entry["quality_problems"]
            problems.append(f"Capture {entry['number']} ({', '.join(named)}): {' '.join(advice(named))}" if named
                            else f"Capture {entry['number']}: unusable image")
    summary = count_cells(cells)
    summary.update({
        "sample_id": sample.id,
        "captures": entries,
        "captures_total": len(entries),
        "captures_analysed": sum(1 for e in entries if e["status"] == "done"),
        "captures_pending": sum(1 for e in entries if e["status"] in PENDING_STATES),
        "captures_failed": sum(1 for e in entries if e["status"] == "failed"),
        "quality_problems": problems,
        "model_ids": sorted({e["model_id"] for e in entries if e["model_id"]}),
        "models": models_of(list(enumerate(captures, start=1))),
        "computed_at": utcnow().isoformat(),
    })
    if include_cells:
        summary["cells"] = review_order(cells)
    return summary


def _stamp(value) -> str | None:
    return value.isoformat() if value is not None else None


def patient_record(patient: Patient) -> dict:
    """The patient details a report shows, as stored (dates ISO), with the row's version."""
    return {"identifier": patient.identifier, "name": patient.name, "date_of_birth": _stamp(patient.date_of_birth),
            "sex": patient.sex, "referring_clinician": patient.referring_clinician, "symptoms": patient.symptoms,
            "wbc": patient.wbc, "hemoglobin": patient.hemoglobin, "platelets": patient.platelets,
            "version": patient.version}


def sample_record(sample: Sample) -> dict:
    """The sample details a report shows, as stored (naive UTC times, ISO), with the row's version."""
    return {"id": sample.id, "collected_at": _stamp(sample.collected_at), "specimen_type": sample.specimen_type,
            "stain": sample.stain, "notes": sample.notes, "created_by": sample.created_by,
            "created_at": _stamp(sample.created_at), "version": sample.version}


def snapshot(sample: Sample) -> dict:
    """What a signature freezes: the summary, every cell with its labels, the models that produced them, and
    the patient's and sample's details."""
    summary = sample_summary(sample, include_cells=True)
    summary["disclaimer"] = DISCLAIMER
    summary["patient"] = patient_record(sample.patient)
    summary["sample"] = sample_record(sample)
    return summary


FIELD_NAMES = {"identifier": "identifier", "name": "name", "date_of_birth": "date of birth", "sex": "sex",
               "referring_clinician": "referring clinician", "symptoms": "symptoms", "wbc": "WBC",
               "hemoglobin": "haemoglobin", "platelets": "platelets", "collected_at": "collection time",
               "specimen_type": "specimen type", "stain": "stain", "notes": "notes"}


def signed_records(report: Report) -> tuple[dict, dict, list[str]]:
    """(patient, sample, notices) a report shows: a signed version's frozen details, a draft's live ones.

    ``notices``: one line each when a detail the report shows changed in the live records after signing (naming
    the fields), or when the version was signed before details were frozen.
    """
    sample = report.sample
    live_patient, live_sample = patient_record(sample.patient), sample_record(sample)
    frozen = report.ai_summary if report.status != "draft" and isinstance(report.ai_summary, dict) else None
    if frozen is None:
        return live_patient, live_sample, []
    if not isinstance(frozen.get("patient"), dict) or not isinstance(frozen.get("sample"), dict):
        return live_patient, live_sample, [
            "This version was signed before reports froze the patient and sample details: they are shown as "
            "recorded now, and may differ from what was signed."]
    patient, frozen_sample = frozen["patient"], frozen["sample"]
    notices = []
    changed = [FIELD_NAMES[k] for k in FIELD_NAMES if k in patient and patient[k] != live_patient[k]]
    if changed:
        when = _iso(sample.patient.updated_at)
        notices.append(f"Patient details changed after signing on {when} UTC"
                       f" ({', '.join(changed)}): this report shows them as they were signed.")
    changed = [FIELD_NAMES[k] for k in FIELD_NAMES if k in frozen_sample and frozen_sample[k] != live_sample[k]]
    if changed:
        notices.append(f"Sample details changed after signing ({', '.join(changed)}): this report shows them "
                       "as they were signed.")
    return patient, frozen_sample, notices


def report_summary(report: Report) -> dict:
    """A signed (or amended) report's frozen snapshot; a draft's live figures."""
    if report.status != "draft" and report.ai_summary:
        return report.ai_summary
    return snapshot(report.sample)


def _iso(value) -> str | None:
    return value.isoformat(sep=" ", timespec="minutes") if hasattr(value, "hour") else (
        value.isoformat() if value is not None else None)


def _iso_text(value: str | None) -> str | None:
    """A stored ISO date or time as reports print it ("2026-01-05 09:30", "1961-04-02")."""
    if not value:
        return None
    import datetime as dt

    try:
        return _iso(dt.datetime.fromisoformat(value) if "T" in value else dt.date.fromisoformat(value))
    except ValueError:
        return value


def report_content(report: Report) -> dict:
    """Everything a report page, its PDF and the API show, as plain data (patient and sample as signed)."""
    sample = report.sample
    patient, shown_sample, notices = signed_records(report)
    summary = report_summary(report)
    newer = Report.get_or_none(Report.supersedes == report)
    signer = User.get_or_none(User.username == report.signed_by) if report.signed_by else None
    versions = Report.select().where(Report.sample == sample).order_by(Report.version.desc())
    return {
        "report": {
            "id": report.id, "version": report.version, "status": report.status,
            "fhir_status": fhir_status(report), "conclusion": report.conclusion,
            "amendment_reason": report.amendment_reason, "created_by": report.created_by,
            "created_at": _iso(report.created_at), "signed_by": report.signed_by,
            "signer_name": (signer.full_name or signer.username) if signer else (report.signed_by or ""),
            "signed_at": _iso(report.signed_at),
            "override_reason": report.override_reason or "",
            "supersedes_id": report.supersedes_id,
            "supersedes_version": report.supersedes.version if report.supersedes_id else None,
            "superseded_by_id": newer.id if newer else None,
            "superseded_by_version": newer.version if newer else None,
        },
        "patient": {**{k: v for k, v in patient.items() if k != "version"},
                    "date_of_birth": _iso_text(patient.get("date_of_birth"))},
        "sample": {**{k: v for k, v in shown_sample.items() if k != "version"},
                   "collected_at": _iso_text(shown_sample.get("collected_at")),
                   "created_at": _iso_text(shown_sample.get("created_at"))},
        "record_notices": notices,
        "summary": {**summary, "captures": [shown_frame(entry) for entry in summary.get("captures", [])]},
        "models": report_models(summary),
        "differential": summary_differential(summary),
        "review": summary_review(summary),
        "override_line": override_line(report.override_reason, summary),
        "disclaimer": DISCLAIMER,
        "versions": [{"id": v.id, "version": v.version, "status": v.status, "signed_by": v.signed_by,
                      "signed_at": _iso(v.signed_at)} for v in versions],
    }


def shown_frame(entry: dict) -> dict:
    """A frame as a report shows it: the AI's flag, except that "needs review" becomes "reviewed" once every cell
    of the frame the AI flagged has the reviewer's label (``flag_shown``, with a ``review_note``)."""
    flagged, unreviewed = entry.get("needs_review") or 0, entry.get("unreviewed") or 0
    shown = entry.get("flag") or ""
    note = ""
    if flagged:
        note = (f"all {flagged} flagged cell(s) reviewed" if not unreviewed
                else f"{unreviewed} of {flagged} flagged cell(s) not reviewed")
        if shown == "needs_review" and not unreviewed:
            shown = "reviewed"
    return {**entry, "flag_shown": shown, "review_note": note}


def report_models(summary: dict) -> list[dict]:
    """The models a (frozen or live) summary names: ``models``, or the one ``model`` of an older snapshot."""
    if "models" in summary:
        return list(summary["models"])
    return [summary["model"]] if summary.get("model") else []


# --- FHIR status (the export itself: device/services/fhir.py) -------------------------------------------

class NotExportable(Conflict, ValueError):
    """Only signed reports (current or superseded) leave the device (409)."""


def fhir_status(report: Report) -> str:
    if report.status == "draft":
        return "preliminary"
    return "amended" if report.supersedes_id else "final"


QUEUE_SQL = """
WITH latest AS (
    SELECT r.sample_id, r.version, r.status, r.supersedes_id
    FROM report r
    JOIN (SELECT sample_id, MAX(version) AS version FROM report GROUP BY sample_id) m
      ON m.sample_id = r.sample_id AND m.version = r.version
),
caps AS (
    SELECT sample_id, COUNT(*) AS total,
           SUM(status = 'done') AS analysed,
           SUM(status IN ('queued', 'analysing')) AS pending
    FROM capture WHERE status != 'discarded' GROUP BY sample_id
),
cells AS (
    SELECT c.sample_id,
           SUM(NOT e.edge) AS counted,
           SUM(NOT e.edge AND COALESCE(e.reviewer_label, e.ai_label) = 'blast') AS blasts,
           SUM(NOT e.edge AND e.needs_review) AS flagged,
           SUM(NOT e.edge AND e.needs_review AND e.reviewer_label IS NULL) AS unreviewed
    FROM cell e JOIN capture c ON c.id = e.capture_id WHERE c.status != 'discarded' GROUP BY c.sample_id
)
SELECT s.id, caps.total, caps.analysed, caps.pending,
       COALESCE(cells.counted, 0), COALESCE(cells.blasts, 0), COALESCE(cells.flagged, 0),
       COALESCE(cells.unreviewed, 0), latest.version, latest.supersedes_id
FROM sample s
JOIN caps ON caps.sample_id = s.id AND caps.analysed > 0
LEFT JOIN cells ON cells.sample_id = s.id
LEFT JOIN latest ON latest.sample_id = s.id
WHERE latest.status IS NULL OR latest.status = 'draft'
ORDER BY s.created_at, s.id
LIMIT ?
"""


def review_queue(limit: int = 200) -> list[dict]:
    """Samples waiting for a pathologist, oldest first, with their counts, in two queries.

    Same rules as :func:`sample_summary` (edge cells not counted; final label = reviewer's or AI's), computed
    by SQLite so that the queue stays fast with thousands of samples.
    """
    rows = db_proxy.execute_sql(QUEUE_SQL, (limit,)).fetchall()
    samples = {s.id: s for s in Sample.select(Sample, Patient).join(Patient)
               .where(Sample.id.in_([r[0] for r in rows]))} if rows else {}
    queue = []
    for (sample_id, total, analysed, pending, counted, blasts, flagged, unreviewed, version, supersedes) in rows:
        sample = samples[sample_id]
        queue.append({
            "sample": sample, "patient": sample.patient,
            "latest": {"version": version, "supersedes_id": supersedes} if version is not None else None,
            "summary": {"captures_total": total, "captures_analysed": analysed, "captures_pending": pending,
                        "counted_cells": counted, "blast_count": blasts, "needs_review": flagged,
                        "unreviewed": unreviewed},
        })
    return queue
