"""The device's sync agent (``allscope sync run``): outbox -> sealed envelopes -> MQTT -> central, until acked.

One thread does everything: it drives paho's network loop itself (``client.loop``)
and, between loop passes, fills the send window from the outbox. So paho's
callbacks, the SQLite outbox and the media progress table are only ever touched
from this thread, and a SIGTERM just sets an event the loop checks.

Delivery rules:

* An entry leaves the outbox only on a *central* acknowledgement whose Ed25519
  signature verifies with the bundle's ``central_sign_ed25519.pub`` and whose
  record and version match the entry ("stored" or "duplicate"). "rejected"
  keeps it, with the reason as its last error, and offers it again later. The
  broker's PUBACK only means "the broker has it".
* At most ``window`` entries are in flight, sent in outbox-id order, so the
  versions of one record leave in order; what one pass may send goes as batch
  envelopes of up to ``batch_records`` entries (``sync/agent/batches.py``). A capture
  waits until every file the media policy sends with it is complete at the
  central (head of line).
* The MQTT session is persistent (clean_start False, session expiry): acks
  that arrive while the device is offline are queued by the broker. When the
  broker says the session is gone, every in-flight entry is sent again (the
  central acknowledges a resend as "duplicate"); an entry without an ack
  ``ack_timeout_s`` after the broker took it (PUBACK) is sent again too. On a
  thin link a message can wait minutes in the send queue: it is not resent then.
* Reconnects use capped exponential back-off with jitter (our own loop, so a
  TLS refusal is counted and shown like any other failure).
* An entry whose envelope cannot be sent (above the 4 MB envelope limit, or above
  ``max_message_bytes``, which must stay under the broker's packet limit) is
  quarantined (``sync.agent.outbox.quarantine``): kept in the outbox with its
  reason, shown by ``allscope sync status``, skipped from then on; the entries
  behind it go on. Without this one oversized record would crash the agent (or
  make the broker drop the connection) on every start, for ever.
* The first envelope of every connection is a self-signed "hello" carrying
  the device's signing key, which the central pins; records wait for its ack
  until the central has confirmed the key once.
"""

from __future__ import annotations

import logging
import signal
import ssl
import threading
import time

import paho.mqtt.client as mqtt

from device.store.records import open_database
from sync.agent import outbox
from sync.agent.batches import Batcher
from sync.agent.config import AgentConfig
from sync.agent.connection import backoff_delays, connect_properties, goodbye, make_client, tls_refusal
from sync.agent.file_sender import CHUNK_WINDOW, FileSender
from sync.agent.outbox import backlog
from sync.agent.sealer import Sealer
from sync.agent.status_info import StatusPacer, latest_model, software_version
from sync.agent.window import SendWindow, due
from sync.wire import acks as acks_mod
from sync.wire import batch as batch_mod
from sync.wire import envelope as env_mod
from sync.wire import keys, topics
from sync.wire.status import make_status

log = logging.getLogger("allscope.sync")

# Rejections that can clear by themselves (the hello not yet processed by another receiver, a central
# hiccup) are retried after ack_timeout_s, the others after retry_rejected_s (sync/agent/window.py).


