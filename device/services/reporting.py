"""What a report says: counts over a sample's cells, the model's identity, and the FHIR export.

No Flask here: the web pages, the PDF, the API and the sync agent all read the
same dicts.

Counting rules (the same everywhere):

* edge cells (cut by the frame border) are listed but never counted;
* the FINAL label is the reviewer's label when there is one, else the AI's;
* the blast percentage is blasts / (blasts + normals): cells a reviewer
  called "other" (not a white cell of interest) or "unusable" are left out of
  the denominator.

A signed report keeps its own snapshot (``Report.ai_summary``, made by
:func:`snapshot`); only drafts are computed from the live cell rows.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from functools import lru_cache
from pathlib import Path

from device.core.analysis import DISCLAIMER
from device.resources import MODEL_CARD
from device.store.records import CELL_LABELS, Capture, Cell, Patient, Report, Sample, User, db_proxy, utcnow

SHIPPED_VARIANT = "int8"  # the model the appliance runs (models/allscope_blast_int8.tflite)
PENDING_STATES = ("queued", "analysing")
FHIR_SYSTEM = "urn:allscope"  # prefix of the device's own identifier systems and extension URLs


def cell_dict(cell: Cell) -> dict:
    """One cell as JSON, with its final label and how uncertain the AI was (0 = coin toss)."""
    return {
        "id": cell.id, "capture_id": cell.capture_id,
        "x": cell.x, "y": cell.y, "w": cell.w, "h": cell.h,
        "crop_path": cell.crop_path, "ai_label": cell.ai_label, "p_blast": round(cell.p_blast, 4),
        "needs_review": bool(cell.needs_review), "edge": bool(cell.edge),
        "reviewer_label": cell.reviewer_label, "reviewed_by": cell.reviewed_by,
        "reviewed_at": cell.reviewed_at.isoformat() if cell.reviewed_at else None,
        "final_label": cell.final_label,
        "certainty": round(abs(cell.p_blast - 0.5), 4),
    }


def review_order(cells: list[dict]) -> list[dict]:
    """Counted cells hardest first (|p_blast - 0.5| ascending), then the edge cells the same way."""
    return sorted(cells, key=lambda c: (c["edge"], c["certainty"], c["id"]))


def sample_cells(sample: Sample) -> list[Cell]:
    return list(Cell.select().join(Capture).where(Capture.sample == sample).order_by(Cell.id))


def count_cells(cells: list[dict]) -> dict:
    """Counts over cell dicts (see module docstring for the rules)."""
    counted = [c for c in cells if not c["edge"]]
    labels = Counter(c["final_label"] for c in counted)
    blasts, normals = labels["blast"], labels["normal"]
    evaluable = blasts + normals
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
    }


def _capture_entry(index: int, capture: Capture, cells: list[dict]) -> dict:
    counts = count_cells(cells)
    quality = capture.quality or {}
    return {
        "id": capture.id, "number": index, "status": capture.status, "flag": capture.flag,
        "error": capture.error, "width": capture.width, "height": capture.height, "model_id": capture.model_id,
        "original_name": capture.original_name, "source": capture.source,
        "quality_problems": list(quality.get("problems") or []),
        "usable": quality.get("usable", capture.status == "done"),
        "counted_cells": counts["counted_cells"], "blast_count": counts["blast_count"],
        "needs_review": counts["needs_review"], "unreviewed": counts["unreviewed"],
    }


def sample_summary(sample: Sample, include_cells: bool = False) -> dict:
    """Counts, review progress, per-capture flags and quality problems of one sample."""
    captures = list(Capture.select().where(Capture.sample == sample).order_by(Capture.id))
    cells = [cell_dict(c) for c in sample_cells(sample)]
    by_capture: dict[int, list[dict]] = {}
    for cell in cells:
        by_capture.setdefault(cell["capture_id"], []).append(cell)
    entries = [_capture_entry(i, cap, by_capture.get(cap.id, [])) for i, cap in enumerate(captures, start=1)]
    problems = []
    for entry in entries:
        if entry["status"] == "failed":
            problems.append(f"Capture {entry['number']}: analysis failed ({entry['error'] or 'no reason given'})")
        elif entry["flag"] == "unusable_image" or entry["quality_problems"]:
            problems.append(f"Capture {entry['number']}: " + (", ".join(entry["quality_problems"]) or "unusable image"))
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
        "computed_at": utcnow().isoformat(),
    })
    if include_cells:
        summary["cells"] = review_order(cells)
    return summary


def snapshot(sample: Sample) -> dict:
    """What a signature freezes: the summary, every cell with its labels, and the model's identity."""
    summary = sample_summary(sample, include_cells=True)
    summary["model"] = model_identity()
    summary["disclaimer"] = DISCLAIMER
    return summary


