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

import os
import pwd
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from sync.fleet.broker import Broker, find_mosquitto, free_port
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

def _postgres_bin() -> Path | None:
    from sync.bench.postgres import _bindir

    return _bindir()


def _postgres_user() -> str | None:
    """initdb and postgres refuse to run as root: as root, run them as the `postgres` (or `nobody`) user."""
    from sync.bench.postgres import _user

    if os.geteuid() != 0:
        return None
    return _user() or pytest.skip("running as root and there is no postgres or nobody user to run PostgreSQL as")


class PostgresServer:
    """``superuser``: the role initdb creates (the tests' own server: "allscope"; the admin walkthrough's:
    "postgres", as Debian's)."""

    def __init__(self, bindir: Path, user: str | None, superuser: str = "allscope"):
        self.bindir, self.user, self.superuser = bindir, user, superuser
        self.root = Path(tempfile.mkdtemp(prefix="allscope-pg-"))  # not under pytest's 0700 root-only tmp
        self.data, self.sockets, self.log = self.root / "data", self.root / "run", self.root / "postgres.log"
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.databases = 0

    def _run_as(self):
        if self.user is None:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self) -> None:
        self.sockets.mkdir()
        if self.user:
            entry = pwd.getpwnam(self.user)
            for path in (self.root, self.sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        init = subprocess.run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.superuser, "-A",
                               "trust", "-E", "UTF8", "--locale=C", "--no-sync"], capture_output=True, text=True,
                              timeout=120, cwd=self.root, **self._run_as())
        if init.returncode != 0:
            pytest.skip(f"initdb failed: {(init.stderr or init.stdout).strip().splitlines()[-1:]}")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.sockets),
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root, **self._run_as())
        import psycopg2

        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                pytest.skip(f"postgres exited at start: {self.log.read_text(errors='replace')[-300:]}")
            try:
                psycopg2.connect(host="127.0.0.1", port=self.port, user=self.superuser, dbname="postgres").close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    pytest.fail("postgres did not accept connections within 60 s")
                time.sleep(0.1)

    def create_database(self) -> str:
        import psycopg2

        self.databases += 1
        name = f"allscope_test_{self.databases}"
        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="allscope", dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        connection.close()
        return f"postgresql://allscope@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # postgres: fast shutdown
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    import importlib.util

    if importlib.util.find_spec("psycopg2") is None:
        pytest.skip("psycopg2 is not installed (pip install psycopg2-binary)")
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")
    server = PostgresServer(bindir, _postgres_user())
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the session's PostgreSQL server, as a postgresql:// URL."""
    return postgres_server.create_database()
