"""Per-clinic CSV export of the received records: one row per report, no images, no names.

    rows = clinic_rows("Kano General")        # [dict], in COLUMNS order
    text = to_csv(rows)

For the people who report upwards (counts and conclusions per clinic): each row is
one report (its latest received version) with the patient identifier, the sample's
collection date, the counts of the sample's captures (latest version of each) and
the conclusion. Patient names, dates of birth and images are left out. Cells that
a spreadsheet would run as a formula (starting with = + - @ or a tab) get a leading
apostrophe.
"""

from __future__ import annotations

import csv
import io

from sync.central.models import Device, ReceivedRecord

COLUMNS = ("clinic", "device", "patient_identifier", "sample_id", "collected_at", "report_id", "report_version",
           "status", "signed_by", "signed_at", "captures", "white_cells", "blasts", "needs_review", "conclusion")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def clinics() -> list[str]:
    return [c for (c,) in Device.select(Device.clinic).distinct().order_by(Device.clinic).tuples()]


def _latest(devices: list[Device]) -> dict[tuple[int, str, int], dict]:
    latest: dict[tuple[int, str, int], tuple[int, dict]] = {}
    query = (ReceivedRecord.select(ReceivedRecord.device, ReceivedRecord.entity, ReceivedRecord.record_id,
                                   ReceivedRecord.version, ReceivedRecord.payload)
             .where(ReceivedRecord.device.in_([d.id for d in devices]),
                    ReceivedRecord.entity.in_(("sample", "capture", "report"))))
    for row in query.iterator():
        key = (row.device_id, row.entity, row.record_id)
        if key not in latest or row.version > latest[key][0]:
            latest[key] = (row.version, row.payload if isinstance(row.payload, dict) else {})
    return {key: payload for key, (_, payload) in latest.items()}


def _number(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def clinic_rows(clinic: str) -> list[dict]:
    devices = list(Device.select().where(Device.clinic == clinic).order_by(Device.device_id))
    if not devices:
        return []
    names = {d.id: d.device_id for d in devices}
    latest = _latest(devices)
    captures: dict[tuple[int, object], list[dict]] = {}
    for (device, entity, _), payload in latest.items():
        if entity == "capture":
            captures.setdefault((device, payload.get("sample_id")), []).append(payload)
    rows = []
    for (device, entity, record_id), report in sorted(latest.items(), key=lambda item: (names[item[0][0]],
                                                                                         item[0][2])):
        if entity != "report":
            continue
        sample_id = report.get("sample_id")
        sample = latest.get((device, "sample", sample_id), {}) if isinstance(sample_id, int) else {}
        done = [c for c in captures.get((device, sample_id), []) if c.get("status") == "done"]
        rows.append({
            "clinic": clinic, "device": names[device],
            "patient_identifier": report.get("patient_identifier") or sample.get("patient_identifier") or "",
            "sample_id": sample_id if sample_id is not None else "", "collected_at": sample.get("collected_at") or "",
            "report_id": record_id, "report_version": report.get("version") or "", "status": report.get("status") or "",
            "signed_by": report.get("signed_by") or "", "signed_at": report.get("signed_at") or "",
            "captures": len(done), "white_cells": sum(_number(c.get("cell_count")) for c in done),
            "blasts": sum(_number(c.get("blast_count")) for c in done),
            "needs_review": sum(_number(c.get("review_count")) for c in done),
            "conclusion": report.get("conclusion") or "",
        })
    return rows


def _cell(value) -> str:
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell(row[column]) for column in COLUMNS])
    return buffer.getvalue()
