"""Storage options of this process, and patient data encrypted at rest (against a stolen SD card).

    atrest.configure(config.storage)        # at start-up; without it the config file in force is read
    atrest.database_for(path, pragmas)      # the peewee database open_database binds (SQLCipher when encrypted)
    atrest.keys_for(data_root)              # None, or the Keys that DataDir encrypts files with
    atrest.connect(path)                    # a DB-API connection (backups, integrity checks)

A data directory is encrypted when it holds ``at-rest.json`` (the marker: format, a random salt and a key
check, never the key). Its database is SQLCipher 4 (AES-256, page HMACs) with a raw 256-bit key, and every
stored image and crop is AES-256-GCM (``MAGIC | nonce | ciphertext+tag``, the file's relative path as
associated data, so files cannot be swapped unnoticed). Both keys are derived with HKDF-SHA256 from one
secret, the key file (``storage.key_file``, mode 0600) or the systemd credential
``$CREDENTIALS_DIRECTORY/allscope-db-key``; ``allscope storage init-key`` makes one. With
``storage.encrypt_at_rest`` on, a new (empty) data directory is made encrypted on first use; the marker then
rules: an encrypted directory is always opened encrypted, and a wrong key is one line, not a crash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import peewee as pw

from device.errors import AllscopeError

SYNCHRONOUS = ("full", "normal")
MARKER = "at-rest.json"  # in the data directory: present when its database and files are encrypted
MAGIC = b"ALSE1"         # first bytes of every encrypted file
NONCE_BYTES = 12
FORMAT = 1
MIN_SECRET_BYTES = 32


class AtRestError(AllscopeError):
    """The data directory cannot be opened as configured (missing or wrong key, …); one line."""


# --- options of this process ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class StorageOptions:
    synchronous: str = "full"
    encrypt: bool = False
    key_file: Path | None = None
    key_credential: str = "allscope-db-key"


_options: StorageOptions | None = None
_keys: dict[Path, "Keys | None"] = {}


def options() -> StorageOptions:
    """The options set by :func:`configure`, else those of the configuration file in force (or the defaults)."""
    global _options
    if _options is None:
        from device.config.schema import load_config

        _options = _from_section(load_config().storage)
    return _options


def _from_section(storage) -> StorageOptions:
    return StorageOptions(synchronous=storage.synchronous, encrypt=storage.encrypt_at_rest,
                          key_file=storage.key_file, key_credential=storage.key_credential)


def configure(storage=None, **changes) -> StorageOptions:
    """Set this process's options from a config ``[storage]`` section and/or keyword changes; returns them."""
    global _options
    base = _from_section(storage) if storage is not None else (_options or StorageOptions())
    if "synchronous" in changes and str(changes["synchronous"]).lower() not in SYNCHRONOUS:
        raise AtRestError(f"storage.synchronous must be one of {', '.join(SYNCHRONOUS)} "
                          f"(got {changes['synchronous']!r})")
    _options = replace(base, **changes)
    _keys.clear()
    return _options


def reset() -> None:
    """Forget the options and cached keys (tests; a process that re-reads its configuration)."""
    global _options
    _options = None
    _keys.clear()


def forget(root: Path) -> None:
    """Drop the cached keys of one data directory (after a restore or a key change replaced its marker)."""
    _keys.pop(Path(root).resolve(), None)


