"""Envelopes (v1, and v2 for batches): what a device sends to the central server, sealed end to end on top of TLS.

The broker relays envelopes but cannot read them (encrypted to the central's
X25519 key) nor forge or alter them (signed with the device's own Ed25519 key,
which never leaves the device). Wire format: one UTF-8 JSON object::

    format  "allscope-envelope"     v        1 (record, chunk, hello) or 2 (batch)
    kind    record | chunk | hello | batch   device   device id (the TLS certificate's CN)
    record  "patient:12", "file:<sha256>", "hello"
    version per-record sync version entry    device outbox id (0 for hello)
    created ISO 8601 UTC            content_sha256  hex SHA-256 of the plaintext
    enc     "x25519-hkdf-sha256-aes256gcm" | "none" (bench only)
    epk     base64 ephemeral X25519 public key ("" when none)
    nonce   base64 12-byte AES-GCM nonce ("" when none)
    ct      base64 ciphertext (the plaintext itself when none)
    extra   object (chunk: index/count/size/name; hello: signing_key and, since the
            key is bound to enrolment, proof: see sync/wire/keyproof.py; batch: the
            items, see sync/wire/batch.py)
    sig     base64 Ed25519 signature

Key: a fresh ephemeral X25519 key per envelope; ECDH with the central's key;
HKDF-SHA256 (salt = epk || central public key, info "allscope-envelope-v1")
gives the AES-256-GCM key. The associated data is the canonical JSON of every
field but ``ct`` and ``sig``, so device, record, version, entry and time are
bound to the ciphertext; the signature covers canonical JSON of every field but
``sig`` (ciphertext included). Receivers: :func:`parse` (strict), then
:func:`verify` with the pinned device key, and only then :func:`decrypt`.

Version 2 adds one kind, "batch": several outbox entries in one envelope (one key
exchange, one signature, one MQTT message and one ack for all of them), with the
same fields and rules; every other kind stays version 1, so a receiver of this
version reads what older devices send, and a device falls back to single-record
envelopes when an older central answers "unsupported_version" (sync/agent/batches.py).

Note that ``content_sha256`` (and a file's hash in its ``record``) travels in
clear: it lets the central deduplicate before decrypting, and lets anyone who
can read the broker confirm a guess of a whole plaintext, never read one.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from device.errors import AllscopeError
from sync.wire.keys import raw_public
from sync.wire.topics import DEVICE_ID_RE

FORMAT = "allscope-envelope"
VERSION = 1
BATCH_VERSION = 2
KIND_VERSIONS = {"record": 1, "chunk": 1, "hello": 1, "batch": 2}  # the envelope version each kind is sent as
KINDS = tuple(KIND_VERSIONS)
ENC_AEAD = "x25519-hkdf-sha256-aes256gcm"
ENC_NONE = "none"
ENCS = (ENC_AEAD, ENC_NONE)
HKDF_INFO = b"allscope-envelope-v1"
HELLO_RECORD = "hello"
MAX_ENVELOPE_BYTES = 4 * 1024 * 1024  # well above any chunk or record; bounds memory on hostile input
HEADER_ALLOWANCE = 1024  # bytes of JSON around ct, extra excluded (see max_plaintext_bytes)
KEYS = frozenset(("format", "v", "kind", "device", "record", "version", "entry", "created", "content_sha256",
                  "enc", "epk", "nonce", "ct", "extra", "sig"))

# Reasons (also used by the central's IngestError counters).
MALFORMED = "malformed"
UNSUPPORTED_VERSION = "unsupported_version"
BAD_SIGNATURE = "bad_signature"
DECRYPT_FAILED = "decrypt_failed"
HASH_MISMATCH = "hash_mismatch"
PLAINTEXT_REFUSED = "plaintext_refused"

_RECORD_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}(:[A-Za-z0-9_.-]{1,128})?$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_MAX_INT = 2 ** 63 - 1


class EnvelopeError(AllscopeError):
    """An envelope that must be refused; ``reason`` is a short code, str() one line."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(" ".join(message.split()))


