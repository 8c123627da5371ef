"""The agent's MQTT connection: a paho v5 client with mutual TLS and a retained offline will, and back-off."""

from __future__ import annotations

import json
import logging
import random
import ssl
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sync.agent.config import AgentConfig
from sync.wire import topics

log = logging.getLogger("allscope.sync")


def backoff_delays(initial: float, cap: float, jitter: float, rng: random.Random | None = None):
    """Endless reconnect delays: initial, doubled each time up to cap, each spread by +-jitter."""
    rng = rng or random.Random()
    delay = initial
    while True:
        yield delay * rng.uniform(1.0 - jitter, 1.0 + jitter)
        delay = min(cap, delay * 2)


def make_client(config: AgentConfig, chunk_window: int, *, on_connect, on_disconnect, on_message) -> mqtt.Client:
    """A client for ``config``'s device: its certificate, the fleet CA, the status will, room for the window."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.device_id,
                         protocol=mqtt.MQTTv5, reconnect_on_failure=False)
    client.tls_set(ca_certs=str(config.path("ca.crt")), certfile=str(config.path("device.crt")),
                   keyfile=str(config.path("device.key")), cert_reqs=ssl.CERT_REQUIRED,
                   tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.will_set(topics.status(config.device_id), json.dumps({"state": "offline"}), qos=1, retain=True)
    client.max_inflight_messages_set(config.window + chunk_window + 4)
    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_message = on_message
    return client


def connect_properties(config: AgentConfig) -> Properties:
    """A persistent session: acks that arrive while the device is offline wait at the broker."""
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = config.session_expiry_s
    return properties


def tls_refusal(config: AgentConfig, timeout_s: float = 5.0) -> str:
    """Why the broker drops this device right after the handshake, or "" if it does not (or cannot tell).

    With TLS 1.3 the broker checks the client certificate after the client's side of the handshake is done:
    a revoked or unknown certificate then shows up in paho only as a lost connection ("Unspecified
    error"). A bare handshake plus one read gets the broker's alert (e.g. "certificate revoked").
    """
    import socket

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(config.path("ca.crt")))
    context.load_cert_chain(str(config.path("device.crt")), str(config.path("device.key")))
    try:
        with socket.create_connection((config.broker_host, config.broker_port), timeout=timeout_s) as raw, \
                context.wrap_socket(raw, server_hostname=config.broker_host) as tls:
            tls.settimeout(min(timeout_s, 2.0))  # a broker that accepts us just waits for CONNECT
            tls.recv(1)  # the alert comes here (sending first may meet the close instead of the alert)
    except ssl.SSLError as error:
        reason = (error.reason or "").lower()
        if reason.startswith(("sslv3_alert_", "tlsv1_alert_", "tlsv13_alert_")):
            return reason.split("alert_", 1)[1].replace("_", " ")
    except OSError:
        return ""
    return ""


def goodbye(client: mqtt.Client, status_topic: str, offline_status: bytes, timeout_s: float = 2.0) -> None:
    """Publish the retained offline status (a clean DISCONNECT suppresses the will), then disconnect."""
    try:
        info = client.publish(status_topic, offline_status, qos=1, retain=True)
        deadline = time.monotonic() + timeout_s
        while not info.is_published() and time.monotonic() < deadline:
            client.loop(timeout=0.05)
        client.disconnect()
        client.loop(timeout=0.2)
    except Exception:  # noqa: BLE001 - stopping must not fail
        log.exception("error while disconnecting")
