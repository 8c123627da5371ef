"""Central admin UI: received records per clinic and device with search, one record, a patient's diagnoses.

Search matches the patient identifier (``ReceivedRecord.patient_identifier``,
on every entity) or the patient's name (the ``name`` field of patient
payloads). It is portable SQL (LIKE on SQLite, ILIKE on PostgreSQL) plus an
exact check in Python on the few patient payloads the LIKE pre-selects, so it
needs no JSON functions of either backend. Opening a record or a patient is
an audited view, as on the device.
"""

from __future__ import annotations

import json
import math

import peewee as pw
from flask import Blueprint, abort, render_template, request, send_file
from flask_login import current_user

from device.store.records import audit, db_proxy
from sync.central.models import ENTITIES, Device, ReceivedFile, ReceivedRecord
from sync.central.web import record_media
from sync.central.web.runtime import central
from webui.kit.access import ADMIN, allow

bp = Blueprint("records", __name__)


def _like_text(term: str) -> str:
    """``term`` as it appears inside stored JSON text (non-ASCII is \\u-escaped by json.dumps)."""
    return json.dumps(term)[1:-1]


def identifiers_matching(term: str) -> set[str]:
    """Patient identifiers whose identifier or (any version of the) name contains ``term``, case-insensitively."""
    term = term.strip()
    if not term:
        return set()
    needle = term.casefold()
    found = {i for (i,) in ReceivedRecord.select(ReceivedRecord.patient_identifier).distinct()
             .where(ReceivedRecord.patient_identifier.contains(term)).tuples()}
    # A raw value: the JSON field would otherwise encode the pattern itself as JSON.
    pattern = pw.Value(f"%{_like_text(term)}%", converter=False)
    candidates = (ReceivedRecord.select(ReceivedRecord.payload)
                  .where((ReceivedRecord.entity == "patient")
                         & pw.Expression(ReceivedRecord.payload, pw.OP.ILIKE, pattern)))
    for record in candidates:
        payload = record.payload if isinstance(record.payload, dict) else {}
        if needle in str(payload.get("name", "")).casefold() or needle in str(payload.get("identifier", "")).casefold():
            found.add(str(payload.get("identifier") or ""))
    found.discard("")
    return found


def summary(record: ReceivedRecord) -> str:
    """One line about a record version for the lists."""
    p = record.payload if isinstance(record.payload, dict) else {}
    if record.entity == "patient":
        return " · ".join(str(x) for x in (p.get("name"), p.get("sex"), p.get("date_of_birth")) if x)
    if record.entity == "sample":
        return " · ".join(str(x) for x in (p.get("specimen_type"), p.get("collected_at")) if x)
    if record.entity == "capture":
        return f"{p.get('status', '?')}: {p.get('cell_count', 0)} cells, {p.get('blast_count', 0)} flagged"
    if record.entity == "report":
        signer = f" by {p['signed_by']}" if p.get("signed_by") else ""
        return f"report v{p.get('version', '?')} {p.get('status', '?')}{signer}"
    return ""


def _clinics() -> list[str]:
    return [c for (c,) in Device.select(Device.clinic).distinct().order_by(Device.clinic).tuples()]


@bp.get("/records")
@allow(ADMIN)
def record_list():
    args = {k: request.args.get(k, "").strip() for k in ("q", "clinic", "device", "entity")}
    query = ReceivedRecord.select(ReceivedRecord, Device).join(Device)
    if args["clinic"]:
        query = query.where(Device.clinic == args["clinic"])
    if args["device"]:
        query = query.where(Device.device_id == args["device"])
    if args["entity"] in ENTITIES:
        query = query.where(ReceivedRecord.entity == args["entity"])
    if args["q"]:
        query = query.where(ReceivedRecord.patient_identifier.in_(sorted(identifiers_matching(args["q"])) or [""])
                            & (ReceivedRecord.patient_identifier != ""))
    size = central().page_size
    total = query.count()
    pages = max(1, math.ceil(total / size))
    page = min(max(request.args.get("page", 1, type=int) or 1, 1), pages)
    records = list(query.order_by(ReceivedRecord.received_at.desc(), ReceivedRecord.id.desc())
                   .paginate(page, size))
    filters = {k: v for k, v in args.items() if v}
    return render_template("central/records.html", records=records, total=total, page=page, pages=pages,
                           filters=filters, args=args, clinics=_clinics(), entities=ENTITIES, summary=summary,
                           per_clinic=per_clinic_counts())


