"""The review workflow's rules: relabelling cells, drafts, sign-off and amendments.

One rule decides when labels may change, and frames may be added (captured or
uploaded): **while the sample's latest report version is a draft (or there is no
report yet)**. Once it is signed, labels
are frozen; a pathologist who needs to change anything starts an amendment,
which opens a draft version N+1 (``supersedes`` = N, with a reason). Labels
may then change again; signing N+1 marks N "amended" (kept, viewable, never
deleted). Version N stays the report of record until N+1 is signed.

Sign-off is refused while a capture is still queued or analysing, while a
counted cell the AI flagged for review has no reviewer label, when the
conclusion is empty, while a capture's analysis failed unless the
pathologist confirms signing without it (the report lists it), or while fewer
white cells are counted than the sign-off minimum (the admin setting
``min_white_cells``, default 100) unless the pathologist gives an override
reason, which the report prints. "Accept the remaining AI labels" records, for
every non-edge cell nobody labelled and the AI did not flag, that the reviewer
accepted the AI's label as it was (``label_source = "ai_accepted"``), in one
audit event; a flagged cell always needs the reviewer's own label. Every change writes its audit event in the same
transaction. Each function raises :class:`ReviewError` (a one-line message; a
``Conflict``, or :class:`ReviewInputError` for a bad request) instead of changing anything when refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import peewee as pw

from device.errors import Conflict, InvalidInput
from device.services import reporting
from device.services.differential import below_minimum_reason
from device.store.records import CELL_LABELS, Capture, Cell, Report, Sample, audit, changes, db_proxy, row_dict, utcnow


class ReviewError(Conflict):
    """The workflow refuses the change now (report signed, cells unreviewed, captures analysing)."""


class ReviewInputError(InvalidInput, ReviewError):
    """The request itself is wrong (an unknown label, no reason for an amendment)."""


MAX_OVERRIDE_REASON = 500


@dataclass(frozen=True)
class CountPolicy:
    """How many white cells a sample's count aims at, and the fewest it may be signed with without an override."""

    target: int = 200
    minimum: int = 100

    def as_dict(self) -> dict:
        return {"target": self.target, "minimum": self.minimum}


def count_policy(settings=None) -> CountPolicy:
    """The policy of ``settings`` (a DeviceSettings: the web UI passes its appliance's, which include the
    configuration file's defaults), else of the stored settings over the built-in defaults."""
    if settings is None:
        from device.services.settings import DeviceSettings

        settings = DeviceSettings.load()
    return CountPolicy(target=settings.target_white_cells, minimum=settings.min_white_cells)


def clean_override_reason(reason: str | None) -> str:
    """The override reason as stored: stripped, bounded (ReviewInputError when too long)."""
    reason = (reason or "").strip()
    if len(reason) > MAX_OVERRIDE_REASON:
        raise ReviewInputError(f"The override reason is too long (at most {MAX_OVERRIDE_REASON} characters).")
    return reason


def latest_report(sample: Sample | int) -> Report | None:
    return Report.select().where(Report.sample == sample).order_by(Report.version.desc()).first()


def labels_locked(sample: Sample | int) -> str | None:
    """Why labels cannot change now, or None when they can."""
    latest = latest_report(sample)
    if latest is not None and latest.status != "draft":
        return (f"Report version {latest.version} is signed: cell labels are frozen. "
                "Start an amendment to change them.")
    return None


def frames_locked(sample: Sample | int) -> str | None:
    """Why no frame may be added to the sample now, or None when one may (same rule as the labels: a frame
    added after signing would be analysed but appear in no report and no review queue)."""
    latest = latest_report(sample)
    if latest is not None and latest.status != "draft":
        return (f"Report version {latest.version} of this sample is signed: a frame added now would never be "
                "reviewed. Start an amendment to add frames.")
    return None


def failed_frames(summary: dict) -> list[int]:
    """Frame numbers (as the report numbers them) of the captures whose analysis failed."""
    return [entry["number"] for entry in summary["captures"] if entry["status"] == "failed"]


