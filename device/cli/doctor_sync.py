"""``allscope doctor``'s sync checks: the enrolment certificates and a real mutual-TLS MQTT connection."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from device.cli.doctor_base import FAIL, PASS, SKIP, WARN, Context, Result, one_line
from device.errors import AllscopeError

CERT_WARN_DAYS = 30
BROKER_TIMEOUT_S = 5.0


def _bundle(ctx: Context) -> dict | None:
    meta = ctx.data_dir / "sync" / "bundle.json"
    if not meta.is_file():
        return None
    return json.loads(meta.read_text())


def check_certificates(ctx: Context, now: dt.datetime | None = None) -> Result:
    from sync.fleet.pki import load_certificate

    try:
        meta = _bundle(ctx)
    except (OSError, ValueError) as error:
        return Result("certificate", FAIL, f"sync/bundle.json unreadable ({one_line(error)})",
                      "re-enrol: allscope device enrol BUNDLE")
    if meta is None:
        return Result("certificate", SKIP, "not enrolled for sync (no sync/bundle.json)")
    now = now or dt.datetime.now(dt.timezone.utc)
    found = []
    for name in ("device.crt", "ca.crt"):
        try:
            cert = load_certificate(ctx.data_dir / "sync" / name)
        except AllscopeError as error:
            return Result("certificate", FAIL, one_line(error), "re-enrol: allscope device enrol BUNDLE")
        found.append((name, cert.not_valid_before_utc, cert.not_valid_after_utc))
    name, _, until = min(found, key=lambda item: item[2])
    days = (until - now).total_seconds() / 86400
    detail = f"{name} valid until {until:%Y-%m-%d} ({days:.0f} days)"
    data = {name: {"not_after": after.isoformat()} for name, _, after in found}
    if any(before > now for _, before, _ in found):
        return Result("certificate", FAIL, "a certificate is not valid yet: the clock is behind",
                      "set the clock (see the clock check)", data)
    if days < 0:
        return Result("certificate", FAIL, f"{name} expired on {until:%Y-%m-%d}",
                      "ask the central administrator for a new bundle and run allscope device enrol", data)
    if days < CERT_WARN_DAYS:
        return Result("certificate", WARN, detail, "ask the central administrator to re-enrol this device "
                      "before it expires (allscope central enrol), then allscope device enrol", data)
    return Result("certificate", PASS, detail, data=data)


def check_broker(ctx: Context, timeout: float = BROKER_TIMEOUT_S) -> Result:
    """Mutual-TLS MQTT connection to the bundle's broker (own client id: the agent's session is left alone)."""
    from sync.fleet.enrol import parse_broker

    try:
        meta = _bundle(ctx)
    except (OSError, ValueError):
        meta = None
    if meta is None:
        return Result("broker", SKIP, "not enrolled for sync")
    override = ctx.config.sync.broker
    host, port = parse_broker(override) if override else (meta["broker_host"], int(meta["broker_port"]))
    started = time.perf_counter()
    problem = mqtt_probe(ctx.data_dir / "sync", host, port, f"{meta['device_id']}-doctor", timeout)
    where = f"{host}:{port}"
    if problem:
        return Result("broker", FAIL, f"{where}: {problem}", "is the broker running and reachable from here "
                      "(network, firewall, sync.broker)? A refused certificate needs a new bundle",
                      {"broker": where})
    elapsed = (time.perf_counter() - started) * 1000.0
    return Result("broker", PASS, f"{where}: mutual TLS and MQTT connect ok in {elapsed:.0f} ms",
                  data={"broker": where, "connect_ms": round(elapsed, 1)})


def mqtt_probe(sync_dir: Path, host: str, port: int, client_id: str, timeout: float) -> str | None:
    """None when the broker accepts an MQTT v5 connection with the device certificate, else one line why."""
    import ssl

    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         reconnect_on_failure=False)
    client.connect_timeout = timeout
    client.tls_set(ca_certs=str(sync_dir / "ca.crt"), certfile=str(sync_dir / "device.crt"),
                   keyfile=str(sync_dir / "device.key"), cert_reqs=ssl.CERT_REQUIRED,
                   tls_version=ssl.PROTOCOL_TLS_CLIENT)
    outcome: dict[str, Any] = {}
    client.on_connect = lambda _c, _u, _f, reason, _p: outcome.setdefault("reason", reason)
    client.on_disconnect = lambda _c, _u, _f, reason, _p: outcome.setdefault("closed", reason)
    try:
        client.connect(host, port, keepalive=10, clean_start=True)
    except ssl.SSLError as error:
        return f"TLS refused ({one_line(error.reason or error)})"
    except OSError as error:
        return f"unreachable ({one_line(error.strerror or error)})"
    deadline = time.monotonic() + timeout
    try:
        while "reason" not in outcome and "closed" not in outcome and time.monotonic() < deadline:
            if client.loop(0.1) not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
                return "the broker closed the connection (certificate refused or revoked?)"
    finally:
        client.disconnect()
    reason = outcome.get("reason")
    if reason is None:
        return f"no MQTT answer within {timeout:.0f} s"
    return f"connection refused: {reason}" if reason.is_failure else None


def check_broker_files(ctx: Context, conf: Path | None = None) -> Result:
    """On the broker's host: can mosquitto's user write its persistence folder and read its keys (issue 16)?"""
    from sync.fleet.broker_checks import INSTALLED_CONF, check_mosquitto_conf

    conf = conf or INSTALLED_CONF
    if not conf.is_file():
        return Result("broker-files", SKIP, f"no allscope broker configuration here ({conf})")
    try:
        problems = check_mosquitto_conf(conf)
    except OSError as error:
        return Result("broker-files", FAIL, f"{conf}: {one_line(error)}", "run it as root, or check the path")
    if problems:
        more = f" (and {len(problems) - 1} more: allscope central broker-check)" if len(problems) > 1 else ""
        return Result("broker-files", FAIL, problems[0] + more, "fix the owner or mode as said, then restart "
                      "mosquitto")
    return Result("broker-files", PASS, f"{conf}: persistence writable, certificates, CRL, ACL and key readable "
                  "by mosquitto's user")
