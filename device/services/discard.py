"""Discarding a frame: a technician or pathologist takes a bad frame (blurred, empty, the wrong field) out of
the counts and the report without deleting anything.

The capture keeps its row, its image and its cells; its status becomes "discarded" (one UPDATE, so the sync
trigger sends the change to the central like any other), the audit trail records who discarded it, when, why,
and its status before. ``device/services/reporting.py`` leaves discarded captures out of every count, the
review queue, the report, the PDF and the FHIR export.

Refused (a one-line :class:`DiscardRefused`) while the capture is queued or being analysed (the worker would
write its results over the discard), when it is discarded already, and when it belongs to a signed report:
frames are frozen once a report that counted them is signed (``signoff.frames_locked``), and a frame taken
before any signed version of the sample's report stays part of that version even while an amendment is open.
"""

from __future__ import annotations

from device.errors import Conflict
from device.services.actor import Actor
from device.store.records import Capture, Report, audit, db_proxy

DISCARDED = "discarded"
DISCARDABLE = ("done", "failed")
REASON_MAX = 200


class DiscardRefused(Conflict):
    """The frame cannot be discarded now; the message says why."""


def discard_refusal(capture: Capture) -> str | None:
    """Why ``capture`` cannot be discarded now, or None when it can."""
    from device.services.signoff import frames_locked

    if capture.status == DISCARDED:
        return f"Frame #{capture.id} is discarded already."
    if capture.status not in DISCARDABLE:
        return f"Frame #{capture.id} is {capture.status}: wait until its analysis ends, then discard it."
    locked = frames_locked(capture.sample_id)
    if locked:
        return f"Frame #{capture.id} cannot be discarded: the report of this sample is signed."
    signed = (Report.select().where((Report.sample == capture.sample_id) & (Report.status != "draft")
                                    & (Report.signed_at >= capture.created_at)).exists())
    if signed:
        return f"Frame #{capture.id} is part of a signed report version: it stays in the report."
    return None


def discard_capture(capture_id: int, actor: Actor, reason: str = "") -> Capture:
    """Mark the capture discarded (kept, audited, out of the counts); DiscardRefused with the reason when not."""
    reason = " ".join((reason or "").split())[:REASON_MAX]
    with db_proxy.atomic():
        capture = Capture.get_by_id(capture_id)
        refusal = discard_refusal(capture)
        if refusal:
            raise DiscardRefused(refusal)
        before = capture.status
        Capture.update(status=DISCARDED, version=Capture.version + 1).where(Capture.id == capture.id).execute()
        audit("discard", "capture", capture.id, before={"status": before}, after={"status": DISCARDED},
              detail=reason, **actor.audit_fields())
    return Capture.get_by_id(capture_id)
