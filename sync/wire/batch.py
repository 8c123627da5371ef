"""Batch envelopes (envelope version 2): several outbox entries sealed, signed and sent as one message.

At hundreds of records a second a record per envelope spends most of its time on
what every envelope costs whatever it carries: an X25519 exchange and an Ed25519
signature on each side, a signed ack, two MQTT messages and a commit at the
central. A batch pays that once for up to :data:`MAX_ITEMS` entries.

The envelope is an ordinary one (``sync/wire/envelope.py``) of kind ``"batch"`` and
version 2: ``record`` is ``"batch"``, ``entry`` the first item's outbox id,
``version`` the number of items, ``created`` the first item's time, and ``extra``::

    {"items": [{"entry": 7, "record": "patient:3", "version": 2, "created": "...Z",
                "sha256": "<hex of this item's payload>", "bytes": 1034}, ...]}

The plaintext is the items' payloads concatenated in that order. ``extra`` is
signed and bound to the ciphertext as associated data like every other header
field, so an item cannot be moved, dropped or re-sized without the envelope
failing; each item's hash is also checked against its slice of the plaintext
(:func:`split`), and it is what the central stores and deduplicates by, exactly
as for a single-record envelope. The central answers with one signed ack holding
one item per entry, the same items single envelopes get.
"""

from __future__ import annotations

import hashlib
import re

from sync.wire import envelope as env_mod
from sync.wire.envelope import EnvelopeError

KIND = "batch"
RECORD = "batch"
MAX_ITEMS = 1000
ITEM_KEYS = frozenset(("entry", "record", "version", "created", "sha256", "bytes"))
ITEM_ALLOWANCE = 260  # JSON bytes of one item in ``extra`` at most (long record names, 20-digit numbers)

_RECORD_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}:[0-9]{1,18}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def item_of(*, entry: int, record: str, version: int, created: str, plaintext: bytes) -> dict:
    return {"entry": entry, "record": record, "version": version, "created": created,
            "sha256": hashlib.sha256(plaintext).hexdigest(), "bytes": len(plaintext)}


def sealed_size_estimate(payload_bytes: int, items: int) -> int:
    """An upper bound of the envelope's size for ``items`` entries of ``payload_bytes`` bytes in all."""
    return env_mod.HEADER_ALLOWANCE + items * ITEM_ALLOWANCE + (payload_bytes + 16 + 2) // 3 * 4


def seal_batch(entries, *, device_id: str, signing_key, server_public) -> bytes:
    """``entries``: (entry id, record, version, created, plaintext) tuples, in outbox order (1 to MAX_ITEMS)."""
    entries = list(entries)
    if not 1 <= len(entries) <= MAX_ITEMS:
        raise ValueError(f"a batch holds 1 to {MAX_ITEMS} entries (got {len(entries)})")
    items = [item_of(entry=e, record=r, version=v, created=c, plaintext=p) for e, r, v, c, p in entries]
    plaintext = b"".join(p for *_, p in entries)
    return env_mod.seal(plaintext, kind=KIND, device_id=device_id, record=RECORD, version=len(items),
                        entry=items[0]["entry"], created=items[0]["created"], signing_key=signing_key,
                        server_public=server_public, extra={"items": items})


def items(envelope) -> list[dict]:
    """The checked items of a parsed batch envelope (before decrypting); raises EnvelopeError("malformed")."""
    def bad(message):
        raise EnvelopeError(env_mod.MALFORMED, f"batch envelope: {message}")

    listed = envelope.extra.get("items")
    if set(envelope.extra) != {"items"} or not isinstance(listed, list) or not 1 <= len(listed) <= MAX_ITEMS:
        bad(f"extra must be {{'items': [1 to {MAX_ITEMS} items]}}")
    if envelope.record != RECORD or envelope.version != len(listed):
        bad("record must be 'batch' and version the number of items")
    for item in listed:
        if not isinstance(item, dict) or set(item) != ITEM_KEYS:
            bad(f"each item has exactly the keys {', '.join(sorted(ITEM_KEYS))}")
        for name in ("entry", "version", "bytes"):
            value = item[name]
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2 ** 63:
                bad(f"item {name} is not a non-negative integer")
        if not isinstance(item["record"], str) or not _RECORD_RE.match(item["record"]):
            bad("item record is not of the form entity:number")
        if not isinstance(item["sha256"], str) or not _SHA256_RE.match(item["sha256"]):
            bad("item sha256 is not 64 lower-case hex digits")
        if not isinstance(item["created"], str) or len(item["created"]) > 40:
            bad("item created is not a time")
    if listed[0]["entry"] != envelope.entry:
        bad("entry must be the first item's")
    return listed


def split(listed: list[dict], plaintext: bytes) -> list[bytes]:
    """The items' payloads (``plaintext`` as :func:`sync.wire.envelope.decrypt` returned it); raises on a mismatch."""
    if sum(item["bytes"] for item in listed) != len(plaintext):
        raise EnvelopeError(env_mod.HASH_MISMATCH, "batch envelope: the items' sizes do not add up to the content")
    pieces, offset = [], 0
    for item in listed:
        piece = plaintext[offset:offset + item["bytes"]]
        offset += item["bytes"]
        pieces.append(piece)
    return pieces
