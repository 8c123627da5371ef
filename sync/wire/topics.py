"""MQTT topics of allscope sync (protocol v1). Device ids are the CN of the device's TLS certificate.

    allscope/v1/devices/<id>/up      device -> central: envelopes (records, file chunks, hello), QoS 1
    allscope/v1/devices/<id>/ack     central -> device: signed acknowledgements, QoS 1
    allscope/v1/devices/<id>/status  device: retained "online" / "offline" (last will), with backlog

The broker's ACL (firmware_config/mosquitto/) lets a device write only its own
``up`` and ``status`` and read only its own ``ack``; the central identity reads
every ``up``/``status`` and writes every ``ack``. Central receivers use the MQTT v5
shared subscription ``$share/central/...`` so several can run side by side.
"""

from __future__ import annotations

import re

PREFIX = "allscope/v1/devices"
CENTRAL_IDENTITY = "central"  # CN of the central server's client certificate
SHARE_GROUP = "central"
DEVICE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,63}$")


def up(device_id: str) -> str:
    return f"{PREFIX}/{device_id}/up"


def ack(device_id: str) -> str:
    return f"{PREFIX}/{device_id}/ack"


def status(device_id: str) -> str:
    return f"{PREFIX}/{device_id}/status"


def shared_up_subscription() -> str:
    return f"$share/{SHARE_GROUP}/{PREFIX}/+/up"


def status_subscription() -> str:
    return f"{PREFIX}/+/status"


def device_from_topic(topic: str) -> str | None:
    parts = topic.split("/")
    if len(parts) == 5 and "/".join(parts[:3]) == PREFIX and DEVICE_ID_RE.match(parts[3]):
        return parts[3]
    return None


def check_device_id(device_id: str) -> str:
    if not DEVICE_ID_RE.match(device_id or ""):
        raise ValueError(f"device id {device_id!r}: use 3-64 lower-case letters, digits and '-', starting with a "
                         f"letter or digit")
    return device_id