def sign_blockers(sample: Sample, conclusion: str | None = None, acknowledge_failed: bool = False,
                  override_reason: str | None = None, policy: CountPolicy | None = None) -> list[str]:
    """Every reason sign-off is refused now (empty list: it may be signed).

    Fewer counted white cells than ``policy.minimum`` block unless an ``override_reason`` is given.

    Failed captures block until they are re-analysed or the pathologist acknowledges signing without them
    (``acknowledge_failed``): a frame that can never be analysed must not leave a sample unsignable, and one
    that failed must never be left out silently (the report lists it either way).
    """
    summary = reporting.sample_summary(sample)
    reasons = []
    if summary["captures_total"] == 0:
        reasons.append("There is no capture for this sample yet.")
    if summary["captures_pending"]:
        reasons.append(f"{summary['captures_pending']} capture(s) still waiting for analysis.")
    failed = failed_frames(summary)
    if failed and not acknowledge_failed:
        reasons.append(f"The analysis of frame(s) {', '.join(map(str, failed))} failed: re-analyse them, or confirm "
                       "that you sign without them.")
    if summary["unreviewed"]:
        reasons.append(f"{summary['unreviewed']} cell(s) flagged for review still need your label.")
    too_few = below_minimum_reason(summary["evaluable_cells"], (policy or count_policy()).minimum)
    if too_few and not (override_reason or "").strip():
        reasons.append(too_few)
    if conclusion is not None and not conclusion.strip():
        reasons.append("Write a conclusion before signing.")
    return reasons


def relabel(cell: Cell, label: str, *, username: str, address: str = "") -> Cell:
    """Set the reviewer's label; the AI's label is kept. Bumps the capture's version for sync."""
    if label not in CELL_LABELS:
        raise ReviewInputError(f"Unknown label {label!r}: use one of {', '.join(CELL_LABELS)}.")
    with db_proxy.atomic():
        cell = Cell.get_by_id(cell.id)  # fresh, inside the transaction
        capture = cell.capture
        locked = labels_locked(capture.sample_id)
        if locked:
            raise ReviewError(locked)
        if cell.reviewer_label == label and cell.label_source == "reviewer":
            return cell
        before = row_dict(cell)
        cell.reviewer_label, cell.reviewed_by, cell.reviewed_at = label, username, utcnow()
        cell.label_source = "reviewer"
        cell.save()
        Capture.update(version=Capture.version + 1).where(Capture.id == capture.id).execute()
        old, new = changes(before, row_dict(cell))
        audit("relabel", "cell", cell.id, username=username, before=old, after=new, address=address,
              detail=f"AI label {cell.ai_label}, p_blast {cell.p_blast:.3f}")
    return cell


def accept_ai_labels(sample: Sample, *, username: str, address: str = "") -> int:
    """Record that ``username`` accepted the AI's label of every remaining cell: not at the frame edge, not
    labelled yet, not flagged for review (a flagged cell needs the reviewer's own label). One audit event names
    the cells; returns how many were accepted (0: none was left, nothing recorded)."""
    with db_proxy.atomic():
        locked = labels_locked(sample)
        if locked:
            raise ReviewError(locked)
        remaining = list(Cell.select().join(Capture).where(
            (Capture.sample == sample) & (Cell.edge == False) & (Cell.needs_review == False)
            & Cell.reviewer_label.is_null()).order_by(Cell.id))
        if not remaining:
            return 0
        ids = [cell.id for cell in remaining]
        Cell.update(reviewer_label=Cell.ai_label, reviewed_by=username, reviewed_at=utcnow(),
                    label_source="ai_accepted").where(Cell.id.in_(ids)).execute()
        Capture.update(version=Capture.version + 1).where(
            Capture.id.in_(sorted({cell.capture_id for cell in remaining}))).execute()
        labels: dict[str, int] = {}
        for cell in remaining:
            labels[cell.ai_label] = labels.get(cell.ai_label, 0) + 1
        audit("accept_ai", "sample", sample.id, username=username, address=address,
              after={"cells": ids, "labels": labels, "label_source": "ai_accepted"},
              detail=f"accepted the AI's label of {len(ids)} cell(s) as it was")
    return len(ids)


def _new_version(sample: Sample, username: str, **fields) -> Report:
    latest = latest_report(sample)
    try:
        return Report.create(sample=sample, version=(latest.version + 1) if latest else 1, created_by=username,
                             **fields)
    except pw.IntegrityError:
        raise ReviewError("Someone else started a report for this sample at the same time: reload the page.") from None


