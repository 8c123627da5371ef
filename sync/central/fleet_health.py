"""Health at a glance for the devices page: silent devices, certificate expiry, ingestion errors per day.

    silent_devices(days=3)                 # enrolled devices not seen for more than ``days`` (or never, once
                                           # enrolled that long)
    certificate_expiries(pki_dir, 30)      # CA, broker, central and every enrolled device: expiry and a level
    errors_per_day(days=14)                # [(date, count)], oldest first, every day present (0 when none)

Certificates are read from the PKI directory (``ca.crt``, ``broker.crt``, ``central.crt`` and
``issued/<device>.crt``, the certificate each device was issued at enrolment): the broker's and the
central's are the files the broker and the receivers are configured with (``allscope central pki init``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import peewee as pw

from device.store.records import utcnow
from sync.central.models import Device, IngestError

EXPIRED, WARNING, OK, MISSING = "expired", "warning", "ok", "missing"


@dataclass(frozen=True)
class CertExpiry:
    name: str           # "fleet CA", "broker", "central" or a device id
    kind: str           # "ca" | "broker" | "central" | "device"
    not_after: dt.datetime | None  # UTC, naive (as the database's times); None when missing or unreadable
    days_left: int | None
    level: str          # expired | warning | ok | missing
    problem: str = ""


def silent_devices(days: int, now: dt.datetime | None = None) -> list[Device]:
    cutoff = (now or utcnow()) - dt.timedelta(days=days)
    quiet = (Device.last_seen_at < cutoff) | (Device.last_seen_at.is_null() & (Device.enrolled_at < cutoff))
    return list(Device.select().where(Device.state == "enrolled", quiet)
                .order_by(Device.last_seen_at.asc(nulls="FIRST"), Device.device_id))


def _expiry(name: str, kind: str, path: Path, warn_days: int, now: dt.datetime) -> CertExpiry:
    from sync.fleet.pki import load_certificate

    if not path.is_file():
        return CertExpiry(name, kind, None, None, MISSING, f"{path.name} not found in the PKI directory")
    try:
        not_after = load_certificate(path).not_valid_after_utc.replace(tzinfo=None)
    except Exception as error:  # noqa: BLE001 - an unreadable file is shown, not a failed page
        return CertExpiry(name, kind, None, None, MISSING, " ".join(str(error).split())[:200])
    days_left = (not_after - now).days if not_after > now else -((now - not_after).days + 1)
    level = EXPIRED if not_after <= now else WARNING if not_after - now <= dt.timedelta(days=warn_days) else OK
    return CertExpiry(name, kind, not_after, days_left, level)


def certificate_expiries(pki_dir: Path, warn_days: int, now: dt.datetime | None = None) -> list[CertExpiry]:
    """The fleet's certificates, the soonest to expire (or missing) first."""
    now = now or utcnow()
    pki_dir = Path(pki_dir)
    rows = [_expiry("fleet CA", "ca", pki_dir / "ca.crt", warn_days, now),
            _expiry("broker", "broker", pki_dir / "broker.crt", warn_days, now),
            _expiry("central", "central", pki_dir / "central.crt", warn_days, now)]
    for (device_id,) in Device.select(Device.device_id).where(Device.state == "enrolled").tuples():
        rows.append(_expiry(device_id, "device", pki_dir / "issued" / f"{device_id}.crt", warn_days, now))
    order = {EXPIRED: 0, MISSING: 1, WARNING: 2, OK: 3}
    return sorted(rows, key=lambda row: (order[row.level], row.not_after or now, row.name))


def errors_per_day(days: int = 14, now: dt.datetime | None = None) -> list[tuple[dt.date, int]]:
    today = (now or utcnow()).date()
    first = today - dt.timedelta(days=days - 1)
    counts = dict.fromkeys((first + dt.timedelta(days=n) for n in range(days)), 0)
    start = dt.datetime.combine(first, dt.time())
    day = pw.fn.DATE(IngestError.at)  # SQLite answers "YYYY-MM-DD", PostgreSQL a date (same SQL on both)
    for value, count in (IngestError.select(day, pw.fn.COUNT(IngestError.id)).where(IngestError.at >= start)
                         .group_by(day).tuples()):
        # peewee may hand back the DATE() of a datetime column as a datetime at midnight
        date = value.date() if isinstance(value, dt.datetime) else value if isinstance(value, dt.date) \
            else dt.date.fromisoformat(str(value))
        if date in counts:
            counts[date] += count
    return sorted(counts.items())
