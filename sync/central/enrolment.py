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

    Re-enrolment clears the revocation, the pinned signing key and a registered key fingerprint, and
    records the new certificate's fingerprint: the device's next ``hello`` pins its key only with a proof
    made by the *new* certificate's key (an old bundle proves nothing), or once an admin registers the key
    again (``register_signing_key``). This is how an admin resolves a "key_mismatch".
    """
    from device.store.records import db_proxy
    from sync.central.models import Device

    with db_proxy.atomic():
        device = Device.get_or_none(Device.device_id == device_id)
        if device is None:
            Device.create(device_id=device_id, clinic=clinic, state="enrolled", cert_fingerprint=fingerprint)
            return False
        device.state, device.revoked_at, device.cert_fingerprint = "enrolled", None, fingerprint
        device.signing_public_key, device.signing_key_fingerprint, device.enrolled_at = "", "", utcnow()
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


def renew_device(device_id: str, *, out: Path, pki_dir: Path | str | None, broker_host: str,
                 broker_port: int = DEFAULT_BROKER_PORT) -> Enrolment:
    """A new certificate and bundle for an enrolled device that keeps its identity (the central database must be
    open; audit is the caller's).

    The old certificate goes on the CRL (superseded); the pinned signing key and a registered fingerprint stay,
    so the device, which keeps its signing key when it installs the bundle, goes on without a new hello
    proof. A revoked device is refused: renewing must not readmit it (``enrol --force`` does, on purpose).
    """
    from device.store.records import db_proxy
    from sync.central.models import Device

    check_device_name(device_id)
    device = Device.get_or_none(Device.device_id == device_id)
    if device is None:
        raise AllscopeError(f"no enrolled device {device_id!r}: enrol it first (allscope central enrol)")
    if device.state == "revoked":
        raise AllscopeError(f"{device_id} is revoked: renewing would readmit it (enrol it again with --force if "
                            f"that is what you want)")
    pki = open_pki(pki_dir)
    if not pki.cert_path(device_id).exists():
        raise AllscopeError(f"no certificate for {device_id} in {pki.root}: is this the PKI it was enrolled with?")
    fingerprint = write_bundle(pki, device_id, Path(out), broker_host=broker_host, broker_port=broker_port,
                               clinic=device.clinic)
    with db_proxy.atomic():
        Device.update(cert_fingerprint=fingerprint).where(Device.id == device.id).execute()
    return Enrolment(device_id, Path(out), fingerprint, True)


@dataclass(frozen=True)
class KeyRegistration:
    device_id: str
    fingerprint: str          # as registered (sync.wire.keys.fingerprint's spelling)
    previous: str             # the fingerprint registered before, or ""
    pinned: str               # fingerprint of the key pinned before, or ""
    unpinned: bool            # the pinned key was another one and is no longer trusted

    def line(self) -> str:
        text = (f"registered signing key {self.fingerprint} for {self.device_id}: only this key is pinned, "
                f"online or from a USB import")
        if self.unpinned:
            text += f"; the key pinned before ({self.pinned}) is no longer trusted"
        return text


def parse_key_fingerprint(text: str) -> str:
    """An Ed25519 key fingerprint as ``allscope device enrol`` prints it (64 hex digits, colons optional)."""
    from sync.wire.keyproof import normal_fingerprint

    digits = normal_fingerprint(text)
    if not digits:
        raise AllscopeError(f"signing key fingerprint {str(text)[:100]!r}: expected the 64 hex digits (colons "
                            f"optional) that allscope device enrol prints")
    return ":".join(digits[i:i + 2] for i in range(0, 64, 2))


def register_signing_key(device_id: str, fingerprint: str) -> KeyRegistration:
    """Register the device's Ed25519 key fingerprint (read off the device at ``allscope device enrol``).

    From then on only that key is pinned, whether its hello comes over MQTT or from a USB import; if another
    key was pinned (someone else's hello came first), it is unpinned. Audit is the caller's.
    """
    from device.store.records import db_proxy
    from sync.central.models import Device
    from sync.wire.keys import KeyFileError, ed25519_public_from_pem
    from sync.wire.keys import fingerprint as key_fingerprint

    wanted = parse_key_fingerprint(fingerprint)
    with db_proxy.atomic():
        device = Device.get_or_none(Device.device_id == device_id)
        if device is None:
            raise AllscopeError(f"no enrolled device {device_id!r}")
        if device.state == "revoked":
            raise AllscopeError(f"{device_id} is revoked: enrol it again first")
        pinned = ""
        if device.signing_public_key:
            try:
                pinned = key_fingerprint(ed25519_public_from_pem(device.signing_public_key))
            except KeyFileError:
                pinned = "unreadable key"
        unpinned = bool(pinned) and pinned != wanted
        previous = device.signing_key_fingerprint
        device.signing_key_fingerprint = wanted
        if unpinned:
            device.signing_public_key = ""
        device.save()
    return KeyRegistration(device_id, wanted, previous, pinned, unpinned)


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
