"""Enrolment bundles: the central side writes one, the device installs it (the registry: sync.central.enrolment).

A bundle (``allscope central enrol DEVICE_ID --out DIR``) holds only what the device may know::

    ca.crt                      the fleet CA (to check the broker, and the device certificate)
    device.crt / device.key     the device's TLS client certificate (CN = device id) and key (0600)
    central_enc_x25519.pub      central's envelope encryption key (devices encrypt to it)
    central_sign_ed25519.pub    central's acknowledgement signing key (devices verify acks with it)
    bundle.json                 {"device_id", "broker_host", "broker_port", "clinic", "created", "format": 1}

``allscope device enrol BUNDLE`` checks it (the certificate chains to the CA, names the device and
matches its key) and installs it under ``<data_dir>/sync/``, where it also generates the device's own
Ed25519 signing key. That key never leaves the device: central learns its public half from the
device's first ``hello`` and pins it, so a copied bundle alone cannot sign as the device.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from device.errors import AllscopeError
from device.store.atomic import write_atomic
from device.store.datadir import DataDir
from sync.fleet.pki import (
    Pki,
    cert_fingerprint,
    check_name,
    common_name,
    issue,
    load_certificate,
    revoked_serials,
    verify_client_certificate,
)
from sync.wire import keys

BUNDLE_FORMAT = 1
DEFAULT_BROKER_PORT = 8883
RESERVED_PREFIXES = ("central", "broker")  # identities of the server side, never device ids
BUNDLE_FILES = ("ca.crt", "device.crt", "device.key", "central_enc_x25519.pub", "central_sign_ed25519.pub")
SECRET = {"device.key"}
SIGNING_KEY = "device_sign_ed25519.key"
SIGNING_PUB = "device_sign_ed25519.pub"
MAX_BUNDLE_FILE = 64 * 1024


def check_device_name(device_id: str) -> str:
    check_name(device_id)
    if device_id.startswith(RESERVED_PREFIXES):
        raise AllscopeError(f"device id {device_id!r}: names starting with {' or '.join(RESERVED_PREFIXES)} are "
                            f"reserved for the server side")
    return device_id


def parse_broker(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``; the port defaults to 8883) -> (host, port)."""
    text = (text or "").strip()
    host, port = text, DEFAULT_BROKER_PORT
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        port = int(port)
    except ValueError:
        raise AllscopeError(f"broker {text!r}: the port must be a number") from None
    if not host or not 1 <= port <= 65535:
        raise AllscopeError(f"broker {text!r}: use HOST:PORT (port 1-65535)")
    return host, port


# --- central side -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Enrolment:
    device_id: str
    bundle: Path
    cert_fingerprint: str
    re_enrolled: bool


def write_bundle(pki: Pki, device_id: str, out: Path, *, broker_host: str, broker_port: int,
                 clinic: str = "") -> str:
    """Issue (or re-issue) the device certificate and write the bundle to ``out``; returns its fingerprint.

    The bundle is assembled in a temporary sibling directory and renamed into place, so ``out`` either
    holds a complete bundle or does not exist. The device's TLS key then exists only in the bundle: the
    PKI keeps the certificate (``issued/<id>.crt``: expiry, revocation) but deletes ``issued/<id>.key``,
    so a copy of the central's PKI cannot connect as any device.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AllscopeError(f"{out} already exists and is not an empty directory")
    issued = issue(pki, device_id, replace=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files = {"ca.crt": pki.ca_cert, "device.crt": issued.cert, "device.key": issued.key,
                 "central_enc_x25519.pub": pki.enc_pub, "central_sign_ed25519.pub": pki.sign_pub}
        for name, source in files.items():
            write_atomic(staging / name, source.read_bytes(), mode=0o600 if name in SECRET else 0o644)
        meta = {"device_id": device_id, "broker_host": broker_host, "broker_port": int(broker_port),
                "clinic": clinic, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "format": BUNDLE_FORMAT}
        write_atomic(staging / "bundle.json", (json.dumps(meta, indent=2) + "\n").encode(), mode=0o644)
        os.chmod(staging, 0o700)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        issued.key.unlink(missing_ok=True)
        raise
    issued.key.unlink(missing_ok=True)
    return issued.fingerprint


# --- device side ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Installed:
    device_id: str
    sync_dir: Path
    broker: str
    signing_fingerprint: str  # as sync.wire.keys.fingerprint prints it (SHA-256 of the raw public key)
    key_created: bool
    clinic: str = ""


def _unpack_zip(path: Path, into: Path) -> Path:
    """The bundle files of a zip made by the central admin UI (one top folder or none); nothing else."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = Path(info.filename).name
                if info.is_dir() or name not in BUNDLE_FILES + ("bundle.json",):
                    continue
                if info.file_size > MAX_BUNDLE_FILE:
                    raise AllscopeError(f"{path}: {name} is too large for a bundle file")
                (into / name).write_bytes(archive.read(info))
    except (zipfile.BadZipFile, OSError) as error:
        raise AllscopeError(f"{path}: not a readable bundle zip ({error})") from None
    return into


