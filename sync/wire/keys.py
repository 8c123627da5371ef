"""Envelope keys on disk: Ed25519 (signing) and X25519 (encryption), PEM, private keys 0600.

Private keys are PKCS#8 PEM without a passphrase (the appliance starts
unattended; the file mode and the data directory's owner protect them),
public keys SubjectPublicKeyInfo PEM. Every write goes through
``write_atomic`` so a crash never leaves half a key. Loading errors are one
line (``KeyFileError``), for the CLI.

Fingerprints are the SHA-256 of the raw 32-byte public key, as colon-separated
lower-case hex pairs (95 characters, the width of ``Device.cert_fingerprint``),
so an admin can compare what the device prints with the central's list.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from device.errors import AllscopeError
from device.store.atomic import write_atomic

PrivateKey = Ed25519PrivateKey | X25519PrivateKey
PublicKey = Ed25519PublicKey | X25519PublicKey


class KeyFileError(AllscopeError):
    """A key file is missing, unreadable or holds the wrong kind of key."""


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_pem(key: PublicKey | PrivateKey) -> bytes:
    if isinstance(key, (Ed25519PrivateKey, X25519PrivateKey)):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def raw_public(key: PublicKey | PrivateKey) -> bytes:
    """The 32 raw bytes of a public key (or of the public half of a private key)."""
    if isinstance(key, (Ed25519PrivateKey, X25519PrivateKey)):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: PublicKey | PrivateKey) -> str:
    digest = hashlib.sha256(raw_public(key)).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def save_private(key: PrivateKey, path: str | Path) -> Path:
    """Write a private key (0600) and return its path."""
    path = Path(path)
    write_atomic(path, private_pem(key), mode=0o600)
    return path


def save_public(key: PublicKey | PrivateKey, path: str | Path) -> Path:
    path = Path(path)
    write_atomic(path, public_pem(key), mode=0o644)
    return path


def _read(path: str | Path) -> bytes:
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path}: not found") from None
    except OSError as err:
        raise KeyFileError(f"key file {path}: cannot read it ({err.strerror or err})") from None


def _load_private(data: bytes, kind: type, label: str, where: str):
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"{where}: not a PEM private key without passphrase") from None
    if not isinstance(key, kind):
        raise KeyFileError(f"{where}: not an {label} private key")
    return key


def _load_public(data: bytes, kind: type, label: str, where: str):
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise KeyFileError(f"{where}: not a PEM public key") from None
    if not isinstance(key, kind):
        raise KeyFileError(f"{where}: not an {label} public key")
    return key


def load_ed25519_private(path: str | Path) -> Ed25519PrivateKey:
    return _load_private(_read(path), Ed25519PrivateKey, "Ed25519", f"key file {path}")


def load_x25519_private(path: str | Path) -> X25519PrivateKey:
    return _load_private(_read(path), X25519PrivateKey, "X25519", f"key file {path}")


def load_ed25519_public(path: str | Path) -> Ed25519PublicKey:
    return _load_public(_read(path), Ed25519PublicKey, "Ed25519", f"key file {path}")


def load_x25519_public(path: str | Path) -> X25519PublicKey:
    return _load_public(_read(path), X25519PublicKey, "X25519", f"key file {path}")


def ed25519_public_from_pem(pem: str | bytes) -> Ed25519PublicKey:
    """A pinned device key as stored in the central database (``Device.signing_public_key``)."""
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    return _load_public(data, Ed25519PublicKey, "Ed25519", "stored key")


def generate_ed25519(path: str | Path | None = None) -> Ed25519PrivateKey:
    """A new signing key, saved (0600) when ``path`` is given. Refuses to overwrite an existing key."""
    return _generate(Ed25519PrivateKey.generate(), path)


def generate_x25519(path: str | Path | None = None) -> X25519PrivateKey:
    """A new encryption key, saved (0600) when ``path`` is given. Refuses to overwrite an existing key."""
    return _generate(X25519PrivateKey.generate(), path)


def _generate(key, path):
    if path is not None:
        path = Path(path)
        if path.exists():
            # Overwriting would orphan everything sealed to / signed with the old key.
            raise KeyFileError(f"key file {path}: already exists (remove it first if you really mean to replace it)")
        save_private(key, path)
    return key