def save_draft(sample: Sample, conclusion: str, *, username: str, address: str = "") -> Report:
    """Create or update the one open draft of a sample."""
    with db_proxy.atomic():
        latest = latest_report(sample)
        if latest is not None and latest.status != "draft":
            raise ReviewError(f"Report version {latest.version} is already signed: start an amendment to change it.")
        if latest is None:
            report = _new_version(sample, username, conclusion=conclusion)
            audit("create", "report", report.id, username=username, after=row_dict(report), address=address)
            return report
        before = row_dict(latest)
        latest.conclusion = conclusion
        latest.save()
        old, new = changes(before, row_dict(latest))
        if new:
            audit("update", "report", latest.id, username=username, before=old, after=new, address=address)
        return latest


def sign(sample: Sample, conclusion: str, *, username: str, address: str = "", acknowledge_failed: bool = False,
         override_reason: str | None = None, policy: CountPolicy | None = None) -> Report:
    """Sign the open draft (creating it if needed); when it is an amendment, mark the old version amended.

    ``acknowledge_failed``: the pathologist confirmed signing without the frames whose analysis failed (recorded
    in the audit event; the report lists those frames). ``override_reason``: why the report is signed with fewer
    white cells counted than ``policy.minimum`` (stored on the version, printed on the report). The snapshot
    freezes the counts, the differential, the review record and the count policy in force."""
    reason = clean_override_reason(override_reason)
    policy = policy or count_policy()
    with db_proxy.atomic():
        blockers = sign_blockers(sample, conclusion, acknowledge_failed, reason, policy)
        if blockers:
            raise ReviewError("Cannot sign yet: " + " ".join(blockers))
        latest = latest_report(sample)
        if latest is not None and latest.status != "draft":
            raise ReviewError(f"Report version {latest.version} is already signed: start an amendment to change it.")
        report = latest or _new_version(sample, username)
        before = row_dict(report)
        report.conclusion = conclusion.strip()
        report.ai_summary = {**reporting.snapshot(sample), "count_policy": policy.as_dict()}
        report.override_reason = reason or None
        report.status, report.signed_by, report.signed_at = "signed", username, utcnow()
        report.save()
        after = row_dict(report)
        after.pop("ai_summary", None)  # the snapshot is in the row itself; keep the trail readable
        before.pop("ai_summary", None)
        failed = failed_frames(report.ai_summary)
        audit("sign", "report", report.id, username=username, before=before, after=after, address=address,
              detail=f"signed without the failed frame(s) {', '.join(map(str, failed))}" if failed else "")
        if report.supersedes_id:
            old = Report.get_by_id(report.supersedes_id)
            old.status = "amended"
            old.save()
            audit("supersede", "report", old.id, username=username, before={"status": "signed"},
                  after={"status": "amended", "superseded_by": report.id, "superseded_by_version": report.version},
                  address=address, detail=report.amendment_reason)
        return report


def start_amendment(report: Report, reason: str, *, username: str, address: str = "") -> Report:
    """Open draft version N+1 of a signed report (the latest version); labels may change again."""
    reason = (reason or "").strip()
    if not reason:
        raise ReviewInputError("Give the reason for the amendment.")
    with db_proxy.atomic():
        report = Report.get_by_id(report.id)
        latest = latest_report(report.sample_id)
        if report.status != "signed" or latest.id != report.id:
            raise ReviewError(f"Only the latest signed version can be amended (this is version {report.version}, "
                              f"{report.status}).")
        new = _new_version(report.sample, username, conclusion=report.conclusion, supersedes=report,
                           amendment_reason=reason)
        old = row_dict(report)
        old.pop("ai_summary", None)
        audit("amend", "report", new.id, username=username, before=old, after=row_dict(new), address=address,
              detail=reason)
        return new


def report_dict(report: Report) -> dict:
    """A report row for the API (the snapshot only for signed versions)."""
    out = row_dict(report)
    out["fhir_status"] = reporting.fhir_status(report)
    newer = Report.get_or_none(Report.supersedes == report)
    out["superseded_by"] = newer.id if newer else None
    return out