@bp.get("/records/<int:record_id>")
@allow(ADMIN)
def record_page(record_id: int):
    record = (ReceivedRecord.select(ReceivedRecord, Device).join(Device)
              .where(ReceivedRecord.id == record_id).first())
    if record is None:
        abort(404)
    versions = list(ReceivedRecord.select().where(
        (ReceivedRecord.device == record.device) & (ReceivedRecord.entity == record.entity)
        & (ReceivedRecord.record_id == record.record_id)).order_by(ReceivedRecord.version.desc()))
    with db_proxy.atomic():
        audit("view", "received_record", record.id, username=current_user.username, address=request.remote_addr or "",
              detail=f"{record.device.device_id} {record.entity}:{record.record_id} v{record.version}")
    versions, hidden = record_media.lasting_versions(versions, record)
    pictures = record_media.capture_pictures(record) if record.entity == "capture" else []
    return render_template("central/record.html", record=record, versions=versions, summary=summary,
                           hidden_versions=hidden, pictures=pictures,
                           payload_text=json.dumps(record.payload, indent=2, sort_keys=True, ensure_ascii=False))


@bp.get("/files/<int:file_id>")
@allow(ADMIN)
def received_file(file_id: int):
    """A received image (frame or crop), for the record page; only complete files inside the data directory."""
    row = ReceivedFile.get_or_none(ReceivedFile.id == file_id)
    if row is None or not row.complete or not row.stored_path:
        abort(404)
    root = central().data.root.resolve()
    path = (root / row.stored_path).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        abort(404)
    mimetype = record_media.IMAGE_TYPES.get(path.suffix.lower(), "application/octet-stream")
    response = send_file(path, mimetype=mimetype, max_age=0)
    response.headers["Cache-Control"] = "private, no-store"  # patient images
    return response


@bp.get("/patients/<path:identifier>")
@allow(ADMIN)
def patient_page(identifier: str):
    base = (ReceivedRecord.select(ReceivedRecord, Device).join(Device)
            .where(ReceivedRecord.patient_identifier == identifier))
    patients = list(base.where(ReceivedRecord.entity == "patient")
                    .order_by(ReceivedRecord.created_at.desc(), ReceivedRecord.version.desc()))
    reports = list(base.where(ReceivedRecord.entity == "report")
                   .order_by(ReceivedRecord.created_at.desc(), ReceivedRecord.id.desc()))
    if not patients and not reports and not base.exists():
        abort(404)
    latest: dict[tuple[int, int], ReceivedRecord] = {}  # newest version of the patient record on each device
    for record in patients:
        key = (record.device_id, record.record_id)
        if key not in latest or record.version > latest[key].version:
            latest[key] = record
    with db_proxy.atomic():
        audit("view", "patient", identifier, username=current_user.username, address=request.remote_addr or "",
              detail=f"{len(reports)} report versions from {len({r.device_id for r in reports})} devices")
    return render_template("central/patient.html", identifier=identifier, patients=list(latest.values()),
                           reports=reports, device_count=len({r.device_id for r in patients + reports}))


def per_clinic_counts() -> list[tuple[str, int, int]]:
    """(clinic, devices, records) for the records page header."""
    rows = (Device.select(Device.clinic, pw.fn.COUNT(pw.fn.DISTINCT(Device.id)), pw.fn.COUNT(ReceivedRecord.id))
            .join(ReceivedRecord, pw.JOIN.LEFT_OUTER).group_by(Device.clinic).order_by(Device.clinic).tuples())
    return list(rows)
