"""The agent's batches (sync/agent/batches.py): grouping, sealing, and the fall-back for a central without them.

Real parts: an enrolled device with its outbox filled by the triggers, the real sealer and
keys, acks signed with the PKI's central key. The agent is not connected: paho queues what
it publishes, which is all these tests need to see what goes out and what the window holds.
"""

from __future__ import annotations

from test_sync_agent import _ack, agent  # noqa: F401  (agent: a fixture)

from sync.agent.batches import Batcher
from sync.agent.outbox import OutboxEntry
from sync.wire import batch as batch_mod
from sync.wire import envelope as env_mod
from sync.wire import keys


def _entries() -> list:
    return list(OutboxEntry.select().order_by(OutboxEntry.id))


def test_groups_keep_outbox_order_within_the_count_and_size_limits(agent):  # noqa: F811
    entries = _entries()
    assert len(entries) >= 4
    by_count = Batcher(limit=3, max_message_bytes=256 * 1024).groups(entries)
    assert [e.id for group in by_count for e in group] == [e.id for e in entries]
    assert all(len(group) <= 3 for group in by_count) and len(by_count[0]) == 3
    largest = max(len(e.plaintext) for e in entries)
    tight = Batcher(limit=100, max_message_bytes=batch_mod.sealed_size_estimate(largest * 2, 2))
    for group in tight.groups(entries):
        assert batch_mod.sealed_size_estimate(sum(len(e.plaintext) for e in group), len(group)) \
            <= tight.max_message_bytes or len(group) == 1
    assert Batcher(limit=1, max_message_bytes=256 * 1024).groups(entries) == [[e] for e in entries]


def test_a_sealed_batch_carries_every_entry_and_opens_with_the_central_key(pki, agent):  # noqa: F811
    entries = _entries()
    batcher = Batcher(limit=100, max_message_bytes=256 * 1024)
    data = batcher.seal(entries, agent.sealer)
    assert data is not None and len(data) <= 256 * 1024
    parsed = env_mod.parse(data)
    env_mod.verify(parsed, agent.sealer.signing_key.public_key())
    plaintext = env_mod.decrypt(parsed, keys.load_x25519_private(pki.enc_key))
    listed = batch_mod.items(parsed)
    assert [(i["entry"], i["record"], i["version"]) for i in listed] == [(e.id, e.record, e.version) for e in entries]
    assert batch_mod.split(listed, plaintext) == [e.plaintext for e in entries]
    assert batcher.members == {entries[0].id: [e.id for e in entries]}
    too_small = Batcher(limit=100, max_message_bytes=len(data) - 1)
    assert too_small.seal(entries, agent.sealer) is None  # the caller then sends them one envelope each


def test_an_older_central_turns_batching_off_and_the_entries_go_again_singly(pki, agent):  # noqa: F811
    agent.hello_confirmed = True
    agent.pump()
    offered = set(agent.window.inflight)
    assert offered and agent.counts["batches"] >= 1
    first = min(agent.batcher.members)
    members = agent.batcher.members[first]
    # What a central that reads only version 1 answers (sync/central/ingest.py's _entry_of on a v2 envelope).
    refusal = {"entry": first, "record": "batch", "version": len(members), "status": "rejected",
               "reason": env_mod.UNSUPPORTED_VERSION}
    agent.handle_ack(_ack(pki, [refusal]))
    assert not agent.batcher.enabled
    assert not set(members) & set(agent.window.inflight) and not agent.window.retry_after
    assert OutboxEntry.select().count() == len(_entries()) and _entries()  # nothing left the outbox
    batches, sent = agent.counts["batches"], agent.counts["sent"]
    agent.pump()
    assert agent.counts["batches"] == batches and agent.counts["sent"] == sent + len(members)
    assert set(members) <= set(agent.window.inflight)


def test_a_batch_refused_for_another_reason_waits_like_a_rejected_record(pki, agent):  # noqa: F811
    agent.hello_confirmed = True
    agent.pump()
    first = min(agent.batcher.members)
    members = agent.batcher.members[first]
    refusal = {"entry": first, "record": "batch", "version": len(members), "status": "rejected",
               "reason": "malformed"}
    agent.handle_ack(_ack(pki, [refusal]))
    assert agent.batcher.enabled and set(members) <= set(agent.window.retry_after)
