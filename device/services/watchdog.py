"""A deadline watchdog: one thread that watches a worker's heartbeat and reports a call that hangs.

    watchdog = Watchdog(30.0, on_expire=lambda ticket: ...).start()
    with watchdog.deadline("capture 12") as ticket:
        result = classifier.predict(batch)     # a hung delegate never returns from here
    if ticket.expired:
        ...                                    # too late: the watchdog has already acted on it
    watchdog.stop()

Python cannot interrupt a thread stuck in native code (an Edge TPU driver that
stops answering, an external delegate in a deadlock), so the watchdog does not
try: when a deadline passes it marks the ticket expired and calls
``on_expire(ticket)`` from its own thread. The owner then abandons the stuck
thread (it is a daemon; if it ever returns it sees ``ticket.expired`` and
writes nothing), records the failure and carries on with a fresh one.

Arming and expiry happen under one lock, so for every ticket exactly one of
two things is true: the guarded block finished in time (``expired`` stays
False and ``on_expire`` is never called), or ``on_expire`` was called once and
``expired`` is True by the time the block's caller looks.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)


@dataclass
class Ticket:
    """One armed deadline: what is being waited for, and whether the watchdog gave up on it."""

    what: Any
    seconds: float
    started: float = field(default_factory=time.monotonic)
    expired: bool = False

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Watchdog:
    """Watches one guarded call at a time (the analysis worker runs one job at a time)."""

    def __init__(self, seconds: float, on_expire: Callable[[Ticket], None], name: str = "allscope-watchdog",
                 poll_s: float | None = None):
        if not seconds > 0:
            raise ValueError(f"watchdog seconds must be positive, got {seconds!r}")
        self.seconds = float(seconds)
        self.on_expire = on_expire
        self.poll_s = poll_s if poll_s is not None else min(1.0, self.seconds / 10.0)
        self.expiries = 0
        self._lock = threading.Lock()
        self._armed: Ticket | None = None
        self._deadline = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "Watchdog":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @contextlib.contextmanager
    def deadline(self, what: Any, seconds: float | None = None) -> Iterator[Ticket]:
        """Arm a deadline around a block; the block's caller checks ``ticket.expired`` afterwards."""
        ticket = Ticket(what, float(seconds or self.seconds))
        with self._lock:
            self._armed, self._deadline = ticket, ticket.started + ticket.seconds
        try:
            yield ticket
        finally:
            with self._lock:
                if self._armed is ticket:
                    self._armed = None

    def beat(self) -> None:
        """A sign of life from the guarded block: the deadline starts again from now."""
        with self._lock:
            if self._armed is not None:
                self._deadline = time.monotonic() + self._armed.seconds

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            with self._lock:
                ticket = self._armed
                if ticket is None or time.monotonic() < self._deadline:
                    continue
                ticket.expired = True
                self._armed = None
                self.expiries += 1
            log.error("watchdog: %s did not finish within %.0f s", ticket.what, ticket.seconds)
            try:
                self.on_expire(ticket)
            except Exception:  # noqa: BLE001 - the watchdog itself must keep watching
                log.exception("watchdog: handling the expiry of %s failed", ticket.what)
