"""Patient and sample forms: the one source of validation for the pages and the JSON API.

The pages bind the forms to ``request.form``; the API turns a JSON object into
the same form data (:func:`json_formdata`) and validates with the same class,
so a rule lives in exactly one place.
"""

from __future__ import annotations

import datetime as dt
import math

from flask_wtf import FlaskForm
from peewee import fn
from werkzeug.datastructures import MultiDict
from wtforms import DateField, DateTimeLocalField, FloatField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, NumberRange, Optional, Regexp, ValidationError
from wtforms.widgets import TextInput

from device.errors import InvalidInput
from device.store.records import SEXES, Patient
from webui.forms import limits
from webui.forms.limits import MaxChars

SPECIMEN_TYPES = ("peripheral blood", "bone marrow aspirate", "other")
STAINS = ("May-Grünwald-Giemsa", "Wright-Giemsa", "Giemsa", "Leishman", "other")
EARLIEST_BIRTH = dt.date(1900, 1, 1)
# A clock a little ahead on the tablet or device must not make "now" look like the future.
FUTURE_SLACK = dt.timedelta(minutes=5)

PATIENT_FIELDS = ("identifier", "name", "date_of_birth", "sex", "referring_clinician", "symptoms",
                  "wbc", "hemoglobin", "platelets", "notes")
SAMPLE_FIELDS = ("collected_at", "specimen_type", "stain", "notes")


def identifier_key(identifier: str | None) -> str:
    """How identifiers compare: surrounding spaces and upper/lower case do not count (as SQLite's
    lower(trim(...)) in the schema v6 index: identifiers are ASCII letters, digits and - _ . /)."""
    return (identifier or "").strip().lower()


def _strip(value):
    return value.strip() if isinstance(value, str) else value


class NumberField(FloatField):
    """A decimal number typed on a touch keyboard: accepts "7,5", refuses NaN and infinity.

    A text input with ``inputmode="decimal"``, not ``type="number"``: Chromium's number input refuses a
    decimal comma in an English locale (the field reads empty), so "48,5" could not even be typed."""

    widget = TextInput()

    def process_formdata(self, valuelist):
        if not valuelist or valuelist[0] in ("", None):
            self.data = None
            return
        text = str(valuelist[0]).strip().replace(",", ".")
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            self.data = None
            raise ValueError("Enter a number, for example 7.5.")
        self.data = value


def _number(label: str, unit: str, high: float) -> NumberField:
    return NumberField(f"{label} ({unit})", validators=[
        Optional(), NumberRange(0, high, message=f"Enter a value from 0 to {high:g} {unit}.")],
        render_kw={"inputmode": "decimal", "autocomplete": "off", "pattern": r"\s*[0-9]+([.,][0-9]+)?\s*",
                   "maxlength": 16})


