"""Grouping outbox entries into batch envelopes (``sync/wire/batch.py``), and falling back for an older central.

The agent collects the entries one pump pass may send, in outbox order, and
:meth:`Batcher.groups` cuts them into groups of at most ``limit`` entries whose
envelope stays within ``max_message_bytes`` (by a conservative estimate, checked
again after sealing). A group of one goes as an ordinary single-record envelope
(version 1), so a device that sends a record now and then speaks exactly as before.

A central older than batches refuses a version-2 envelope with "unsupported_version"
in an ack for the record "batch": :meth:`Batcher.refused` then turns batching off
for the life of the process and hands back the batch's entries, to be offered
again at once as single envelopes. Nothing is lost either way: an entry leaves the
outbox only on the central's signed ack of that entry.
"""

from __future__ import annotations

import logging

from sync.wire import batch as batch_mod
from sync.wire import envelope as env_mod

log = logging.getLogger("allscope.sync")


class Batcher:
    def __init__(self, *, limit: int, max_message_bytes: int):
        self.limit = limit
        self.max_message_bytes = max_message_bytes
        self.enabled = limit > 1
        self.members: dict[int, list[int]] = {}   # first entry id of a batch in flight -> its entry ids

    def groups(self, entries: list) -> list[list]:
        """``entries`` (outbox order) cut into groups to send as one envelope each, order kept."""
        if not self.enabled:
            return [[entry] for entry in entries]
        groups, current, payload = [], [], 0
        for entry in entries:
            size = len(entry.plaintext)
            if current and (len(current) >= self.limit or batch_mod.sealed_size_estimate(
                    payload + size, len(current) + 1) > self.max_message_bytes):
                groups.append(current)
                current, payload = [], 0
            current.append(entry)
            payload += size
        if current:
            groups.append(current)
        return groups

    def seal(self, group: list, sealer) -> bytes | None:
        """The batch envelope of ``group`` (two or more entries) sealed by ``sealer`` (the agent's
        ``sync.agent.sealer.Sealer``), or None when it would not fit (then each goes singly)."""
        try:
            data = batch_mod.seal_batch(((e.id, e.record, e.version, e.created_at, e.plaintext) for e in group),
                                        device_id=sealer.device_id, signing_key=sealer.signing_key,
                                        server_public=sealer.server_public)
        except env_mod.EnvelopeError:
            return None
        if len(data) > self.max_message_bytes:
            return None
        self.members[group[0].id] = [entry.id for entry in group]
        return data

    def acked(self, entry_id: int) -> None:
        """An entry was acknowledged on its own: the batch it opened needs no more tracking."""
        self.members.pop(entry_id, None)

    def refused(self, item: dict) -> list[int]:
        """An ack item for the record "batch" (the central could not read the batch at all): the entries to
        offer again. "unsupported_version" (an older central) turns batching off from now on."""
        if item.get("reason") == env_mod.UNSUPPORTED_VERSION and self.enabled:
            self.enabled = False
            log.warning("the central does not read batch envelopes (an older version): sending records one "
                        "envelope each from now on")
        return self.members.pop(item.get("entry"), [])

    def forget(self) -> None:
        """A new session: nothing is in flight any more."""
        self.members.clear()
