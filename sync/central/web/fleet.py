"""The admin UI's bridge to the fleet functions: enrolment bundles as a zip, revocation, key fingerprints.

The work itself is ``sync.fleet.enrol`` (the same code as ``allscope central enrol``
and ``revoke``); this module only packs a bundle directory into a zip for the
browser (``allscope device enrol`` takes the zip as it is) and shows a pinned
key the way ``allscope device enrol`` prints it.
"""

from __future__ import annotations

import io
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sync.central.enrolment import Revocation
    from sync.fleet.enrol import Enrolment


SECRET_FILES = {"device.key"}


def signing_key_fingerprint(pem: str) -> str:
    """The pinned Ed25519 key's fingerprint (SHA-256 of the raw key, as the device prints it), or ""."""
    if not pem:
        return ""
    from sync.wire.keys import KeyFileError, ed25519_public_from_pem, fingerprint

    try:
        return fingerprint(ed25519_public_from_pem(pem))
    except KeyFileError:
        return "unreadable key"


def ca_key_missing(pki_dir: str | Path, action: str = "enrolment") -> str:
    """One line when the PKI is here but the fleet CA's key is not usable (kept offline), else "".

    Enrolment and revocation sign with ``ca.key``: web enrolment needs it on this server (mode 0600, owned by
    the service user); with the key kept offline, enrol and revoke with the CLI where the key is.
    """
    key = Path(pki_dir) / "ca.key"
    if not (Path(pki_dir) / "ca.crt").exists():
        return ""  # no PKI at all: enrolment says so itself (run allscope central pki init)
    if not key.exists():
        return (f"Web {action} is off: the CA key ({key}) is not on this server (kept offline). Use "
                f"`allscope central {'enrol' if action == 'enrolment' else 'revoke'}` where the CA key is.")
    try:
        with open(key, "rb"):
            return ""
    except OSError as error:
        return f"Web {action} is off: the CA key {key} cannot be read by this service ({error.strerror})."


def zip_directory(directory: Path, prefix: str) -> bytes:
    """The files of ``directory`` under ``prefix/`` in a zip; private keys keep mode 0600 when unpacked."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(f"{prefix}/{path.relative_to(directory).as_posix()}")
            mode = 0o600 if path.name in SECRET_FILES or path.suffix == ".key" else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def enrol_bundle(device_id: str, *, clinic: str, broker_host: str, broker_port: int,
                 pki_dir: str) -> tuple[bytes, "Enrolment"]:
    """Enrol ``device_id`` (certificate, bundle, Device row) and return the bundle as zip bytes.

    The bundle directory is made in a private temporary directory and removed once zipped: the device's
    TLS key exists on the server only inside the download (``write_bundle`` keeps no copy in ``issued/``).
    """
    from sync.central.enrolment import enrol_device

    with tempfile.TemporaryDirectory(prefix="allscope-bundle-") as tmp:
        out = Path(tmp) / device_id
        enrolment = enrol_device(device_id, out=out, pki_dir=Path(pki_dir), broker_host=broker_host,
                                 broker_port=broker_port, clinic=clinic)
        return zip_directory(out, f"allscope-bundle-{device_id}"), enrolment


def revoke_device(device_id: str, *, pki_dir: str) -> "Revocation":
    """Mark the device revoked and put its certificate on the broker's CRL (``sync.fleet.enrol``)."""
    from sync.central.enrolment import revoke_device as revoke

    return revoke(device_id, pki_dir=Path(pki_dir))
