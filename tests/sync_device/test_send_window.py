"""The agent's send window with a fake clock: timeouts, rejections, the cursor and the chunk window."""

from __future__ import annotations

from sync.agent.window import SendWindow, due


def window(**changes) -> SendWindow:
    settings = {"size": 3, "chunk_size": 2, "ack_timeout": 60.0, "retry_rejected": 600.0} | changes
    return SendWindow(**settings)


def offer(w: SendWindow, ids, now: float) -> None:
    for entry_id in ids:
        assert w.may_offer(entry_id)
        w.offered(entry_id, now)
        w.passed(entry_id)


def test_the_window_fills_and_an_ack_frees_a_slot():
    w = window()
    offer(w, [1, 2, 3], now=0.0)
    assert w.free() == 0 and w.cursor == 3 and not w.may_offer(2)
    w.record_acked(2, done=True, reason=None, now=1.0)
    assert w.free() == 1 and w.may_offer(2) is True and w.cursor == 3  # done: never offered again by this pass


def test_an_unacked_record_goes_again_after_the_timeout_not_before():
    w = window()
    offer(w, [1, 2, 3], now=0.0)
    w.expire(59.9)
    assert w.free() == 0 and w.cursor == 3
    w.expire(60.0)
    assert w.idle() and w.cursor == 0  # the pass rewinds to before the oldest lost record


def test_only_the_late_records_expire_and_the_cursor_rewinds_to_the_oldest():
    w = window()
    offer(w, [1], now=0.0)
    offer(w, [2, 3], now=30.0)
    w.expire(61.0)
    assert sorted(w.inflight) == [2, 3] and w.cursor == 0
    w.passed(3)
    w.expire(90.0)
    assert w.idle() and w.cursor == 1


def test_a_rejected_record_waits_retry_rejected_and_a_transient_one_only_the_ack_timeout():
    w = window()
    offer(w, [1, 2], now=0.0)
    w.record_acked(1, done=False, reason="bad_signature", now=10.0)
    w.record_acked(2, done=False, reason="no_key", now=10.0)
    assert not w.may_offer(1) and not w.may_offer(2) and w.free() == 3
    w.expire(69.9)
    assert not w.may_offer(2)
    w.expire(70.0)
    assert w.may_offer(2) and not w.may_offer(1) and w.cursor == 1
    w.expire(610.0)
    assert w.may_offer(1) and w.cursor == 0


def test_a_rejection_then_a_stored_ack_clears_the_wait():
    w = window()
    offer(w, [5], now=0.0)
    w.record_acked(5, done=False, reason="internal_error", now=1.0)
    w.record_acked(5, done=True, reason=None, now=2.0)
    assert w.retry_after == {} and w.may_offer(5)


def test_a_new_session_requeues_everything_but_keeps_rejections_waiting():
    w = window()
    offer(w, [1, 2], now=0.0)
    w.record_acked(2, done=False, reason="bad_signature", now=1.0)
    w.chunk_sent(("a" * 64, 0), now=1.0)
    w.requeue_all()
    assert w.idle() and w.cursor == 0 and w.chunks == {} and not w.may_offer(2) and w.may_offer(1)


def test_the_chunk_window_bounds_chunks_and_a_refused_chunk_goes_again_after_the_timeout():
    w = window()
    first, second, third = ("f" * 64, 0), ("f" * 64, 1), ("f" * 64, 2)
    w.chunk_sent(first, now=0.0)
    w.chunk_sent(second, now=0.0)
    assert not w.chunk_room() and w.chunk_in_flight(first)
    w.chunk_acked(first)
    assert w.chunk_room() and not w.chunk_in_flight(first)
    w.chunk_sent(third, now=5.0)   # e.g. refused by the central: offered again after ack_timeout
    w.expire(60.0)
    assert not w.chunk_in_flight(second) and w.chunk_in_flight(third)
    w.expire(65.0)
    assert w.chunks == {}


def test_periodic_messages_are_due_after_their_interval():
    assert due(10.0, last=0.0, interval=10.0) and not due(9.99, last=0.0, interval=10.0)


def test_what_the_broker_has_not_taken_yet_does_not_time_out_and_a_release_offers_again_now():
    w = window()
    offer(w, [1, 2], now=0.0)
    w.chunk_sent(("ab" * 32, 0), 0.0)
    w.still_sending(1, 50.0)             # still in the send queue at 50 s (a thin link): its timeout restarts
    w.still_sending(("ab" * 32, 0), 50.0)
    w.still_sending(99, 50.0)            # not in flight: nothing happens
    w.expire(60.0)
    assert set(w.inflight) == {1} and w.chunk_in_flight(("ab" * 32, 0)) and 99 not in w.inflight
    w.expire(110.0)
    assert w.idle() and not w.chunk_in_flight(("ab" * 32, 0))
    offer(w, [3], now=120.0)
    w.record_acked(3, done=False, reason="malformed", now=121.0)
    assert not w.may_offer(3)
    w.release(3)                          # e.g. a batch an older central could not read: offered again at once
    assert w.may_offer(3) and w.cursor == 2
