"""The devices of ``allscope bench fleet`` (and of the fleet test): one process speaking for many devices.

Each simulated device has what a real one has on the wire: its own TLS client certificate
(client id = certificate CN = device id, so the broker's ACL applies per device), its own
Ed25519 signing key announced by a hello with the enrolment proof, and records sealed as
the agent seals them (``sync.wire.batch`` envelopes of up to ``batch`` entries). It keeps
the outbox's rule: an entry counts as delivered only on the central's signed ack of that
entry; an envelope without its acks after ``resend_s`` is published again (the central
answers "duplicate" for what it holds already).

Not the agent itself: no SQLite outbox, no chunked files. 200 real agents would be 200
processes, which a 2-core machine cannot run side by side; the figures are about the
broker, the receivers and the database, which see exactly what real devices send.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import threading
import time

from device.errors import AllscopeError
from sync.wire import acks as acks_mod
from sync.wire import batch as batch_mod
from sync.wire import envelope as env_mod
from sync.wire import keyproof, keys, topics

CREATED = "2026-12-01T09:00:00.000Z"


def _payload(device_id: str, number: int) -> bytes:
    """A patient row of about 600 bytes, different for every device and number."""
    return json.dumps({"id": number, "identifier": f"{device_id}-{number:05d}", "name": f"Fleet Patient {number}",
                       "date_of_birth": str(dt.date(1950 + number % 60, 1 + number % 12, 1)), "sex": "female",
                       "referring_clinician": f"Dr. {device_id}", "symptoms": "fatigue, pallor",
                       "wbc": 11.5 + number % 40, "hemoglobin": 9.5, "platelets": 120.0 + number % 90,
                       "notes": "Peripheral smear after an automated differential flagged atypical cells; "
                                "reviewed by a pathologist." * 2}, sort_keys=True).encode()


class SimulatedDevice:
    def __init__(self, pki, broker, device_id: str, records: int, batch: int, central_public, server_public):
        from sync.fleet.pki import load_private_key

        self.device_id = device_id
        self.signing_key = keys.generate_ed25519()
        self.central_public = central_public
        cert, key = pki.cert_path(device_id), pki.key_path(device_id)
        created = env_mod.utc_timestamp()
        proof = keyproof.make_proof(device_id=device_id, signing_public=self.signing_key,
                                    cert_pem_or_der=cert.read_bytes(), tls_private_key=load_private_key(key),
                                    created=created)
        self.hello = env_mod.make_hello(device_id=device_id, signing_key=self.signing_key,
                                        server_public=server_public, created=created, proof=proof)
        entries = [(number, f"patient:{number}", 1, CREATED, _payload(device_id, number))
                   for number in range(1, records + 1)]
        self.expected = {(device_id, "patient", n, 1): batch_mod.item_of(entry=n, record=r, version=v, created=c,
                                                                           plaintext=p)["sha256"]
                         for n, r, v, c, p in entries}
        self.envelopes = []  # (sealed bytes, entry ids)
        for start in range(0, len(entries), batch):
            group = entries[start:start + batch]
            data = batch_mod.seal_batch(group, device_id=device_id, signing_key=self.signing_key,
                                        server_public=server_public) if len(group) > 1 else \
                env_mod.seal(group[0][4], kind="record", device_id=device_id, record=group[0][1], version=1,
                             entry=group[0][0], created=CREATED, signing_key=self.signing_key,
                             server_public=server_public)
            self.envelopes.append((data, {e[0] for e in group}))
        self.pending: set[int] = set()
        self.greeted = threading.Event()
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.client = self._client(broker, cert, key, pki.ca_cert)

    def _client(self, broker, cert, key, ca):
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.device_id, protocol=mqtt.MQTTv5)
        client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key), cert_reqs=ssl.CERT_REQUIRED,
                       tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.max_inflight_messages_set(100)
        client.on_connect = lambda c, *_: c.subscribe(topics.ack(self.device_id), qos=1)
        client.on_subscribe = lambda c, *_: c.publish(topics.up(self.device_id), self.hello, qos=1)
        client.on_message = self._on_ack
        client.connect_async(broker.host, broker.port, keepalive=60, clean_start=True)
        return client

    def _on_ack(self, client, userdata, message) -> None:
        try:
            ack = acks_mod.parse_ack(message.payload, self.central_public, device_id=self.device_id)
        except acks_mod.AckError:
            return
        with self.lock:
            for item in ack.acks:
                if item["status"] not in acks_mod.DONE:
                    continue
                if item["record"] == env_mod.HELLO_RECORD:
                    self.greeted.set()
                else:
                    self.pending.discard(item["entry"])
            if self.greeted.is_set() and not self.pending:
                self.done.set()

    def send(self, envelopes) -> None:
        with self.lock:
            for _, entries in envelopes:
                self.pending |= entries
            self.done.clear()
        for data, _ in envelopes:
            self.client.publish(topics.up(self.device_id), data, qos=1)

    def unacked(self) -> list:
        with self.lock:
            return [(data, entries) for data, entries in self.envelopes if entries & self.pending]


class SimulatedFleet:
    def __init__(self, pki, broker, names: list[str], records: int, batch: int = 100, resend_s: float = 60.0):
        central_public = keys.load_ed25519_public(pki.sign_pub)
        server_public = keys.load_x25519_public(pki.enc_pub)
        self.devices = [SimulatedDevice(pki, broker, name, records, batch, central_public, server_public)
                        for name in names]
        self.expected = {key: sha for device in self.devices for key, sha in device.expected.items()}
        self.messages = sum(len(device.envelopes) for device in self.devices)
        self.resend_s = resend_s
        self.resent = 0
        self.rounds = 0

    def connect_and_greet(self, timeout: float = 180.0) -> None:
        """Connect every device (each sends its hello once subscribed) and wait until the central greeted all."""
        for device in self.devices:
            device.greeted.clear()
            if self.rounds:
                device.client.reconnect()  # after disconnect(): the same broker, a clean session
            device.client.loop_start()
        self.rounds += 1
        deadline = time.monotonic() + timeout
        for device in self.devices:
            if not device.greeted.wait(max(0.1, deadline - time.monotonic())):
                raise AllscopeError(f"{device.device_id}: no hello ack from the central within {timeout:.0f} s")

    def send_all(self, stall_s: float = 300.0) -> None:
        """Every device publishes all its envelopes; returns when every entry of every device is acked."""
        for device in self.devices:
            device.send(device.envelopes)
        last_progress, left = time.monotonic(), None
        since_resend = time.monotonic()
        while True:
            waiting = [d for d in self.devices if not d.done.is_set()]
            if not waiting:
                return
            count = sum(len(d.pending) for d in waiting)
            if count != left:
                left, last_progress = count, time.monotonic()
            elif time.monotonic() - last_progress > stall_s:
                raise AllscopeError(f"no progress for {stall_s:.0f} s: {count} records of {len(waiting)} devices "
                                    f"without an ack")
            if time.monotonic() - since_resend > self.resend_s:
                for device in waiting:
                    again = device.unacked()
                    self.resent += len(again)
                    device.send(again)
                since_resend = time.monotonic()
            time.sleep(0.05)

    def disconnect(self) -> None:
        for device in self.devices:
            device.client.disconnect()
            device.client.loop_stop()
