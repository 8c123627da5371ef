"""The agent's MQTT connection: a paho v5 client with mutual TLS and a retained offline will, and back-off."""

from __future__ import annotations

import json
import random
import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sync.agent.config import AgentConfig
from sync.wire import topics


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
