"""Enrolment on the central side: a device's certificate and bundle, its row in the central database, revocation.

The bundle itself (what it holds, how a device installs it) is ``sync.fleet.enrol``; this module adds what
only the central server has: the ``Device`` registry. Audit is the caller's (CLI or admin UI).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from device.errors import AllscopeError
from device.store.records import utcnow
from sync.fleet.enrol import DEFAULT_BROKER_PORT, Enrolment, check_device_name, write_bundle
from sync.fleet.pki import open_pki
from sync.fleet.pki import revoke as revoke_certificate


def register_device(device_id: str, *, clinic: str, fingerprint: str) -> bool:
    """Create or re-enrol the Device row (bound central database); returns True for a re-enrolment.

    Re-enrolment clears the revocation and the pinned signing key: the device's next ``hello`` pins
    whatever key it now holds (this is how an admin resolves a "key_mismatch").
    """
    from device.store.records import db_proxy
    from sync.central.models import Device

    with db_proxy.atomic():
        device = Device.get_or_none(Device.device_id == device_id)
        if device is None:
            Device.create(device_id=device_id, clinic=clinic, state="enrolled", cert_fingerprint=fingerprint)
            return False
        device.state, device.revoked_at, device.cert_fingerprint = "enrolled", None, fingerprint
        device.signing_public_key, device.enrolled_at = "", utcnow()
        if clinic:
            device.clinic = clinic
        device.save()
        return True


def enrol_device(device_id: str, *, out: Path, pki_dir: Path | str | None, broker_host: str,
                 broker_port: int = DEFAULT_BROKER_PORT, clinic: str = "") -> Enrolment:
    """Certificate, bundle and Device row (the central database must be open). Audit is the caller's."""
    check_device_name(device_id)
    pki = open_pki(pki_dir)
    fingerprint = write_bundle(pki, device_id, Path(out), broker_host=broker_host, broker_port=broker_port,
                               clinic=clinic)
    again = register_device(device_id, clinic=clinic, fingerprint=fingerprint)
    return Enrolment(device_id, Path(out), fingerprint, again)


@dataclass(frozen=True)
class Revocation:
    device_id: str
    revoked_serials: list[int]
    crl_note: str  # "" when the CRL now lists the device's certificate


def revoke_device(device_id: str, *, pki_dir: Path | str | None) -> Revocation:
    """Mark the device revoked (its envelopes are refused) and put its certificate on the broker's CRL.

    Both happen in one transaction of the central database: if the CRL cannot be written the device
    stays enrolled and the error is raised. Audit is the caller's.
    """
    from device.store.records import db_proxy
    from sync.central.models import Device

    with db_proxy.atomic():
        device = Device.get_or_none(Device.device_id == device_id)
        if device is None:
            raise AllscopeError(f"no enrolled device {device_id!r}")
        if device.state != "revoked":
            device.state, device.revoked_at = "revoked", utcnow()
            device.save()
        pki = open_pki(pki_dir)
        if not pki.cert_path(device_id).exists():
            return Revocation(device_id, [], f"no certificate for {device_id} in {pki.root}: the CRL is unchanged")
        serials = revoke_certificate(pki, device_id)
    return Revocation(device_id, serials, "")
