"""Saving and reading patients and samples for the pages and the API: audited, versioned, one transaction each.

Each change names its :class:`~device.services.actor.Actor` (who, from where) explicitly.

Every change writes its audit event inside the same transaction as the row,
and bumps the row's ``version`` (the sync agent compares versions). Stored
timestamps are naive UTC like the rest of ``device/records``; the collection
time is typed in device-local time and converted here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import peewee as pw

from device.errors import InvalidInput
from device.services.actor import Actor
from device.store.records import Capture, Patient, Report, Sample, audit, changes, db_proxy, row_dict, utcnow

PAGE_SIZE = 25


class DuplicateIdentifier(InvalidInput):
    """Another request registered the same identifier between validation and saving (the form's field error)."""


def to_utc(local: dt.datetime) -> dt.datetime:
    """Naive device-local wall time -> naive UTC."""
    return local.astimezone(dt.timezone.utc).replace(tzinfo=None)


def to_local(utc: dt.datetime | None) -> dt.datetime | None:
    """Naive UTC -> naive device-local wall time (for display and the datetime-local input)."""
    if utc is None:
        return None
    return utc.replace(tzinfo=dt.timezone.utc).astimezone().replace(tzinfo=None)


def age_years(born: dt.date | None, today: dt.date | None = None) -> int | None:
    if born is None:
        return None
    today = today or dt.date.today()
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


# --- changes ---------------------------------------------------------------------------------------------

def create_patient(values: dict, actor: Actor) -> Patient:
    try:
        with db_proxy.atomic():
            patient = Patient.create(**values)
            audit("create", "patient", patient.id, after=row_dict(patient), **actor.audit_fields())
    except pw.IntegrityError as err:
        raise DuplicateIdentifier(values.get("identifier")) from err
    return patient


def update_patient(patient: Patient, values: dict, actor: Actor) -> bool:
    """Apply the changed values; False when nothing changed (no version bump, no audit event)."""
    current = row_dict(patient)
    before = {name: current[name] for name in values}
    for name, value in values.items():
        setattr(patient, name, value)
    updated = row_dict(patient)
    after = {name: updated[name] for name in values}
    old, new = changes(before, after)
    if not new:
        return False
    try:
        with db_proxy.atomic():
            patient.version += 1
            patient.updated_at = utcnow()
            patient.save()
            audit("update", "patient", patient.id, before=old, after=new,
                  detail=f"version {patient.version}", **actor.audit_fields())
    except pw.IntegrityError as err:
        raise DuplicateIdentifier(values.get("identifier")) from err
    return True


def create_sample(patient: Patient, values: dict, actor: Actor) -> Sample:
    values = dict(values, collected_at=to_utc(values["collected_at"]))
    with db_proxy.atomic():
        sample = Sample.create(patient=patient, created_by=actor.username, **values)
        audit("create", "sample", sample.id, after=row_dict(sample), **actor.audit_fields())
    return sample


def record_view(entity: str, entity_id: int, actor: Actor) -> None:
    with db_proxy.atomic():
        audit("view", entity, entity_id, **actor.audit_fields())


# --- reading ---------------------------------------------------------------------------------------------

@dataclass
class PatientPage:
    patients: list[Patient]
    page: int
    pages: int
    total: int
    sample_counts: dict[int, int]
    latest_status: dict[int, str]


def search_patients(q: str = "", page: int = 1) -> PatientPage:
    """Newest first; ``q`` matches part of the identifier or the name (case-insensitive)."""
    query = Patient.select()
    q = (q or "").strip()
    if q:
        query = query.where(Patient.identifier.contains(q) | Patient.name.contains(q))
    total = query.count()
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(1, page), pages)
    rows = list(query.order_by(Patient.created_at.desc(), Patient.id.desc()).paginate(page, PAGE_SIZE))
    ids = [p.id for p in rows]
    return PatientPage(rows, page, pages, total, sample_counts(ids), latest_report_status(ids))


def sample_counts(patient_ids: list[int]) -> dict[int, int]:
    if not patient_ids:
        return {}
    query = (Sample.select(Sample.patient, pw.fn.COUNT(Sample.id).alias("n"))
             .where(Sample.patient.in_(patient_ids)).group_by(Sample.patient))
    return {row.patient_id: row.n for row in query}


def latest_report_status(patient_ids: list[int]) -> dict[int, str]:
    """Status of each patient's most recent report row (any sample, any version)."""
    if not patient_ids:
        return {}
    query = (Report.select(Report.status, Sample.patient).join(Sample)
             .where(Sample.patient.in_(patient_ids)).order_by(Report.created_at.desc(), Report.id.desc()))
    out: dict[int, str] = {}
    for report in query:
        out.setdefault(report.sample.patient_id, report.status)
    return out


def patient_samples(patient: Patient) -> list[dict]:
    """The patient's samples, newest first, each with its capture count and every report version."""
    samples = list(patient.samples.order_by(Sample.collected_at.desc(nulls="last"), Sample.id.desc()))
    ids = [s.id for s in samples]
    counts: dict[int, int] = {}
    reports: dict[int, list[Report]] = {i: [] for i in ids}
    if ids:
        query = (Capture.select(Capture.sample, pw.fn.COUNT(Capture.id).alias("n"))
                 .where(Capture.sample.in_(ids)).group_by(Capture.sample))
        counts = {row.sample_id: row.n for row in query}
        for report in Report.select().where(Report.sample.in_(ids)).order_by(Report.version.desc()):
            reports[report.sample_id].append(report)
    return [{"sample": s, "capture_count": counts.get(s.id, 0), "reports": reports[s.id]} for s in samples]


def sample_captures(sample: Sample) -> list[Capture]:
    return list(sample.captures.order_by(Capture.created_at.desc(), Capture.id.desc()))