def read_bundle(bundle: Path) -> dict:
    """Check a bundle directory and return its bundle.json (one-line errors)."""
    meta_path = bundle / "bundle.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise AllscopeError(f"{bundle} is not an allscope bundle (no bundle.json)") from None
    except (OSError, ValueError) as error:
        raise AllscopeError(f"{meta_path}: unreadable ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise AllscopeError(f"{meta_path}: unsupported bundle format {meta.get('format') if isinstance(meta, dict) else None!r}")
    for name in BUNDLE_FILES:
        if not (bundle / name).is_file():
            raise AllscopeError(f"{bundle / name} is missing from the bundle")
    device_id = check_device_name(str(meta.get("device_id", "")))
    parse_broker(f"{meta.get('broker_host', '')}:{meta.get('broker_port', '')}")
    ca, cert = load_certificate(bundle / "ca.crt"), load_certificate(bundle / "device.crt")
    verify_client_certificate(ca, cert)
    if common_name(cert) != device_id:
        raise AllscopeError(f"device.crt is issued to {common_name(cert)!r}, not to {device_id!r}")
    try:
        key = serialization.load_pem_private_key((bundle / "device.key").read_bytes(), password=None)
    except (ValueError, TypeError):
        raise AllscopeError(f"{bundle / 'device.key'}: not an unencrypted PEM private key") from None
    if key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
            != cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo):
        raise AllscopeError("device.key does not belong to device.crt")
    keys.load_x25519_public(bundle / "central_enc_x25519.pub")
    keys.load_ed25519_public(bundle / "central_sign_ed25519.pub")
    return meta


def install_bundle(bundle: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                   new_key: bool = False) -> Installed:
    """Install a bundle (directory or zip) into ``<data_dir>/sync/`` and make sure a signing key exists.

    An existing signing key is kept unless ``new_key`` (re-enrolling a device keeps its identity; a new key
    needs the central admin to re-enrol it too, or its hello is refused as a key mismatch).
    """
    bundle = Path(bundle)
    if not bundle.exists():
        raise AllscopeError(f"bundle {bundle}: not found")
    data = DataDir.resolve(data_dir)
    with tempfile.TemporaryDirectory(prefix="allscope-bundle-") as tmp:
        source = _unpack_zip(bundle, Path(tmp)) if bundle.is_file() else bundle
        meta = read_bundle(source)
        sync_dir = data.root / "sync"
        sync_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(sync_dir, 0o700)
        for name in BUNDLE_FILES:
            write_atomic(sync_dir / name, (source / name).read_bytes(), mode=0o600 if name in SECRET else 0o644)
        signing_path = sync_dir / SIGNING_KEY
        created = new_key or not signing_path.exists()
        if created:
            signing = keys.generate_ed25519()
            keys.save_private(signing, signing_path)
        else:
            signing = keys.load_ed25519_private(signing_path)
            os.chmod(signing_path, 0o600)
        keys.save_public(signing, sync_dir / SIGNING_PUB)
        # bundle.json last: the agent treats the device as enrolled only once it is there
        write_atomic(sync_dir / "bundle.json", (json.dumps(meta, indent=2) + "\n").encode(), mode=0o644)
    return Installed(meta["device_id"], sync_dir, f"{meta['broker_host']}:{meta['broker_port']}",
                     keys.fingerprint(signing), created, meta.get("clinic", ""))


def current_certificate_revoked(pki: Pki, device_id: str) -> bool:
    path = pki.cert_path(device_id)
    return path.exists() and load_certificate(path).serial_number in revoked_serials(pki)


__all__ = ["Enrolment", "Installed", "cert_fingerprint", "check_device_name", "install_bundle", "parse_broker",
           "read_bundle", "write_bundle"]
