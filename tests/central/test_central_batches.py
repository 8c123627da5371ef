"""Batch envelopes (envelope v2, sync/wire/batch.py) at the central, on SQLite and on PostgreSQL.

A batch is stored in one transaction with one ack item per entry; each entry is stored
exactly once whatever arrives twice (a resent batch, a single envelope of an entry already
batched, the same version twice in one batch); an item that fails its own checks is
rejected alone; a batch the central cannot read is rejected for every entry it lists.
Older single-record envelopes are still accepted next to batches.
"""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_central_ingest import CREATED, DEVICE, fleet, greeted  # noqa: F401  (fixtures)

from sync.central.models import ReceivedRecord
from sync.wire import batch, envelope


def _patient(record_id: int, version: int = 1, **extra) -> bytes:
    return json.dumps({"id": record_id, "version": version, "identifier": f"P-{record_id:04d}", **extra}).encode()


def _seal(central, entries, key=None, server_public="default") -> bytes:
    public = central.server.public_key() if server_public == "default" else server_public
    return batch.seal_batch(entries, device_id=DEVICE, signing_key=key or central.device_key, server_public=public)


def _stored() -> dict:
    return {(r.entity, r.record_id, r.version): r.content_sha256 for r in ReceivedRecord.select()}


def test_a_batch_is_stored_with_one_ack_item_per_entry_and_a_resend_is_duplicate(greeted):  # noqa: F811
    entries = [(10 + i, f"patient:{i}", 1, CREATED, _patient(i, name=f"N{i}")) for i in range(1, 41)]
    entries.append((51, "patient:3", 2, CREATED, _patient(3, version=2, name="amended")))
    acks = greeted.ingestor.handle(DEVICE, _seal(greeted, entries))
    assert [(a["entry"], a["record"], a["version"], a["status"]) for a in acks] == \
        [(e, r, v, "stored") for e, r, v, _, _ in entries]
    stored = _stored()
    assert len(stored) == 41 and ReceivedRecord.select().count() == 41
    assert stored[("patient", 3, 2)] == batch.item_of(entry=51, record="patient:3", version=2, created=CREATED,
                                                        plaintext=entries[-1][4])["sha256"]
    assert ReceivedRecord.get(record_id=7).payload["name"] == "N7"

    again = greeted.ingestor.handle(DEVICE, _seal(greeted, entries[:5] + [(99, "patient:77", 1, CREATED,
                                                                            _patient(77))]))
    assert [a["status"] for a in again] == ["duplicate"] * 5 + ["stored"]
    single = greeted.send(greeted.seal(entries[0][4], record="patient:1"))  # a v1 envelope of the same version
    assert single["status"] == "duplicate"
    assert ReceivedRecord.select().count() == 42 and greeted.errors() == {}


def test_the_same_version_twice_in_one_batch_is_stored_once(greeted):  # noqa: F811
    body = _patient(5)
    acks = greeted.ingestor.handle(DEVICE, _seal(greeted, [(1, "patient:5", 1, CREATED, body),
                                                           (2, "patient:5", 1, CREATED, body)]))
    assert [a["status"] for a in acks] == ["stored", "duplicate"]
    assert ReceivedRecord.select().count() == 1


def test_a_bad_item_is_rejected_alone_and_a_replay_conflict_is_refused(greeted):  # noqa: F811
    greeted.send(greeted.record(record_id=8))  # version 1 of patient 8, stored singly
    entries = [(1, "patient:1", 1, CREATED, _patient(1)),
               (2, "patient:2", 1, CREATED, b"not json"),
               (3, "patient:3", 1, CREATED, _patient(4)),          # payload id differs from the record
               (4, "invoice:4", 1, CREATED, b"{}"),
               (5, "patient:8", 1, CREATED, _patient(8, name="other content")),
               (6, "patient:6", 1, CREATED, _patient(6))]
    acks = greeted.ingestor.handle(DEVICE, _seal(greeted, entries))
    assert [(a["entry"], a["status"], a["reason"]) for a in acks] == [
        (1, "stored", ""), (2, "rejected", "malformed"), (3, "rejected", "malformed"), (4, "rejected", "malformed"),
        (5, "rejected", "replay_conflict"), (6, "stored", "")]
    assert sorted(_stored()) == [("patient", 1, 1), ("patient", 6, 1), ("patient", 8, 1)]
    assert greeted.errors() == {"malformed": 3, "replay_conflict": 1}


def test_an_unreadable_batch_is_rejected_for_every_entry_it_lists(greeted):  # noqa: F811
    entries = [(1, "patient:1", 1, CREATED, _patient(1)), (2, "patient:2", 1, CREATED, _patient(2))]
    forged = _seal(greeted, entries, key=Ed25519PrivateKey.generate())
    assert [(a["entry"], a["record"], a["reason"]) for a in greeted.ingestor.handle(DEVICE, forged)] == \
        [(1, "patient:1", "bad_signature"), (2, "patient:2", "bad_signature")]
    clear = _seal(greeted, entries, server_public=None)
    assert {a["reason"] for a in greeted.ingestor.handle(DEVICE, clear)} == {"plaintext_refused"}
    # Items that do not match the header: refused as malformed before anything is decrypted.
    fields = json.loads(_seal(greeted, entries))
    fields["version"] = 3
    acks = greeted.ingestor.handle(DEVICE, envelope.canonical(fields))
    assert [(a["record"], a["reason"]) for a in acks] == [("batch", "malformed")]
    assert ReceivedRecord.select().count() == 0


def test_batch_envelopes_parse_only_as_version_2_and_are_bound_to_their_items(greeted):  # noqa: F811
    entries = [(1, "patient:1", 1, CREATED, _patient(1)), (2, "patient:2", 1, CREATED, _patient(2))]
    data = _seal(greeted, entries)
    parsed = envelope.parse(data)
    assert (parsed.fields["v"], parsed.kind, parsed.record, parsed.version, parsed.entry) == (2, "batch", "batch",
                                                                                              2, 1)
    assert [item["record"] for item in batch.items(parsed)] == ["patient:1", "patient:2"]
    as_v1 = dict(json.loads(data), v=1)
    with pytest.raises(envelope.EnvelopeError, match="must be version 2"):
        envelope.parse(envelope.canonical(as_v1))
    record_v2 = dict(json.loads(greeted.record()), v=2)
    with pytest.raises(envelope.EnvelopeError, match="must be version 1"):
        envelope.parse(envelope.canonical(record_v2))
    # An item swapped in transit breaks the signature (extra is signed), so nothing is stored.
    moved = json.loads(data)
    moved["extra"]["items"][0]["record"] = "patient:9"
    acks = greeted.ingestor.handle(DEVICE, envelope.canonical(moved))
    assert {a["reason"] for a in acks} == {"bad_signature"} and ReceivedRecord.select().count() == 0