def report_summary(report: Report) -> dict:
    """A signed (or amended) report's frozen snapshot; a draft's live figures."""
    if report.status != "draft" and report.ai_summary:
        return report.ai_summary
    return snapshot(report.sample)


def _iso(value) -> str | None:
    return value.isoformat(sep=" ", timespec="minutes") if hasattr(value, "hour") else (
        value.isoformat() if value is not None else None)


def report_content(report: Report) -> dict:
    """Everything a report page, its PDF and the API show, as plain data."""
    sample, patient = report.sample, report.sample.patient
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
            "supersedes_id": report.supersedes_id,
            "supersedes_version": report.supersedes.version if report.supersedes_id else None,
            "superseded_by_id": newer.id if newer else None,
            "superseded_by_version": newer.version if newer else None,
        },
        "patient": {
            "identifier": patient.identifier, "name": patient.name, "date_of_birth": _iso(patient.date_of_birth),
            "sex": patient.sex, "referring_clinician": patient.referring_clinician, "symptoms": patient.symptoms,
            "wbc": patient.wbc, "hemoglobin": patient.hemoglobin, "platelets": patient.platelets,
        },
        "sample": {
            "id": sample.id, "collected_at": _iso(sample.collected_at), "specimen_type": sample.specimen_type,
            "stain": sample.stain, "notes": sample.notes, "created_by": sample.created_by,
            "created_at": _iso(sample.created_at),
        },
        "summary": summary,
        "model": summary.get("model") or model_identity(),
        "disclaimer": DISCLAIMER,
        "versions": [{"id": v.id, "version": v.version, "status": v.status, "signed_by": v.signed_by,
                      "signed_at": _iso(v.signed_at)} for v in versions],
    }


# --- the model ------------------------------------------------------------------------------------------

def model_identity(card_path: Path = MODEL_CARD, variant: str = SHIPPED_VARIANT) -> dict:
    """Name, file hash, input size, training data and held-out validation figures of the shipped model."""
    return json.loads(_model_identity_json(str(card_path), variant))  # a fresh copy: callers may mutate


@lru_cache(maxsize=4)
def _model_identity_json(card_path: str, variant: str) -> str:
    import hashlib

    path = Path(card_path)
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        card = {}
    provenance = card.get("provenance", {})
    cell_level = card.get("cell_level", {})
    stats = cell_level.get(variant, {})
    holdout = cell_level.get("holdout_run", {})
    file_name = card.get("model_files", {}).get(variant, {}).get("file", f"allscope_blast_{variant}.tflite")
    try:
        sha256 = hashlib.sha256((path.parent / file_name).read_bytes()).hexdigest()
    except OSError:
        sha256 = ""
    sources = provenance.get("training", {}).get("cells_by_source", {})
    training = "; ".join(f"{name}: {c.get('blast', 0)} blast, {c.get('normal', 0)} normal"
                         for name, c in sources.items())
    identity = {
        "name": card.get("name", "unknown model"), "variant": variant, "file": file_name,
        "sha256": sha256, "short_id": sha256[:12],
        "input_size": provenance.get("input_size"),
        "created": provenance.get("created", ""),
        "intended_use": provenance.get("intended_use", ""),
        "training_data": training,
        "validation": {
            "description": ("held-out cells of a subject-disjoint validation run of the same recipe "
                            f"(subjects {', '.join(holdout.get('validation_subjects', [])) or 'n/a'})"),
            "cells": stats.get("count"), "blasts": stats.get("blasts"), "normals": stats.get("normals"),
            "sensitivity": stats.get("sensitivity"), "specificity": stats.get("specificity"),
            "precision": stats.get("precision"), "roc_auc": stats.get("roc_auc"),
        },
    }
    return json.dumps(identity)


def model_line(identity: dict) -> str:
    """One line naming the model and its validation figures, for the PDF and FHIR."""
    v = identity.get("validation", {})

    def fig(key: str) -> str:
        return f"{v[key]:.3f}" if isinstance(v.get(key), (int, float)) else "n/a"

    return (f"Model {identity.get('name')} ({identity.get('variant')}, sha256 {identity.get('short_id') or 'unknown'}, "
            f"input {identity.get('input_size')} px). Held-out validation on {v.get('cells') or 'n/a'} cells: "
            f"sensitivity {fig('sensitivity')}, specificity {fig('specificity')}, precision {fig('precision')}, "
            f"ROC AUC {fig('roc_auc')}.")


# --- FHIR ----------------------------------------------------------------------------------------------

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
REPORT_CODE = ("18314-5", "Morphology [Interpretation] in Blood Narrative",
               "Peripheral blood smear: white cell morphology, blast screen (decision-supported)")
BLAST_PCT_CODE = ("26446-5", "Blasts/100 leukocytes in Blood", "Blasts / 100 white cells counted")