# --- keys ----------------------------------------------------------------------------------------------------
def _hkdf(secret: bytes, salt: bytes, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(secret)


class Keys:
    """The keys derived from the at-rest secret for one data directory (its salt)."""

    def __init__(self, secret: bytes, salt: bytes):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        material = secret.strip()
        if len(material) < MIN_SECRET_BYTES:
            raise AtRestError(f"the at-rest key is too short ({len(material)} bytes; at least {MIN_SECRET_BYTES}): "
                              f"make one with allscope storage init-key")
        self.salt = salt
        self.database = _hkdf(material, salt, b"allscope at-rest v1: sqlcipher database")
        self._files = AESGCM(_hkdf(material, salt, b"allscope at-rest v1: files"))
        self.check = _hkdf(material, salt, b"allscope at-rest v1: key check")[:16].hex()

    @property
    def sqlcipher_key(self) -> str:
        """SQLCipher's raw-key form: no PBKDF2 on every connection (the key is already 256 random-derived bits)."""
        return f"x'{self.database.hex()}'"

    def encrypt(self, data: bytes, relative: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return MAGIC + nonce + self._files.encrypt(nonce, data, relative.encode())

    def decrypt(self, blob: bytes, relative: str) -> bytes:
        from cryptography.exceptions import InvalidTag

        if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + NONCE_BYTES + 16:
            raise AtRestError(f"{relative}: not an encrypted file of this device")
        nonce = blob[len(MAGIC):len(MAGIC) + NONCE_BYTES]
        try:
            return self._files.decrypt(nonce, blob[len(MAGIC) + NONCE_BYTES:], relative.encode())
        except InvalidTag:
            raise AtRestError(f"{relative}: cannot be decrypted (wrong key, or the file is damaged)") from None


def read_secret() -> bytes:
    """The at-rest secret from the key file or the systemd credential (device.config.schema.read_secret's rules)."""
    from device.config.schema import read_secret as read

    chosen = options()
    return read(chosen.key_credential, chosen.key_file)


def new_secret() -> bytes:
    """A fresh secret as stored in a key file: 64 hex digits (256 bits) and a newline."""
    return os.urandom(32).hex().encode() + b"\n"


def _holds_data(root: Path) -> bool:
    if (root / "allscope.db").exists():
        return True
    return any(p.is_file() for folder in ("images", "crops") for p in (root / folder).rglob("*"))


def init_marker(root: Path, secret: bytes) -> "Keys":
    """Mark ``root`` as encrypted with ``secret`` (its salt and key check); refuses a directory holding data."""
    from device.store.atomic import write_atomic

    root = Path(root).resolve()
    if (root / MARKER).exists():
        raise AtRestError(f"{root} is already encrypted")
    if _holds_data(root):
        raise AtRestError(f"{root} holds unencrypted records or images: encryption at rest can only be switched "
                          f"on for a new, empty data directory")
    keys = Keys(secret, os.urandom(16))
    marker = {"format": FORMAT, "database": "sqlcipher4 raw key", "files": "aes-256-gcm",
              "kdf": "hkdf-sha256", "salt": keys.salt.hex(), "key_check": keys.check}
    write_atomic(root / MARKER, json.dumps(marker, indent=1).encode() + b"\n", mode=0o600)
    _keys.pop(root, None)
    return keys


def is_encrypted(root: Path) -> bool:
    return (Path(root) / MARKER).is_file()


def keys_for(root: Path) -> Keys | None:
    """The keys of data directory ``root``, or None when it is not encrypted; AtRestError for a wrong key.

    With ``storage.encrypt_at_rest`` on, a directory without data is made encrypted here (first use); one
    that already holds unencrypted data is refused rather than silently left in the clear.
    """
    root = Path(root).resolve()
    if root in _keys:
        return _keys[root]
    marker = root / MARKER
    if marker.is_file():
        try:
            info = json.loads(marker.read_text())
            salt, check = bytes.fromhex(info["salt"]), info["key_check"]
            if info.get("format") != FORMAT:
                raise ValueError
        except (OSError, ValueError, KeyError, TypeError):
            raise AtRestError(f"{marker}: damaged or of an unknown format") from None
        keys = Keys(read_secret(), salt)
        if not hmac.compare_digest(keys.check, str(check)):
            raise AtRestError(f"{root}: the at-rest key does not open this data directory (wrong key file or "
                              f"credential)")
    elif options().encrypt:
        if _holds_data(root):
            raise AtRestError(f"storage.encrypt_at_rest is on but {root} holds unencrypted data: switch it off, "
                              f"or start from an empty data directory")
        keys = init_marker(root, read_secret())
    else:
        keys = None
    _keys[root] = keys
    return keys


def key_fingerprint(secret: bytes) -> str:
    """A short, non-secret name of a key (to tell key files apart)."""
    return hashlib.sha256(b"allscope key id:" + secret.strip()).hexdigest()[:16]


# --- the database --------------------------------------------------------------------------------------------
def _sqlcipher():
    try:
        from sqlcipher3 import dbapi2
    except ImportError:
        raise AtRestError("encryption at rest needs the sqlcipher3 module: pip install sqlcipher3-binary (x86_64) "
                          "or sqlcipher3-wheels (aarch64)") from None
    return dbapi2


def database_for(path: Path, pragmas: dict) -> pw.SqliteDatabase:
    """The peewee database for ``path`` (in its data directory): SQLCipher when that directory is encrypted.

    Transactions begin IMMEDIATE (the write lock at BEGIN, waiting up to busy_timeout): in WAL mode a
    deferred transaction that reads and then writes fails at once with "database is locked" when another
    connection commits in between (the sync agent against the device service, or two web threads).
    """
    keys = keys_for(Path(path).parent)
    if keys is None:
        return pw.SqliteDatabase(str(path), pragmas=pragmas, lock_type="IMMEDIATE")
    _sqlcipher()
    from playhouse.sqlcipher_ext import SqlCipherDatabase

    database = SqlCipherDatabase(str(path), passphrase=keys.sqlcipher_key, pragmas=pragmas, lock_type="IMMEDIATE")
    try:
        database.connect()
        database.execute_sql("SELECT count(*) FROM sqlite_master")
    except pw.DatabaseError:
        raise AtRestError(f"{path}: cannot be opened with the at-rest key (wrong key, or not an encrypted "
                          f"database)") from None
    finally:
        if not database.is_closed():
            database.close()
    return database


def connect(path: Path, root: Path | None = None, timeout: float = 10.0):
    """A DB-API connection to ``path``, keyed when data directory ``root`` (default: its folder) is encrypted."""
    keys = keys_for(Path(root) if root is not None else Path(path).parent)
    if keys is None:
        import sqlite3

        return sqlite3.connect(str(path), timeout=timeout)
    connection = _sqlcipher().connect(str(path), timeout=timeout)
    connection.execute(f"PRAGMA key = \"{keys.sqlcipher_key}\"")
    return connection
