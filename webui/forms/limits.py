"""How long each free-text field may be: one limit per field, used by the forms that pages and the API share.

A record has to fit in a sync envelope (4 MB) with room to spare, and a clinician's
note is a paragraph, not a file: each field is bounded here, and a longer value is
refused with one line naming the field ("notes: At most 5000 characters (this one
has 20000000).") before anything is stored, on every path (page or API).

The limits are documented constants, not settings: a clinic that sends longer text
than this is sending a document, which belongs in its own system, and a device must
never accept a value the central or the PDF cannot carry.
"""

from __future__ import annotations

from wtforms.validators import ValidationError

from device.services.signoff import MAX_OVERRIDE_REASON

IDENTIFIER_MAX = 64           # patient identifier (hospital / clinic number); also the column's length
NAME_MAX = 200                # patient name
CLINICIAN_MAX = 200           # referring clinician
SYMPTOMS_MAX = 2000           # patient symptoms
PATIENT_NOTES_MAX = 5000      # patient notes
SAMPLE_NOTES_MAX = 2000       # sample notes
CONCLUSION_MAX = 5000         # a report's conclusion (draft and signature)
AMENDMENT_REASON_MAX = 2000   # why a signed report is amended
OVERRIDE_REASON_MAX = MAX_OVERRIDE_REASON  # why a report is signed below the minimum white cell count (500)

FIELD_LIMITS = {
    "patient.identifier": IDENTIFIER_MAX, "patient.name": NAME_MAX,
    "patient.referring_clinician": CLINICIAN_MAX, "patient.symptoms": SYMPTOMS_MAX,
    "patient.notes": PATIENT_NOTES_MAX, "sample.notes": SAMPLE_NOTES_MAX,
    "report.conclusion": CONCLUSION_MAX, "report.amendment_reason": AMENDMENT_REASON_MAX,
    "report.override_reason": OVERRIDE_REASON_MAX,
}


class MaxChars:
    """A wtforms validator: at most ``limit`` characters, the message saying how many were sent."""

    def __init__(self, limit: int):
        self.limit = limit
        self.field_flags = {"maxlength": limit}  # the browser stops typing there too

    def __call__(self, form, field):
        data = field.data if isinstance(field.data, str) else ""
        if len(data) > self.limit:
            raise ValidationError(f"At most {self.limit} characters (this one has {len(data)}).")
