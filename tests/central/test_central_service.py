"""`allscope central run` as real processes against a real mosquitto with mutual TLS.

A device client (its own certificate from the test PKI) publishes sealed envelopes on its ``up``
topic; the receiver stores them in the central database and the device gets a signed ack on its
``ack`` topic, which it verifies with the central's public key. Two receivers side by side share
the work through the MQTT v5 shared subscription, each envelope stored exactly once; a receiver that is stopped or
killed takes no further share (its session ends with its connection).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import REPO_ROOT
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sync_fixtures import WAIT, close, issue_device, mqtt_client, receive, wait_until

from device.store.records import utcnow
from sync.central.db import open_central_database
from sync.central.models import Device, ReceivedRecord
from sync.central.receivers import STALE_AFTER_S, listing
from sync.fleet.pki import load_private_key, load_public_key
from sync.wire import envelope, keyproof, topics
from sync.wire.acks import parse_ack

DEVICE = "clinic-s-01"


class Receiver:
    """One `allscope central run` subprocess; its output goes to a log file the test can read."""

    def __init__(self, tmp_path, pki, broker, client_id: str):
        self.log_path = tmp_path / f"{client_id}.log"
        self.client_id = client_id
        command = [sys.executable, "-m", "device.cli", "-v", "central", "run", "--pki", str(pki.root),
                   "--data-dir", str(tmp_path / "central"), "--broker", f"{broker.host}:{broker.port}",
                   "--client-id", client_id]
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        wait_until(self._ready, WAIT * 2, f"{client_id} to subscribe")

    def log(self) -> str:
        return self.log_path.read_text()

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"{self.client_id} exited early:\n{self.log()}")
        return "allscope central: receiving on" in self.log()

    def stop(self) -> int:
        """SIGTERM, then the number of envelopes it reports having handled."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                assert self.process.wait(WAIT) == 0, self.log()
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"{self.client_id} did not stop on SIGTERM:\n{self.log()}")
        line = [line for line in self.log().splitlines() if "stopped after" in line][-1]
        return int(line.split("stopped after ")[1].split()[0])


@pytest.fixture
def central(tmp_path, pki):
    """The central database (SQLite) with DEVICE enrolled; the receivers open the same file."""
    database = open_central_database(tmp_path / "central" / "central.db")
    Device.delete().where(Device.device_id == DEVICE).execute()
    Device.create(device_id=DEVICE, clinic="Clinic S", cert_fingerprint=issue_device(pki, DEVICE).fingerprint)
    yield database
    database.close()


@pytest.fixture
def receivers(tmp_path, pki, mqtt_broker):
    started = []

    def start(client_id: str) -> Receiver:
        started.append(Receiver(tmp_path, pki, mqtt_broker, client_id))
        return started[-1]

    yield start
    for receiver in started:
        if receiver.process.poll() is None:
            receiver.process.kill()
            receiver.process.wait()


class DeviceClient:
    """The device side of the protocol, by hand: its TLS identity, its signing key, its ack subscription."""

    def __init__(self, pki, broker):
        issued = self.issued = issue_device(pki, DEVICE)
        self.key = Ed25519PrivateKey.generate()
        self.central_public = load_public_key(pki.enc_pub)
        self.central_sign = load_public_key(pki.sign_pub)
        self.client = mqtt_client(broker, issued.cert, issued.key, client_id=DEVICE,
                                  subscribe=[(topics.ack(DEVICE), 1)])
        self.entry = 0

    def publish(self, data: bytes) -> None:
        info = self.client.publish(topics.up(DEVICE), data, qos=1)
        info.wait_for_publish(WAIT)

    def hello(self) -> None:
        """The hello with its proof: the device's TLS key vouches for its signing key (sync.wire.keyproof)."""
        created = envelope.utc_timestamp()
        proof = keyproof.make_proof(device_id=DEVICE, signing_public=self.key,
                                    cert_pem_or_der=self.issued.cert.read_bytes(),
                                    tls_private_key=load_private_key(self.issued.key), created=created)
        self.publish(envelope.make_hello(device_id=DEVICE, signing_key=self.key, server_public=self.central_public,
                                         created=created, proof=proof))

    def record(self, record_id: int, **payload) -> bytes:
        self.entry += 1
        body = json.dumps({"id": record_id, "identifier": f"S-{record_id}", **payload}).encode()
        return envelope.seal(body, kind="record", device_id=DEVICE, record=f"patient:{record_id}", version=1,
                             entry=self.entry, created=envelope.utc_timestamp(), signing_key=self.key,
                             server_public=self.central_public)

    def acks(self, count: int) -> list[dict]:
        """The next ``count`` ack items, each from a message whose central signature verifies."""
        items = []
        while len(items) < count:
            items += parse_ack(receive(self.client).payload, self.central_sign, device_id=DEVICE).acks
        return items


