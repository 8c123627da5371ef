"""Fixtures for the sync tests: a fleet PKI, a real mosquitto with mutual TLS, a real PostgreSQL server.

Loaded by ``tests/conftest.py`` (``pytest_plugins = ["sync_fixtures"]``); helpers are imported with
``from sync_fixtures import issue_device, mqtt_client, ...``.

- ``pki`` (session): a fleet PKI in a temporary directory (``sync.fleet.pki.Pki``).
- ``mqtt_broker`` (per test): mosquitto with ``firmware_config/mosquitto`` on a free loopback port,
  ``.host``, ``.port``, ``.restart()``, ``.stop()``, ``.reload()``, ``.log_tail()``; always terminated.
- ``postgres_server`` (session) and ``postgres_url`` (per test: a fresh database on that server).
- ``issue_device(pki, device_id)``: a device client certificate (made once per id per PKI).
- ``mqtt_client(broker, cert, key, ...)``: a connected paho 2.x MQTT v5 client, loop running,
  ``client.messages`` a queue of everything it receives; :class:`Refused` when the broker says no.
"""

from __future__ import annotations

import queue
import threading
import time

import pytest

from device.errors import AllscopeError
from sync.bench.postgres import TempPostgres, unavailable
from sync.fleet.broker import Broker, find_mosquitto
from sync.fleet.pki import Issued, Pki, init_pki, issue, load_certificate, revoked_serials

WAIT = 15.0  # seconds: the longest a helper waits for something that must happen (never a pass condition)


# --- PKI ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    return init_pki(tmp_path_factory.mktemp("pki") / "pki")


_issue_lock = threading.Lock()


def issue_device(pki: Pki, device_id: str) -> Issued:
    """The device's client certificate in ``pki``: issued on first use, reused after (unless revoked)."""
    from sync.fleet.pki import cert_fingerprint

    with _issue_lock:
        path = pki.cert_path(device_id)
        if path.exists() and pki.key_path(device_id).exists():  # an enrolment bundle took the key away
            cert = load_certificate(path)
            if cert.serial_number not in revoked_serials(pki):
                return Issued(device_id, path, pki.key_path(device_id), cert.serial_number, cert_fingerprint(cert))
        return issue(pki, device_id, replace=True)


# --- mosquitto ----------------------------------------------------------------------------------------------

@pytest.fixture
def mqtt_broker(pki, tmp_path):
    if not find_mosquitto():
        pytest.skip("mosquitto is not installed (Debian: apt-get install mosquitto; `make test` installs it)")
    broker = Broker(pki, tmp_path / "broker")
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


class Refused(Exception):
    """The broker refused the connection (TLS handshake, CONNACK reason, or it closed the socket)."""


def mqtt_client(broker, cert=None, key=None, *, ca=None, client_id: str = "", clean_start: bool = True,
                session_expiry: int = 0, will: tuple | None = None, subscribe=(), timeout: float = WAIT):
    """A connected MQTT v5 client (paho 2.x, callback API v2) with its network loop running.

    ``will`` is (topic, payload, qos, retain); ``subscribe`` a list of (topic filter, qos) made before
    returning (SUBACK reason codes in ``client.suback``). Received messages go to ``client.messages``;
    PUBACK reason codes by mid to ``client.pubacks``. Raises :class:`Refused` if the broker refuses.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         reconnect_on_failure=False)
    client.tls_set(ca_certs=str(ca or broker.pki.ca_cert), certfile=str(cert) if cert else None,
                   keyfile=str(key) if key else None)
    client.messages = queue.Queue()
    client.pubacks = {}
    client.suback = {}
    connected = threading.Event()
    outcome = {}

    def on_connect(_client, _userdata, _flags, reason_code, _properties):
        outcome["reason"] = reason_code
        connected.set()

    def on_disconnect(_client, _userdata, _flags, reason_code, _properties):
        outcome.setdefault("reason", reason_code)
        outcome["disconnected"] = reason_code
        connected.set()

    def on_publish(_client, _userdata, mid, reason_code, _properties):
        client.pubacks[mid] = reason_code

    def on_subscribe(_client, _userdata, mid, reason_codes, _properties):
        client.suback[mid] = list(reason_codes)

    client.on_connect, client.on_disconnect = on_connect, on_disconnect
    client.on_publish, client.on_subscribe = on_publish, on_subscribe
    client.on_message = lambda _c, _u, message: client.messages.put(message)
    if will:
        topic, payload, qos, retain = will
        client.will_set(topic, payload, qos=qos, retain=retain)
    properties = None
    if session_expiry:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = session_expiry
    try:
        client.connect(broker.host, broker.port, keepalive=30, clean_start=clean_start, properties=properties)
    except OSError as error:  # ssl.SSLError is an OSError: the handshake itself failed
        raise Refused(f"TLS: {error}") from None
    client.loop_start()
    if not connected.wait(timeout) or outcome.get("reason") is None or outcome["reason"].is_failure \
            or "disconnected" in outcome:
        client.loop_stop()
        client.disconnect()
        raise Refused(f"connection refused: {outcome.get('reason', 'no CONNACK')}")
    for topic, qos in subscribe:
        result, mid = client.subscribe(topic, qos)
        wait_until(lambda: mid in client.suback, timeout, f"SUBACK for {topic}")
    return client


def close(*clients) -> None:
    for client in clients:
        client.disconnect()
        client.loop_stop()


def wait_until(predicate, timeout: float = WAIT, what: str = "condition"):
    """Poll ``predicate`` until it is true; fails the test after ``timeout`` (a bound, not a measurement)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.01)


def receive(client, timeout: float = WAIT):
    """The next message the client receives (fails the test if none arrives within ``timeout``)."""
    try:
        return client.messages.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"no message within {timeout:.0f} s")


# --- PostgreSQL ---------------------------------------------------------------------------------------------

class PostgresServer(TempPostgres):
    """The benchmarks' throw-away server with fsync off, for the tests; one that cannot start fails the test
    that needs it, in one line (``superuser``: the admin walkthrough's is "postgres", as Debian's)."""

    def __init__(self, superuser: str = "allscope"):
        super().__init__(superuser=superuser, durable=False)

    def start(self) -> "PostgresServer":
        try:
            return super().start()
        except AllscopeError as error:
            pytest.fail(str(error))


@pytest.fixture(scope="session")
def postgres_server():
    reason = unavailable()
    if reason:
        pytest.skip(f"PostgreSQL: {reason}")
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the session's PostgreSQL server, as a postgresql:// URL."""
    return postgres_server.create_database()
