"""The agent's send window without the thread or the network: what is in flight, what is due again, what goes next.

Every decision takes ``now`` (a monotonic time), so it is tested with a fake clock
(``tests/sync_device/test_send_window.py``); ``sync/agent/service.py`` calls these between
network loop passes and does the publishing.

Records are offered in outbox order from ``cursor``; a record not acknowledged within
``ack_timeout`` (lost on the way, or its ack was) is offered again by moving the cursor back;
a record the central rejected waits until its ``retry_after`` time. File chunks have their own,
smaller window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TRANSIENT_REASONS = ("no_key", "internal_error")  # rejections worth retrying soon (central restarting, hello racing)


@dataclass
class SendWindow:
    size: int                     # records in flight at most
    chunk_size: int               # file chunks in flight at most
    ack_timeout: float            # seconds without an ack before a record or chunk goes again
    retry_rejected: float         # seconds a record the central rejected (not transiently) waits
    inflight: dict[int, float] = field(default_factory=dict)                # outbox id -> time sent
    chunks: dict[tuple[str, int], float] = field(default_factory=dict)      # (sha256, index) -> time sent
    retry_after: dict[int, float] = field(default_factory=dict)             # rejected outbox id -> time to offer
    cursor: int = 0               # highest outbox id offered in this pass

    def expire(self, now: float) -> None:
        """Forget what waited too long for an ack, and release rejected records whose wait is over."""
        for entry_id, sent in list(self.inflight.items()):
            if now - sent >= self.ack_timeout:
                del self.inflight[entry_id]
                self.rewind(entry_id)
        for key, sent in list(self.chunks.items()):
            if now - sent >= self.ack_timeout:
                del self.chunks[key]
        for entry_id, when in list(self.retry_after.items()):
            if now >= when:
                del self.retry_after[entry_id]
                self.rewind(entry_id)

    def free(self) -> int:
        return self.size - len(self.inflight)

    def may_offer(self, entry_id: int) -> bool:
        return entry_id not in self.inflight and entry_id not in self.retry_after

    def offered(self, entry_id: int, now: float) -> None:
        self.inflight[entry_id] = now

    def passed(self, entry_id: int) -> None:
        """The pass over the outbox has reached ``entry_id`` (offered or skipped)."""
        self.cursor = entry_id

    def still_sending(self, key, now: float) -> None:
        """A record (key: outbox id) or chunk (key: (sha256, index)) not yet taken by the broker: restart its
        ack timeout (it is still in the send queue; sending it again would only queue a second copy)."""
        if key in self.inflight:
            self.inflight[key] = now
        elif key in self.chunks:
            self.chunks[key] = now

    def release(self, entry_id: int) -> None:
        """Offer ``entry_id`` again now (no longer in flight, the pass goes back to it)."""
        self.inflight.pop(entry_id, None)
        self.retry_after.pop(entry_id, None)
        self.rewind(entry_id)

    def rewind(self, entry_id: int) -> None:
        self.cursor = min(self.cursor, entry_id - 1)

    def requeue_all(self) -> None:
        """A new session: nothing is in flight any more, the pass starts over (rejections keep their wait)."""
        self.inflight.clear()
        self.chunks.clear()
        self.cursor = 0

    def record_acked(self, entry_id: int, done: bool, reason: str | None, now: float) -> None:
        """The central stored (``done``) or rejected a record; a rejected one waits before it is offered again."""
        self.inflight.pop(entry_id, None)
        if done:
            self.retry_after.pop(entry_id, None)
        else:
            wait = self.ack_timeout if reason in TRANSIENT_REASONS else self.retry_rejected
            self.retry_after[entry_id] = now + wait

    def idle(self) -> bool:
        return not self.inflight

    def chunk_room(self) -> bool:
        return len(self.chunks) < self.chunk_size

    def chunk_in_flight(self, key: tuple[str, int]) -> bool:
        return key in self.chunks

    def chunk_sent(self, key: tuple[str, int], now: float) -> None:
        """Sent, or refused by the central: either way it is offered again after ``ack_timeout``."""
        self.chunks[key] = now

    def chunk_acked(self, key: tuple[str, int]) -> None:
        self.chunks.pop(key, None)


def due(now: float, last: float, interval: float) -> bool:
    """Is a periodic message (status, hello) due again?"""
    return now - last >= interval