def test_an_envelope_is_stored_and_the_device_gets_a_verified_ack(central, receivers, pki, mqtt_broker):
    receiver = receivers("central-a")
    device = DeviceClient(pki, mqtt_broker)
    try:
        device.hello()
        assert device.acks(1)[0]["status"] == "stored"
        device.publish(device.record(1, name="Ada"))
        (ack,) = device.acks(1)
        assert (ack["entry"], ack["record"], ack["status"]) == (1, "patient:1", "stored")
        assert ReceivedRecord.get().payload["name"] == "Ada"

        forged = envelope.seal(b'{"id": 2}', kind="record", device_id=DEVICE, record="patient:2", version=1,
                               entry=2, created=envelope.utc_timestamp(), signing_key=Ed25519PrivateKey.generate(),
                               server_public=device.central_public)
        device.publish(forged)
        (ack,) = device.acks(1)
        assert (ack["entry"], ack["status"], ack["reason"]) == (2, "rejected", "bad_signature")

        device.client.publish(topics.status(DEVICE), json.dumps({"state": "online", "backlog": 3}), qos=1,
                              retain=True).wait_for_publish(WAIT)
        wait_until(lambda: Device.get(Device.device_id == DEVICE).backlog == 3, what="the device's status")
        assert Device.get(Device.device_id == DEVICE).online
    finally:
        close(device.client)
    assert receiver.stop() == 3
    assert "bad_signature" in receiver.log()


def test_two_receivers_share_the_work_and_store_each_envelope_once(central, receivers, pki, mqtt_broker):
    first, second = receivers("central-a"), receivers("central-b")
    device = DeviceClient(pki, mqtt_broker)
    try:
        device.hello()
        assert device.acks(1)[0]["status"] == "stored"
        for record_id in range(1, 41):
            device.publish(device.record(record_id))
        acks = device.acks(40)
    finally:
        close(device.client)
    assert sorted(a["entry"] for a in acks) == list(range(1, 41))
    assert {a["status"] for a in acks} == {"stored"}
    assert ReceivedRecord.select().count() == 40
    handled = first.stop(), second.stop()
    assert sum(handled) == 41 and min(handled) > 0, handled


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_a_stopped_receiver_takes_no_share_of_the_messages(central, receivers, pki, mqtt_broker, how):
    """Issue 16: with one of two receivers gone, every record still reaches the other (no 60 s resend wait)."""
    first, second = receivers("central-a"), receivers("central-b")
    device = DeviceClient(pki, mqtt_broker)
    try:
        device.hello()
        assert device.acks(1)[0]["status"] == "stored"
        second.process.send_signal(how)
        second.process.wait(WAIT)
        wait_until(lambda: _broker_saw_leave(mqtt_broker, "central-b"), what="the broker to see central-b go")
        for record_id in range(1, 7):  # round robin would hand three of these to a kept session of central-b
            device.publish(device.record(record_id))
        acks = device.acks(6)  # each within WAIT: a share parked with central-b's session would never come
    finally:
        close(device.client)
    assert sorted((a["entry"], a["status"]) for a in acks) == [(n, "stored") for n in range(1, 7)]
    assert ReceivedRecord.select().count() == 6
    assert first.stop() == 7


def _broker_saw_leave(broker, client_id: str) -> bool:
    lines = broker.log.read_text(errors="replace").splitlines()
    return any(client_id in line and ("disconnect" in line.lower() or "closed" in line.lower()) for line in lines)


def test_receivers_report_themselves_for_the_admin_ui(central, receivers):

    first, second = receivers("central-a"), receivers("central-b")
    assert {(view.client_id, view.state) for view in listing()} == {("central-a", "running"),
                                                                   ("central-b", "running")}
    assert {view.pid for view in listing()} == {first.process.pid, second.process.pid}
    first.stop()
    second.process.kill()
    second.process.wait()
    later = utcnow() + dt.timedelta(seconds=STALE_AFTER_S + 1)
    assert {(view.client_id, view.state) for view in listing(later)} == {("central-a", "stopped"),
                                                                        ("central-b", "not responding")}


@pytest.mark.parametrize("arguments, message", [
    (["--broker", "localhost:http"], "broker address 'localhost:http': use HOST:PORT"),
    (["--pki", "{tmp}/nowhere"], "no fleet PKI in"),
])
def test_central_run_refuses_bad_settings_in_one_line(tmp_path, arguments, message):
    arguments = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    result = subprocess.run([sys.executable, "-m", "device.cli", "central", "run", "--data-dir",
                             str(tmp_path / "central"), *arguments], capture_output=True, text=True, cwd=REPO_ROOT,
                            timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