@dataclass(frozen=True)
class Envelope:
    """A parsed envelope. ``fields`` is the header exactly as on the wire (strings, not bytes)."""

    fields: dict
    epk: bytes
    nonce: bytes
    ct: bytes
    sig: bytes

    kind = property(lambda self: self.fields["kind"])
    device = property(lambda self: self.fields["device"])
    record = property(lambda self: self.fields["record"])
    version = property(lambda self: self.fields["version"])
    entry = property(lambda self: self.fields["entry"])
    created = property(lambda self: self.fields["created"])
    content_sha256 = property(lambda self: self.fields["content_sha256"])
    enc = property(lambda self: self.fields["enc"])
    extra = property(lambda self: self.fields["extra"])

    @property
    def encrypted(self) -> bool:
        return self.enc != ENC_NONE

    @property
    def entity(self) -> str:
        """``"patient"`` of ``"patient:12"``, ``"file"`` of ``"file:<sha256>"``."""
        return self.record.partition(":")[0]

    @property
    def record_key(self) -> str:
        """``"12"`` of ``"patient:12"``, the hash of ``"file:<sha256>"``; "" when the record has no key."""
        return self.record.partition(":")[2]


# --- helpers ---------------------------------------------------------------------------------------------

def canonical(obj: Any) -> bytes:
    """The one JSON form that is signed and used as associated data: sorted keys, no spaces, ASCII."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def record_name(entity: str, key: object) -> str:
    return f"{entity}:{key}"


def utc_timestamp(when: dt.datetime | None = None) -> str:
    """ISO 8601 UTC with milliseconds and a Z, as the outbox triggers write them."""
    when = (when or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(name: str, text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise EnvelopeError(MALFORMED, f"envelope field {name!r} is not base64") from None


def _aad(fields: dict) -> bytes:
    return canonical({k: v for k, v in fields.items() if k not in ("ct", "sig")})


def _signed_part(fields: dict) -> bytes:
    return canonical({k: v for k, v in fields.items() if k != "sig"})


def _derive_key(shared: bytes, epk: bytes, server_public_raw: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=epk + server_public_raw, info=HKDF_INFO).derive(shared)


def max_plaintext_bytes(max_message_bytes: int, extra: dict | None = None) -> int:
    """The largest plaintext whose envelope stays within ``max_message_bytes`` (for chunking files).

    Conservative: assumes the longest device id and record the format allows and
    20-digit versions and entries; pass the largest ``extra`` that will be used.
    """
    overhead = HEADER_ALLOWANCE + len(canonical(extra or {}))
    plaintext = (max_message_bytes - overhead) // 4 * 3 - 16  # base64 expands 3 -> 4; GCM adds a 16-byte tag
    if plaintext < 1024:
        raise ValueError(f"max_message_bytes {max_message_bytes} is too small for an envelope (use at least 4096)")
    return plaintext


# --- sealing ---------------------------------------------------------------------------------------------

def seal(plaintext: bytes, *, kind: str, device_id: str, record: str, version: int, entry: int, created: str,
         signing_key: Ed25519PrivateKey, server_public: X25519PublicKey | None, extra: dict | None = None) -> bytes:
    """Encrypt to ``server_public`` (or not, when None: the bench's plaintext mode), sign, and serialise."""
    fields = {
        "format": FORMAT, "v": KIND_VERSIONS.get(kind, VERSION), "kind": kind, "device": device_id, "record": record,
        "version": version,
        "entry": entry, "created": created, "content_sha256": hashlib.sha256(plaintext).hexdigest(),
        "extra": dict(extra or {}),
    }
    if server_public is None:
        fields.update(enc=ENC_NONE, epk="", nonce="")
    else:
        ephemeral = X25519PrivateKey.generate()
        epk, nonce = raw_public(ephemeral), os.urandom(12)
        key = _derive_key(ephemeral.exchange(server_public), epk, raw_public(server_public))
        fields.update(enc=ENC_AEAD, epk=_b64(epk), nonce=_b64(nonce))
    _check_header(fields)  # refuse to produce what a receiver would refuse
    ct = plaintext if server_public is None else AESGCM(key).encrypt(nonce, plaintext, _aad(fields))
    fields["ct"] = _b64(ct)
    fields["sig"] = _b64(signing_key.sign(_signed_part(fields)))
    data = canonical(fields)
    if len(data) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError(MALFORMED, f"envelope of {len(data)} bytes exceeds the {MAX_ENVELOPE_BYTES}-byte limit")
    return data


def make_hello(*, device_id: str, signing_key: Ed25519PrivateKey, server_public: X25519PublicKey | None,
               created: str | None = None, info: dict | None = None, proof: dict | None = None) -> bytes:
    """The first envelope of a connection: announces the device's signing key (self-signed).

    The key travels in ``extra`` (signed, not encrypted) so the central can
    check the signature before decrypting anything; ``info`` (software version,
    backlog, ...) is the encrypted plaintext. ``proof`` (``sync.wire.keyproof.make_proof``)
    binds the key to the device's enrolment certificate; the central pins no key without it
    unless an admin registered the key's fingerprint.
    """
    extra = {"signing_key": _b64(raw_public(signing_key))}
    if proof is not None:
        extra["proof"] = proof
    return seal(canonical(info or {}), kind="hello", device_id=device_id, record=HELLO_RECORD, version=1, entry=0,
                created=created or utc_timestamp(), signing_key=signing_key, server_public=server_public,
                extra=extra)


def hello_key(envelope: Envelope) -> Ed25519PublicKey:
    """The signing key a hello announces (verify the hello with it before pinning it)."""
    if envelope.kind != "hello":
        raise EnvelopeError(MALFORMED, f"envelope of kind {envelope.kind!r} is not a hello")
    text = envelope.extra.get("signing_key")
    if not isinstance(text, str):
        raise EnvelopeError(MALFORMED, "hello envelope without a signing_key")
    raw = _unb64("extra.signing_key", text)
    if len(raw) != 32:
        raise EnvelopeError(MALFORMED, "hello signing_key is not a 32-byte Ed25519 key")
    return Ed25519PublicKey.from_public_bytes(raw)


# --- receiving -------------------------------------------------------------------------------------------

def _no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise EnvelopeError(MALFORMED, f"envelope has the key {key[:40]!r} twice")
        seen[key] = value
    return seen


def _refuse_constant(name):
    raise EnvelopeError(MALFORMED, f"envelope holds the non-JSON number {name}")


def _finite_float(text: str) -> float:
    """A JSON number such as 1e400 parses to inf, which canonical() cannot sign: refuse it here, as malformed."""
    value = float(text)
    if not math.isfinite(value):
        raise EnvelopeError(MALFORMED, f"envelope holds the out-of-range number {text[:20]}")
    return value


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_INT


def _check_header(fields: dict) -> None:
    """Types and shapes of every field except ct and sig (shared by seal and parse)."""
    def bad(message):
        raise EnvelopeError(MALFORMED, message)

    if fields["kind"] not in KINDS:
        bad(f"unknown envelope kind {str(fields['kind'])[:20]!r}")
    if not isinstance(fields["device"], str) or not DEVICE_ID_RE.match(fields["device"]):
        bad("envelope device is not a valid device id")
    if not isinstance(fields["record"], str) or not _RECORD_RE.match(fields["record"]):
        bad("envelope record is not of the form entity:key")
    for name in ("version", "entry"):
        if not _is_int(fields[name]):
            bad(f"envelope {name} is not a non-negative integer")
    created = fields["created"]
    try:
        if not isinstance(created, str) or len(created) > 40 or dt.datetime.fromisoformat(created).tzinfo is None:
            raise ValueError
    except ValueError:
        bad("envelope created is not an ISO 8601 time with a time zone")
    if not isinstance(fields["content_sha256"], str) or not _SHA256_RE.match(fields["content_sha256"]):
        bad("envelope content_sha256 is not 64 lower-case hex digits")
    if not isinstance(fields["extra"], dict):
        bad("envelope extra is not an object")
    for name in ("epk", "nonce"):
        if not isinstance(fields[name], str):
            bad(f"envelope {name} is not a string")


def parse(data: bytes, max_bytes: int = MAX_ENVELOPE_BYTES) -> Envelope:
    """Strictly parse an envelope; raises EnvelopeError ("malformed" / "unsupported_version")."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EnvelopeError(MALFORMED, "envelope is not bytes")
    if len(data) > max_bytes:
        raise EnvelopeError(MALFORMED, f"envelope of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    try:
        fields = json.loads(bytes(data).decode("utf-8"), object_pairs_hook=_no_duplicates,
                            parse_constant=_refuse_constant, parse_float=_finite_float)
    except EnvelopeError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise EnvelopeError(MALFORMED, "envelope is not UTF-8 JSON") from None
    if not isinstance(fields, dict):
        raise EnvelopeError(MALFORMED, "envelope is not a JSON object")
    if fields.get("format") != FORMAT:
        raise EnvelopeError(MALFORMED, "not an allscope envelope (format)")
    if fields.get("v") not in (VERSION, BATCH_VERSION) or isinstance(fields.get("v"), bool):
        raise EnvelopeError(UNSUPPORTED_VERSION, f"envelope version {str(fields.get('v'))[:20]} is not supported "
                                                 f"(this software reads versions {VERSION} and {BATCH_VERSION})")
    if set(fields) != KEYS:
        missing, unknown = sorted(KEYS - set(fields)), sorted(set(fields) - KEYS)
        detail = "; ".join(part for part in (missing and f"missing {', '.join(missing)}",
                                             unknown and f"unknown {', '.join(k[:40] for k in unknown[:5])}") if part)
        raise EnvelopeError(MALFORMED, f"envelope fields do not match version {fields['v']}: {detail}")
    if fields["enc"] not in ENCS:
        raise EnvelopeError(UNSUPPORTED_VERSION, f"envelope encryption {str(fields['enc'])[:40]!r} is not supported")
    _check_header(fields)
    if fields["v"] != KIND_VERSIONS[fields["kind"]]:
        raise EnvelopeError(MALFORMED, f"a {fields['kind']} envelope must be version {KIND_VERSIONS[fields['kind']]}")
    for name in ("ct", "sig"):
        if not isinstance(fields[name], str):
            raise EnvelopeError(MALFORMED, f"envelope {name} is not a string")
    epk, nonce = _unb64("epk", fields["epk"]), _unb64("nonce", fields["nonce"])
    ct, sig = _unb64("ct", fields["ct"]), _unb64("sig", fields["sig"])
    if fields["enc"] == ENC_NONE:
        if epk or nonce:
            raise EnvelopeError(MALFORMED, "unencrypted envelope with an epk or nonce")
    elif len(epk) != 32 or len(nonce) != 12 or len(ct) < 16:
        raise EnvelopeError(MALFORMED, "encrypted envelope needs a 32-byte epk, a 12-byte nonce and a tag")
    if len(sig) != 64:
        raise EnvelopeError(MALFORMED, "envelope signature is not 64 bytes")
    return Envelope(fields=fields, epk=epk, nonce=nonce, ct=ct, sig=sig)


def verify(envelope: Envelope, device_public_key: Ed25519PublicKey) -> None:
    """Check the device's signature over every field; raises EnvelopeError("bad_signature")."""
    try:
        device_public_key.verify(envelope.sig, _signed_part(envelope.fields))
    except InvalidSignature:
        raise EnvelopeError(BAD_SIGNATURE, f"envelope {envelope.record} from {envelope.device}: "
                                           f"signature does not match the device's key") from None


def decrypt(envelope: Envelope, server_private: X25519PrivateKey | None, *,
            require_encryption: bool = False) -> bytes:
    """The plaintext, after checking it against content_sha256. Call :func:`verify` first.

    An unencrypted ("none") envelope is returned as is unless ``require_encryption``
    (reason "plaintext_refused"); refusing it otherwise is the caller's policy.
    """
    where = f"envelope {envelope.record} from {envelope.device}"
    if envelope.enc == ENC_NONE:
        if require_encryption:
            raise EnvelopeError(PLAINTEXT_REFUSED, f"{where} is not encrypted")
        plaintext = envelope.ct
    else:
        if server_private is None:
            raise EnvelopeError(DECRYPT_FAILED, f"{where} is encrypted and no server key was given")
        try:
            shared = server_private.exchange(X25519PublicKey.from_public_bytes(envelope.epk))
            key = _derive_key(shared, envelope.epk, raw_public(server_private))
            plaintext = AESGCM(key).decrypt(envelope.nonce, envelope.ct, _aad(envelope.fields))
        except (InvalidTag, ValueError):
            raise EnvelopeError(DECRYPT_FAILED, f"{where}: cannot decrypt it (not for this server's key, or "
                                                f"altered)") from None
    if hashlib.sha256(plaintext).hexdigest() != envelope.content_sha256:
        raise EnvelopeError(HASH_MISMATCH, f"{where}: content does not match its content_sha256")
    return plaintext