class NotExportable(ValueError):
    """Only signed reports (current or superseded) leave the device."""


def fhir_status(report: Report) -> str:
    if report.status == "draft":
        return "preliminary"
    return "amended" if report.supersedes_id else "final"


def _fhir_instant(value: dt.datetime | None) -> str | None:
    """Stored datetimes are naive UTC; FHIR wants the zone when a time is given."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.isoformat(timespec="seconds")


def _code(system: str, code: str, display: str, text: str) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": text}


def fhir_diagnostic_report(report: Report, signer_name: str = "") -> dict:
    """A FHIR R4 DiagnosticReport (JSON dict) with its Observations contained."""
    if report.status not in ("signed", "amended"):
        raise NotExportable("only a signed report can be exported: this one is still a draft")
    sample, patient = report.sample, report.sample.patient
    summary = report_summary(report)
    identity = summary.get("model") or model_identity()
    status = fhir_status(report)
    subject = {"identifier": {"system": f"{FHIR_SYSTEM}:patient-identifier", "value": patient.identifier},
               "display": patient.name}
    effective = _fhir_instant(sample.collected_at or sample.created_at)
    method = {"text": "Automated cell finding and CNN classification (allscope, decision support), "
                      "every result reviewed by a pathologist"}

    def observation(obs_id: str, code: dict, value: dict) -> dict:
        return {"resourceType": "Observation", "id": obs_id, "status": status, "code": code,
                "subject": subject, "effectiveDateTime": effective, "method": method, **value}

    pct = summary.get("blast_percentage")
    pct_value = ({"valueQuantity": {"value": pct, "unit": "%", "system": UCUM, "code": "%"}} if pct is not None else
                 {"dataAbsentReason": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                                                   "code": "not-a-number"}],
                                       "text": "no blast or normal white cell was counted"}})
    contained = [
        observation("blast-percentage", _code(LOINC, *BLAST_PCT_CODE), pct_value),
        observation("white-cells-counted",
                    _code(f"{FHIR_SYSTEM}:observation", "white-cells-counted", "White cells counted",
                          "White cells counted (blasts + normal cells; edge, other and unusable cells excluded)"),
                    {"valueInteger": int(summary.get("evaluable_cells") or 0)}),
        observation("blasts-counted",
                    _code(f"{FHIR_SYSTEM}:observation", "blasts-counted", "Blasts counted", "Blasts counted"),
                    {"valueInteger": int(summary.get("blast_count") or 0)}),
    ]
    signer = {"identifier": {"system": f"{FHIR_SYSTEM}:user", "value": report.signed_by or ""},
              "display": signer_name or report.signed_by or ""}
    extensions = [
        {"url": f"{FHIR_SYSTEM}:fhir:decision-support", "valueString": DISCLAIMER},
        {"url": f"{FHIR_SYSTEM}:fhir:model", "valueString": model_line(identity)},
        {"url": f"{FHIR_SYSTEM}:fhir:report-version", "valueInteger": report.version},
    ]
    if report.supersedes_id:
        extensions.append({"url": f"{FHIR_SYSTEM}:fhir:amendment",
                           "valueString": f"Amends version {report.supersedes.version}: {report.amendment_reason}"})
    if report.status == "amended":
        newer = Report.get_or_none(Report.supersedes == report)
        extensions.append({"url": f"{FHIR_SYSTEM}:fhir:superseded-by",
                           "valueString": f"Superseded by version {newer.version}" if newer else "Superseded"})
    resource = {
        "resourceType": "DiagnosticReport",
        "id": f"allscope-report-{report.id}",
        "extension": extensions,
        "identifier": [{"system": f"{FHIR_SYSTEM}:report", "value": f"sample-{sample.id}-v{report.version}"}],
        "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "HM",
                                  "display": "Hematology"}]}],
        "code": _code(LOINC, *REPORT_CODE),
        "subject": subject,
        "effectiveDateTime": effective,
        "issued": _fhir_instant(report.signed_at),
        "performer": [signer],
        "resultsInterpreter": [signer],
        "specimen": [{"display": f"{sample.specimen_type}, {sample.stain} (sample {sample.id})"}],
        "contained": contained,
        "result": [{"reference": f"#{obs['id']}"} for obs in contained],
        "conclusion": report.conclusion,
    }
    return resource


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
    FROM capture GROUP BY sample_id
),
cells AS (
    SELECT c.sample_id,
           SUM(NOT e.edge) AS counted,
           SUM(NOT e.edge AND COALESCE(e.reviewer_label, e.ai_label) = 'blast') AS blasts,
           SUM(NOT e.edge AND e.needs_review) AS flagged,
           SUM(NOT e.edge AND e.needs_review AND e.reviewer_label IS NULL) AS unreviewed
    FROM cell e JOIN capture c ON c.id = e.capture_id GROUP BY c.sample_id
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