class PatientForm(FlaskForm):
    identifier = StringField("Patient identifier", filters=[_strip], validators=[
        DataRequired("Enter the patient identifier."),
        MaxChars(limits.IDENTIFIER_MAX),
        Regexp(r"^[A-Za-z0-9._/-]+$", message="Use only letters, digits and - _ . /")],
        render_kw={"autocapitalize": "characters", "autocomplete": "off"})
    name = StringField("Name", filters=[_strip], validators=[
        DataRequired("Enter the patient's name."), MaxChars(limits.NAME_MAX)],
        render_kw={"autocomplete": "off"})
    date_of_birth = DateField("Date of birth", validators=[Optional()])
    sex = SelectField("Sex", choices=list(SEXES), default="unknown",
                      validate_choice=True)
    referring_clinician = StringField("Referring clinician", filters=[_strip],
                                      validators=[MaxChars(limits.CLINICIAN_MAX)])
    symptoms = TextAreaField("Symptoms", filters=[_strip], validators=[MaxChars(limits.SYMPTOMS_MAX)])
    wbc = _number("WBC", "×10⁹/L", 1000)
    hemoglobin = _number("Haemoglobin", "g/dL", 30)
    platelets = _number("Platelets", "×10⁹/L", 5000)
    notes = TextAreaField("Notes", filters=[_strip], validators=[MaxChars(limits.PATIENT_NOTES_MAX)])

    def __init__(self, *args, patient_id: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._patient_id = patient_id  # the patient being edited: its own identifier is not "taken"

    def validate_identifier(self, field):
        """Unique ignoring case and surrounding spaces (schema v6 enforces the same); an edit that keeps the
        patient's own identifier (up to case) is never refused, even for a duplicate kept from before v6."""
        key = identifier_key(field.data)
        if self._patient_id is not None:
            own = Patient.get_or_none(Patient.id == self._patient_id)
            if own is not None and identifier_key(own.identifier) == key:
                return
        query = Patient.select().where(fn.lower(fn.trim(Patient.identifier)) == key)
        if self._patient_id is not None:
            query = query.where(Patient.id != self._patient_id)
        taken = query.first()
        if taken is not None:
            raise ValidationError(f"This identifier is already registered to another patient (as {taken.identifier}; "
                                  "identifiers are compared ignoring upper and lower case).")

    def validate_date_of_birth(self, field):
        if field.data is None:
            return
        if field.data > dt.date.today():
            raise ValidationError("The date of birth cannot be in the future.")
        if field.data < EARLIEST_BIRTH:
            raise ValidationError("The date of birth cannot be before 1900.")

    def values(self) -> dict:
        """The validated values, ready for the Patient row."""
        out = {name: self[name].data for name in PATIENT_FIELDS}
        for name in ("referring_clinician", "symptoms", "notes"):
            out[name] = out[name] or ""
        return out


class SampleForm(FlaskForm):
    collected_at = DateTimeLocalField("Collected at", format=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"],
                                      validators=[DataRequired("Enter when the sample was collected.")])
    specimen_type = SelectField("Specimen type", choices=list(SPECIMEN_TYPES),
                                default=SPECIMEN_TYPES[0])
    stain = SelectField("Stain", choices=list(STAINS), default=STAINS[0])
    notes = TextAreaField("Notes", filters=[_strip], validators=[MaxChars(limits.SAMPLE_NOTES_MAX)])

    def validate_collected_at(self, field):
        if field.data is not None and field.data > dt.datetime.now() + FUTURE_SLACK:
            raise ValidationError("The collection time cannot be in the future.")
        if field.data is not None and field.data.date() < EARLIEST_BIRTH:
            raise ValidationError("The collection time is not plausible.")

    def values(self) -> dict:
        """Validated values; ``collected_at`` is device-local wall time as typed (see to_utc)."""
        return {name: self[name].data if name != "notes" else (self.notes.data or "") for name in SAMPLE_FIELDS}


# --- the API's bridge: JSON object -> the same form data the pages post --------------------------------

class PayloadError(InvalidInput, ValueError):
    """The JSON body is not an object of plain values (a 400 before any field is looked at)."""


def json_formdata(payload, allowed: tuple[str, ...], base: MultiDict | None = None) -> MultiDict:
    """Form data from a JSON object of field -> value; ``base`` holds current values for a partial update.

    ``null`` clears a field; unknown names, nested values and booleans are refused outright.
    """
    if not isinstance(payload, dict):
        raise PayloadError("send a JSON object of fields")
    unknown = sorted(set(payload) - set(allowed))
    if unknown:
        raise PayloadError(f"unknown field(s): {', '.join(unknown)}")
    data = MultiDict(base or {})
    for name, value in payload.items():
        if isinstance(value, (dict, list, bool)):
            raise PayloadError(f"{name}: must be a single text or number value")
        data[name] = "" if value is None else str(value)
    return data


def patient_formdata(patient: Patient) -> MultiDict:
    """A patient's current values as the form would post them (for PATCH)."""
    data = MultiDict()
    for name in PATIENT_FIELDS:
        value = getattr(patient, name)
        if value is None:
            value = ""
        elif isinstance(value, dt.date):
            value = value.isoformat()
        elif isinstance(value, float):
            value = repr(value)
        data[name] = str(value)
    return data


def field_errors(form: FlaskForm) -> dict[str, str]:
    """One message per field, for the API's {"error", "fields"} answer."""
    return {name: messages[0] for name, messages in form.errors.items() if messages}
