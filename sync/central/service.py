"""`allscope central run`: the MQTT receiver in front of the :class:`~sync.central.ingest.Ingestor`.

paho-mqtt 2 (callback API v2), MQTT v5, TLS with the central's client certificate
(CN "central", which the broker's ACL lets read every device's ``up``/``status``
and write every ``ack``). Envelopes come through the shared subscription
``$share/central/allscope/v1/devices/+/up``, so several receivers can run side by
side and each message goes to one of them.

At-least-once end to end: a message is PUBACKed to the broker only after the
Ingestor has committed it and the signed ack is queued (``manual_ack``). The
session is NOT persistent (clean start, session expiry 0): mosquitto keeps
handing a shared subscription's share to an offline member whose session lives
on, so a stopped or killed receiver would swallow its share of the fleet's
messages until the devices resend (issue 16: 180 s per record with one of two
receivers down). With expiry 0 the broker forgets a receiver the moment its
connection closes and the others get everything at once. A message that was in
flight to a receiver when it died, or published while no receiver was up, is
resent by the device after its ack timeout; the central's replay check turns a
resend of something already stored into a "duplicate" ack, never a second copy.
Reconnects use paho's capped exponential back-off; SIGTERM/SIGINT stop it
cleanly. Each receiver reports itself in the central database
(``sync/central/receivers.py``) so the admin UI lists the running ones.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from device.errors import AllscopeError
from sync.central import receivers
from sync.central.ingest import Ingestor
from sync.wire import topics

log = logging.getLogger("allscope.central")


@dataclass(frozen=True)
class BrokerSettings:
    host: str
    port: int
    ca: Path
    cert: Path
    key: Path
    client_id: str = ""
    keepalive_s: int = 30
    session_expiry_s: int = 0  # gone means gone: see the module docstring
    backoff_min_s: int = 1
    backoff_max_s: int = 60

    def checked(self) -> "BrokerSettings":
        for what, path in (("CA certificate", self.ca), ("client certificate", self.cert), ("client key", self.key)):
            if not Path(path).is_file():
                raise AllscopeError(f"{what} {path} is missing (see allscope central pki init)")
        return self


def parse_broker(text: str) -> tuple[str, int]:
    """"host:port" (IPv6 as "[::1]:8883") -> (host, port); the port defaults to 8883 (MQTT over TLS)."""
    host, port = text.strip(), "8883"
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else port
    elif host.count(":") == 1:
        host, port = host.split(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise AllscopeError(f"broker address {text!r}: use HOST:PORT")
    return host, int(port)


class CentralService:
    """One receiver. ``sign_acks(device_id, acks) -> bytes`` makes the signed ack message for a device."""

    def __init__(self, ingestor: Ingestor, sign_acks, broker: BrokerSettings):
        self.ingestor = ingestor
        self.sign_acks = sign_acks
        self.broker = broker.checked()
        self.client_id = broker.client_id or f"central-{socket.gethostname()}"[:64]
        self.ready = threading.Event()     # set once both subscriptions are granted
        self.stopping = threading.Event()
        self.handled = 0
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5,
                             manual_ack=True)
        client.tls_set(ca_certs=str(self.broker.ca), certfile=str(self.broker.cert), keyfile=str(self.broker.key),
                       cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.reconnect_delay_set(self.broker.backoff_min_s, self.broker.backoff_max_s)
        client.max_inflight_messages_set(1000)  # acks in flight to the broker
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    # --- paho callbacks (run on paho's network thread) -------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("broker %s:%d refused the connection: %s", self.broker.host, self.broker.port, reason_code)
            return
        log.info("connected to %s:%d as %s (session %s)", self.broker.host, self.broker.port, self.client_id,
                 "resumed" if flags.session_present else "new")
        # Subscribe every time: cheap, and correct when the broker lost the session (restart without persistence).
        client.subscribe([(topics.shared_up_subscription(), SubscribeOptions(qos=1)),
                          (topics.status_subscription(), SubscribeOptions(qos=1))])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        failed = [str(code) for code in reason_codes if code.is_failure]
        if failed:
            log.error("subscription refused by the broker: %s (is this the central certificate?)", ", ".join(failed))
            return
        print(f"allscope central: receiving on {self.broker.host}:{self.broker.port} as {self.client_id}",
              flush=True)
        self.ready.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.ready.clear()
        if not self.stopping.is_set():
            log.warning("disconnected from the broker (%s); reconnecting with back-off", reason_code)

    def _on_message(self, client, userdata, message):
        try:
            self.process(message.topic, message.payload, retained=bool(message.retain))
        except Exception:  # noqa: BLE001 - never let one message kill the network thread
            log.exception("could not process a message on %s", message.topic)
        finally:
            if message.qos > 0:
                client.ack(message.mid, message.qos)

    # --- work ------------------------------------------------------------------------------------------

    def process(self, topic: str, payload: bytes, retained: bool = False) -> None:
        device_id = topics.device_from_topic(topic)
        if device_id is None:
            log.warning("ignored a message on unexpected topic %r", topic[:200])
            return
        if topic == topics.status(device_id):
            self.ingestor.handle_status(device_id, payload, retained=retained)
            return
        if topic != topics.up(device_id):
            log.warning("ignored a message on unexpected topic %r", topic[:200])
            return
        acks = self.ingestor.handle(device_id, payload)
        self.handled += 1
        if acks:
            self.client.publish(topics.ack(device_id), self.sign_acks(device_id, acks), qos=1)

    def run(self, install_signals: bool = True, stats_every_s: float = 60.0,
            heartbeat_s: float = receivers.HEARTBEAT_S) -> int:
        """Connect and receive until stop() (or SIGTERM/SIGINT); returns 0."""
        if install_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: self.stop())
        try:
            receivers.register(self.client_id, socket.gethostname(), os.getpid())
        except Exception:  # noqa: BLE001 - the list of receivers is for the admin UI; receiving comes first
            log.warning("could not record this receiver in the central database (the next heartbeat retries)",
                        exc_info=True)
        connect = Properties(PacketTypes.CONNECT)
        connect.SessionExpiryInterval = self.broker.session_expiry_s
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=self.broker.keepalive_s,
                                  clean_start=self.broker.session_expiry_s == 0, properties=connect)
        self.client.loop_start()
        since_stats = 0.0
        try:
            while not self.stopping.wait(heartbeat_s):
                self._beat()
                since_stats += heartbeat_s
                if since_stats >= stats_every_s:
                    since_stats = 0.0
                    self.log_counts()
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            try:
                receivers.stopped(self.client_id, self.handled)
            except Exception:  # noqa: BLE001 - the database may be what failed; stopping must still finish
                log.exception("could not record the stop in the central database")
        summary = ", ".join(f"{key} {value}" for key, value in sorted(self.ingestor.counts.items()))
        print(f"allscope central: stopped after {self.handled} envelopes ({summary or 'nothing received'})",
              flush=True)
        return 0

    def _beat(self) -> None:
        try:
            if not receivers.beat(self.client_id, self.handled):
                receivers.register(self.client_id, socket.gethostname(), os.getpid())
        except Exception:  # noqa: BLE001 - a database hiccup must not stop the receiver; the UI shows it stale
            log.warning("could not record the heartbeat in the central database", exc_info=True)

    def stop(self) -> None:
        self.stopping.set()

    def log_counts(self) -> None:
        if self.ingestor.counts:
            log.info("%d envelopes so far: %s", self.handled, dict(self.ingestor.counts))