class SyncAgent:
    def __init__(self, config: AgentConfig):
        self.config = config
        self.database = open_database(config.database)
        self.sealer = Sealer.from_config(config)
        self.central_public = keys.load_ed25519_public(config.path("central_sign_ed25519.pub"))
        self.key_fingerprint = self.sealer.fingerprint
        self.stop_event = threading.Event()
        self.leaving = False  # set by _goodbye: the DISCONNECT that follows is ours
        self.clock = time.monotonic
        self.window = SendWindow(size=config.window, chunk_size=CHUNK_WINDOW, ack_timeout=config.ack_timeout_s,
                                 retry_rejected=config.retry_rejected_s)
        self.ack_batch: list[dict] = []                  # verified record acks not yet applied to the outbox
        self.unconfirmed: dict = {}     # window key (entry id, or (sha256, index)) -> paho info, until PUBACKed
        self.confirmed_at = 0.0
        self.batcher = Batcher(limit=config.batch_records, max_message_bytes=config.max_message_bytes)
        self.connected = False
        self.lost = False
        self.hello_confirmed = outbox.get_state("hello_key") == self.key_fingerprint
        self.quarantined = outbox.quarantined_ids()       # outbox ids never offered again (see outbox.quarantine)
        # A plaintext up to this size always seals within max_message_bytes; larger ones are measured first.
        self.safe_plaintext = env_mod.max_plaintext_bytes(config.max_message_bytes)
        self.hello_sent_at = 0.0
        self.status = StatusPacer(config.status_interval_s)
        self.counts = {"sent": 0, "acked": 0, "rejected": 0, "chunks": 0, "bad_acks": 0, "connects": 0,
                       "quarantined": 0, "batches": 0}
        self.file_sender = FileSender(self)
        self.client = make_client(config, CHUNK_WINDOW, on_connect=self._on_connect,
                                  on_disconnect=self._on_disconnect, on_message=self._on_message)

    # --- MQTT client -------------------------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self._error(f"broker refused the connection: {reason_code}")
            self.lost = True
            return
        self.connected = True
        self.counts["connects"] += 1
        if not flags.session_present:
            # Acks queued for the old session are gone: everything unacknowledged goes again.
            self.window.requeue_all()
            self.batcher.forget()
            self.unconfirmed.clear()
        client.subscribe(topics.ack(self.config.device_id), qos=1)
        self._send_hello()
        self._publish_status()
        log.info("connected to %s:%d as %s (session %s)", self.config.broker_host, self.config.broker_port,
                 self.config.device_id, "resumed" if flags.session_present else "new")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        was_connected, self.connected = self.connected, False
        self.lost = True
        if self.stop_event.is_set() or self.leaving:
            return  # our own clean DISCONNECT ("Normal disconnection") is not an error
        if not was_connected and reason_code.is_failure:
            refusal = tls_refusal(self.config)  # dropped before CONNACK: ask the TLS layer why
            if refusal:
                self._error(f"the broker refused this device's certificate: {refusal}"
                            + (" (revoked by the central's admin: re-enrol the device)" if "revoked" in refusal
                               else " (check the enrolment bundle: allscope doctor)"))
                return
        self._error(f"disconnected from the broker: {reason_code}")

    def _on_message(self, client, userdata, message):
        if message.topic == topics.ack(self.config.device_id):
            # Applied in one transaction per loop pass (flush_acks), not one per message: at hundreds of
            # acks per second, a commit per ack costs more than sealing the envelopes.
            self.handle_ack(message.payload, flush=False)

    # --- run loop ----------------------------------------------------------------------------------------

    def stop(self, *_):
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)

    def run(self, *, until_empty: bool = False) -> int:
        """Sync until stopped (or, with ``until_empty``, until the outbox is empty). Returns 0."""
        config = self.config
        delays = backoff_delays(config.backoff_initial_s, config.backoff_max_s, config.backoff_jitter)
        while not self.stop_event.is_set():
            finished, had_session = self._session(until_empty)
            self.flush_acks()  # acks verified before the connection ended still count
            if finished or self.stop_event.is_set():
                break
            if had_session:  # a connection that worked starts the back-off over
                delays = backoff_delays(config.backoff_initial_s, config.backoff_max_s, config.backoff_jitter)
            delay = next(delays)
            log.info("reconnecting in %.1f s", delay)
            self.stop_event.wait(delay)
        self._goodbye()
        return 0

    def _session(self, until_empty: bool) -> tuple[bool, bool]:
        """One connection, from connect to loss: (finished, connected at all)."""
        self.lost, self.connected = False, False
        had_session = False
        try:
            self.client.connect(self.config.broker_host, self.config.broker_port, self.config.keepalive_s,
                                clean_start=False, properties=connect_properties(self.config))
        except (OSError, ssl.SSLError, ValueError) as error:
            self._error(f"cannot connect to {self.config.broker_host}:{self.config.broker_port}: "
                        f"{' '.join(str(error).split()) or type(error).__name__}")
            return False, False
        while not self.stop_event.is_set() and not self.lost:
            rc = self.client.loop(timeout=0.05)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                if not self.lost and not self.stop_event.is_set():
                    self._error(f"connection lost: {mqtt.error_string(rc)}")
                self.connected = False
                break
            if self.connected:
                had_session = True
                self.pump()
                if until_empty and self.window.idle() and backlog(exclude=self.quarantined) == 0:
                    if self.quarantined:
                        log.warning("%d quarantined entries stay in the outbox (see allscope sync status)",
                                    len(self.quarantined))
                    return True, True
        return False, had_session

    def _goodbye(self) -> None:
        """Graceful stop: a retained offline status (a clean DISCONNECT suppresses the will), then disconnect."""
        self.leaving = True
        if self.connected:
            goodbye(self.client, topics.status(self.config.device_id),
                    make_status("offline", backlog(), software_version(), latest_model()))
        self.connected = False

    # --- sending -----------------------------------------------------------------------------------------

    def pump(self) -> None:
        """Called between network loop passes: acks, status, hello, resends, then fill the window."""
        self.flush_acks()
        now, window = self.clock(), self.window
        status_backlog = self.status.due(now, backlog)
        if status_backlog is not None:
            self._publish_status(status_backlog)
        if not self.hello_confirmed:
            if due(now, self.hello_sent_at, self.config.ack_timeout_s):
                self._send_hello()
            return
        self._hold_unconfirmed(now)
        window.expire(now)
        free = window.free()
        ready: list = []  # sendable entries of this pass, sent (batched) at its end
        try:
            while free > 0:
                batch = outbox.pending(min(free, 500), after_id=window.cursor)
                if not batch:
                    return
                for position, entry in enumerate(batch):
                    if window.may_offer(entry.id) and self._sendable(entry):
                        if entry.entity == "capture" and not self.file_sender.ready(entry):
                            # Head of line: later records wait for this capture's files, but the files
                            # of the captures behind it may already go (keeps the chunk window full).
                            for later in batch[position + 1:]:
                                if not window.chunk_room():
                                    break
                                if later.entity == "capture" and later.id not in self.quarantined:
                                    self.file_sender.ready(later)
                            return
                        ready.append(entry)
                        free -= 1
                    window.passed(entry.id)
                    if free <= 0:
                        return
        finally:
            outbox.mark_sent(self._send_ready(ready))

    def _send_ready(self, ready: list) -> list[int]:
        """Publish the entries one pass collected, batched where possible; the ids sent."""
        sent: list[int] = []
        for group in self.batcher.groups(ready):
            data = self.batcher.seal(group, self.sealer) if len(group) > 1 else None
            if data is None:  # one entry, or a batch that does not fit after all: one envelope each
                sent.extend(entry.id for entry in group if self._send_entry(entry))
                continue
            info = self._publish(data)
            now = self.clock()
            for entry in group:
                self.window.offered(entry.id, now)
                self.unconfirmed[entry.id] = info
            self.counts["sent"] += len(group)
            self.counts["batches"] += 1
            sent.extend(entry.id for entry in group)
        return sent

    def _publish(self, payload: bytes):
        return self.client.publish(topics.up(self.config.device_id), payload, qos=1)

    def _hold_unconfirmed(self, now: float) -> None:
        """What the broker has not PUBACKed yet is still on its way (a thin link, a long queue): its ack timeout
        starts again, so it is not sent a second time behind itself. Checked once a second."""
        if now - self.confirmed_at < 1.0:
            return
        self.confirmed_at = now
        for key, info in list(self.unconfirmed.items()):
            try:
                on_its_way = not info.is_published()
            except (RuntimeError, ValueError):  # paho gave up on it (connection lost): the ack timeout decides
                on_its_way = False
            if on_its_way:
                self.window.still_sending(key, now)
            else:
                del self.unconfirmed[key]

    def _send_entry(self, entry) -> bool:
        """Publish the entry's envelope; False (and the entry quarantined) when it cannot be sent."""
        data = self._seal_within_limit(entry)
        if data is None:
            return False
        self.unconfirmed[entry.id] = self._publish(data)
        self.window.offered(entry.id, self.clock())
        self.counts["sent"] += 1
        return True

    def _sendable(self, entry) -> bool:
        """False for a quarantined entry, and for one found too large now (quarantined here), before its files go."""
        if entry.id in self.quarantined:
            return False
        if len(entry.plaintext) <= self.safe_plaintext:  # fits for sure: no need to seal it twice
            return True
        return self._seal_within_limit(entry) is not None

    def _seal_within_limit(self, entry) -> bytes | None:
        """The sealed entry, or None after quarantining it (above the envelope limit or max_message_bytes)."""
        try:
            data = self.sealer.entry(entry)
        except env_mod.EnvelopeError as error:
            reason = str(error)
        else:
            if len(data) <= self.config.max_message_bytes:
                return data
            reason = (f"envelope of {len(data)} bytes exceeds max_message_bytes ({self.config.max_message_bytes}; "
                      f"the broker drops larger packets)")
        message = outbox.quarantine(entry, reason)
        log.warning("%s; it stays in the outbox, the entries behind it go on", message)
        self.quarantined.add(entry.id)
        self.counts["quarantined"] += 1
        return None

    def _send_hello(self) -> None:
        self._publish(self.sealer.hello({"backlog": backlog()}))
        self.hello_sent_at = self.clock()

    def _publish_status(self, count: int | None = None) -> None:
        count = backlog() if count is None else count
        self.client.publish(topics.status(self.config.device_id),
                            make_status("online", count, software_version(), latest_model()), qos=1, retain=True)
        self.status.sent(self.clock(), count)

    # --- acknowledgements --------------------------------------------------------------------------------

    def flush_acks(self) -> int:
        """Apply the batched record acks to the outbox in one transaction; returns the entries removed."""
        if not self.ack_batch:
            return 0
        batch, self.ack_batch = self.ack_batch, []
        removed = outbox.remove_acked(batch)
        self.counts["acked"] += removed
        return removed

    def handle_ack(self, data: bytes, flush: bool = True) -> int:
        """Apply one signed ack message (forged acks are ignored). With ``flush`` the outbox is updated now and
        the number of entries removed is returned; without, the items wait for :meth:`flush_acks` (returns 0)."""
        try:
            ack = acks_mod.parse_ack(data, self.central_public, device_id=self.config.device_id)
        except acks_mod.AckError as error:
            self.counts["bad_acks"] += 1
            log.warning("ignored an acknowledgement: %s", error)
            return 0
        records, now = [], self.clock()
        for item in ack.acks:
            if item["record"] == env_mod.HELLO_RECORD:
                self._hello_ack(item)
            elif item["record"].startswith("file:"):
                self.file_sender.acked(item)
            elif item["record"] == batch_mod.RECORD:  # the central could not read a batch at all
                self._error(f"central refused a batch of records: {item['reason'] or 'no reason'}")
                for entry_id in self.batcher.refused(item):
                    if self.batcher.enabled:
                        self.window.record_acked(entry_id, False, item["reason"], now)
                    else:  # an older central: offer them again at once, one envelope each
                        self.window.release(entry_id)
            else:
                self.batcher.acked(item["entry"])
                records.append(item)
                done = item["status"] in acks_mod.DONE
                self.window.record_acked(item["entry"], done, item["reason"], now)
                if not done:
                    self.counts["rejected"] += 1
                    log.warning("central rejected %s v%s (entry %s): %s", item["record"], item["version"],
                                item["entry"], item["reason"] or "no reason")
        self.ack_batch.extend(records)
        return self.flush_acks() if flush else 0

    def _hello_ack(self, item: dict) -> None:
        if item["status"] in acks_mod.DONE:
            if not self.hello_confirmed:
                log.info("central confirmed the signing key %s", self.key_fingerprint)
                outbox.set_state("hello_key", self.key_fingerprint)
            self.hello_confirmed = True
        else:
            self.hello_confirmed = False
            self._error(f"central refused this device's hello: {item['reason']} (re-enrol the device)")

    # --- bookkeeping -------------------------------------------------------------------------------------

    def _error(self, message: str) -> None:
        log.warning("%s", message)
        outbox.set_state("last_error", f"{env_mod.utc_timestamp()} {message}")


def run_agent(config: AgentConfig, *, until_empty: bool = False) -> int:
    agent = SyncAgent(config)
    agent.install_signal_handlers()
    return agent.run(until_empty=until_empty)
