"""Signed acknowledgements: the central's word that it stored (or refused) an envelope.

An outbox entry leaves the device only on such an ack, never on the broker's
PUBACK, and only when the central's Ed25519 signature verifies with the key
from the enrolment bundle: a broker (or anyone able to publish on the ack
topic) cannot make a device drop records. Wire format, UTF-8 JSON::

    {"format": "allscope-ack", "v": 1, "device": "<id>", "created": "<ISO 8601 UTC>",
     "acks": [{"entry": 7, "record": "patient:3", "version": 2, "status": "stored", "reason": ""}, ...],
     "sig": "<base64 Ed25519 over the canonical JSON of every other field>"}

``status``: "stored" or "duplicate" (the entry may go), "rejected" (it stays,
with ``reason`` as its last error). Acks of file chunks also carry the chunk's
``index``. Items may carry further keys; they are signed like the rest.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from device.errors import AllscopeError
from sync.wire.envelope import Envelope, canonical, utc_timestamp
from sync.wire.topics import DEVICE_ID_RE

FORMAT = "allscope-ack"
VERSION = 1
STATUSES = ("stored", "duplicate", "rejected")
DONE = ("stored", "duplicate")  # the central holds the version: the entry may leave the outbox
MAX_ACK_BYTES = 1024 * 1024
KEYS = frozenset(("format", "v", "device", "created", "acks", "sig"))
_ITEM_TYPES = {"entry": int, "record": str, "version": int, "status": str, "reason": str}


class AckError(AllscopeError):
    """An acknowledgement that must be ignored; ``reason``: malformed | bad_signature | device_mismatch."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(" ".join(message.split()))


@dataclass(frozen=True)
class Ack:
    device: str
    created: str
    acks: list[dict]


def ack_item(envelope: Envelope, status: str, reason: str = "") -> dict:
    """The ack of one parsed envelope (chunks carry their index so the device can tick it off)."""
    if status not in STATUSES:
        raise ValueError(f"ack status {status!r}: use one of {', '.join(STATUSES)}")
    item = {"entry": envelope.entry, "record": envelope.record, "version": envelope.version, "status": status,
            "reason": reason}
    if envelope.kind == "chunk" and isinstance(envelope.extra.get("index"), int):
        item["index"] = envelope.extra["index"]
    return item


def make_ack(*, device_id: str, acks: list[dict], signing_key: Ed25519PrivateKey, created: str | None = None) -> bytes:
    """Sign and serialise a batch of ack items for one device."""
    fields = {"format": FORMAT, "v": VERSION, "device": device_id, "created": created or utc_timestamp(),
              "acks": [dict(item) for item in acks]}
    _check_items(fields["acks"])
    fields["sig"] = base64.b64encode(signing_key.sign(canonical(fields))).decode("ascii")
    return canonical(fields)


def _check_items(items) -> None:
    if not isinstance(items, list):
        raise AckError("malformed", "ack field 'acks' is not a list")
    for item in items:
        if not isinstance(item, dict):
            raise AckError("malformed", "ack item is not an object")
        for key, kind in _ITEM_TYPES.items():
            value = item.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise AckError("malformed", f"ack item field {key!r} is missing or not a {kind.__name__}")
        if item["status"] not in STATUSES:
            raise AckError("malformed", f"ack item status {item['status'][:20]!r} is unknown")


def parse_ack(data: bytes, central_public: Ed25519PublicKey, *, device_id: str | None = None) -> Ack:
    """Parse and verify an ack; raises AckError. With ``device_id``, acks for another device are refused."""
    if len(data) > MAX_ACK_BYTES:
        raise AckError("malformed", f"ack of {len(data)} bytes exceeds the {MAX_ACK_BYTES}-byte limit")
    try:
        fields = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise AckError("malformed", "ack is not UTF-8 JSON") from None
    if not isinstance(fields, dict) or fields.get("format") != FORMAT or fields.get("v") != VERSION:
        raise AckError("malformed", "not an allscope ack of version 1")
    if set(fields) != KEYS:
        raise AckError("malformed", "ack fields do not match version 1")
    if not isinstance(fields["device"], str) or not DEVICE_ID_RE.match(fields["device"]):
        raise AckError("malformed", "ack device is not a valid device id")
    if not isinstance(fields["created"], str) or not isinstance(fields["sig"], str):
        raise AckError("malformed", "ack created or sig is not a string")
    _check_items(fields["acks"])
    try:
        sig = base64.b64decode(fields["sig"].encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise AckError("malformed", "ack signature is not base64") from None
    try:
        central_public.verify(sig, canonical({k: v for k, v in fields.items() if k != "sig"}))
    except InvalidSignature:
        raise AckError("bad_signature", "ack signature does not match the central server's key") from None
    except ValueError:  # e.g. a NaN smuggled into an item cannot be canonicalised: never signed by us
        raise AckError("malformed", "ack holds values that cannot be signed") from None
    if device_id is not None and fields["device"] != device_id:
        raise AckError("device_mismatch", f"ack for device {fields['device']}, not for {device_id}")
    return Ack(device=fields["device"], created=fields["created"], acks=fields["acks"])
