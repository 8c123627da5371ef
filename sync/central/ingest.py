"""Central ingestion: one envelope in, acknowledgements out. Pure logic, no MQTT (see central_service.py).

Checks, in order (the first failure rejects the message)::

    parse -> device known (unknown_device) -> not revoked (revoked) -> topic device == envelope device
    (device_mismatch) -> hello: pin the signing key (key_mismatch, key_not_registered, no_key_proof,
    bad_key_proof; see Ingestor._hello) -> signature with the pinned key
    (no_key, bad_signature) -> plaintext only when allowed (plaintext_refused) -> decrypt
    (decrypt_failed, hash_mismatch) -> replay check per (device, entity, record_id, version):
    same content = duplicate, other content = replay_conflict -> store in ONE transaction -> "stored".

Every rejection becomes an ``IngestError`` row and a log line; :meth:`Ingestor.handle`
never raises, so a hostile or broken message cannot stop a receiver. The same
path serves MQTT (``allscope central run``) and USB exports (``allscope central import``).

File chunks go through the same checks and are then stored by ``sync/central/files.py``.
Refusals are ``EnvelopeError(reason, message)`` (``Rejected`` here) whether the envelope
module or this one refuses.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import peewee as pw

from device.store.records import db_proxy, utcnow
from sync.central import record_rows
from sync.central.files import store_chunk
from sync.central.models import Device, IngestError
from sync.wire import batch as batch_mod
from sync.wire import envelope as env_mod
from sync.wire import keyproof, keys
from sync.wire.acks import ack_item
from sync.wire.envelope import EnvelopeError as Rejected
from sync.wire.keyproof import normal_fingerprint
from sync.wire.status import parse_status

log = logging.getLogger("allscope.central")


class _DeviceRow(NamedTuple):
    id: int
    device_id: str
    state: str
    signing_public_key: str
    cert_fingerprint: str
    signing_key_fingerprint: str


MQTT, USB = "mqtt", "usb"  # how an envelope arrived (Ingestor.handle's ``via``)


@dataclass
class Ingestor:
    """Stores what devices send into the central database bound to ``db_proxy``.

    ``server_private`` is the central's X25519 key (``central_enc_x25519.key``);
    ``data_dir`` receives assembled files under ``files/``. ``allow_plaintext``
    accepts unencrypted envelopes (the bench's encryption-off run only).
    """

    server_private: object
    data_dir: Path
    allow_plaintext: bool = False
    counts: collections.Counter = field(default_factory=collections.Counter)

    def __post_init__(self):
        self.data_dir = Path(self.data_dir)
        self._keys: dict[str, object] = {}      # pinned PEM -> loaded key
        self._touched: dict[int, float] = {}    # device row id -> monotonic time of the last last_seen_at write

    # --- entry points ------------------------------------------------------------------------------------

    def handle(self, topic_device_id: str | None, payload: bytes, *, via: str = MQTT) -> list[dict]:
        """Ingest one envelope; return the acks for the device (empty when nothing identifies an entry).

        ``topic_device_id`` is the device the transport authenticated (the MQTT topic, which the
        broker's ACL ties to the TLS certificate), or the export's device for a USB import, which
        authenticates nothing: ``via="usb"`` then, and no hello from it can choose a device's key.
        """
        envelope = None
        try:
            envelope = env_mod.parse(payload)
            acks = self._ingest(topic_device_id, envelope, via)
        except Rejected as error:  # the envelope module's refusals and ours alike
            return self._rejection(topic_device_id, envelope, payload, error.reason, str(error))
        except Exception as error:  # noqa: BLE001 - a receiver must survive anything a message causes
            log.exception("internal error on a message from %s", topic_device_id)
            if isinstance(error, (pw.OperationalError, pw.InterfaceError)):
                _reconnect_later()
            return self._rejection(topic_device_id, envelope, payload, "internal_error",
                                   f"{type(error).__name__}: {' '.join(str(error).split())}"[:500])
        if isinstance(acks, dict):
            acks = [acks]
        for ack in acks:
            if ack["status"] != "rejected":  # rejected batch items are counted where they are recorded
                self.counts[ack["status"]] += 1
        return acks

    def handle_status(self, topic_device_id: str, payload: bytes, retained: bool = False) -> None:
        """A device's status ({"state": "online", "backlog": N, "software": ..., "model": {...}}, or the last
        will "offline"; ``sync/wire/status.py``).

        ``retained``: the broker's stored copy, replayed when a receiver subscribes; it says
        nothing about when the device was last seen, so last_seen_at is left alone.
        """
        if not payload:
            return  # a cleared retained message
        try:
            status = parse_status(payload)
            update = {Device.online: status["state"] == "online"}
            if not retained:
                update[Device.last_seen_at] = utcnow()
            if "backlog" in status:
                update[Device.backlog] = status["backlog"]
            if "software" in status:
                update[Device.software_version] = status["software"]
            if "model" in status:
                update.update({Device.model_id: status["model"]["id"], Device.model_name: status["model"]["name"],
                               Device.model_version: status["model"]["version"]})
            with db_proxy.atomic():
                changed = Device.update(update).where(Device.device_id == topic_device_id).execute()
            if not changed:
                self._record_error(topic_device_id, "unknown_device", "status from a device that is not enrolled")
        except (ValueError, UnicodeDecodeError) as error:
            self._record_error(topic_device_id, "malformed_status", " ".join(str(error).split())[:500])
        except Exception as error:  # noqa: BLE001
            log.exception("internal error on a status from %s", topic_device_id)
            self._record_error(topic_device_id, "internal_error", f"status: {type(error).__name__}: {error}"[:500])

    # --- the checks --------------------------------------------------------------------------------------

    def _ingest(self, topic_device_id: str | None, envelope, via: str = MQTT) -> dict | list[dict]:
        device = self._device(envelope.device)
        if device is None:
            raise Rejected("unknown_device", f"device {envelope.device!r} is not enrolled")
        if device.state == "revoked":
            raise Rejected("revoked", f"device {envelope.device!r} was revoked")
        if topic_device_id is not None and topic_device_id != envelope.device:
            raise Rejected("device_mismatch", f"envelope of {envelope.device!r} arrived as {topic_device_id!r}")
        if envelope.kind == "hello":
            return self._hello(device, envelope, via)
        if not device.signing_public_key:
            if via == USB:
                raise Rejected("no_key", f"no signing key pinned or registered for {device.device_id}: register "
                                         f"the key the device printed at enrolment (allscope central "
                                         f"register-key), then import again")
            raise Rejected("no_key", "no signing key pinned yet: the device must send its hello first")
        listed = batch_mod.items(envelope) if envelope.kind == batch_mod.KIND else None
        env_mod.verify(envelope, self._public_key(device.signing_public_key))
        plaintext = self._open(envelope)
        self._touch(device)
        if listed is not None:
            return self._batch(device, envelope, listed, plaintext)
        if envelope.kind == "chunk":
            return store_chunk(device.id, envelope, plaintext, self.data_dir)
        return self._record(device, envelope, plaintext)

    @staticmethod
    def _device(device_id: str) -> "_DeviceRow | None":
        """The device's row by one plain query: this runs for every message, peewee's query building is not free."""
        row = db_proxy.execute_sql(
            f'SELECT "id", "device_id", "state", "signing_public_key", "cert_fingerprint", '
            f'"signing_key_fingerprint" FROM "device" WHERE "device_id" = {db_proxy.param}', (device_id,)).fetchone()
        return _DeviceRow(*row) if row else None

    def _public_key(self, pem: str):
        if pem not in self._keys:
            self._keys[pem] = keys.ed25519_public_from_pem(pem)
        return self._keys[pem]

    def _open(self, envelope) -> bytes:
        return env_mod.decrypt(envelope, self.server_private, require_encryption=not self.allow_plaintext)

    def _hello(self, device: "_DeviceRow", envelope, via: str = MQTT) -> dict:
        """Pin the device's Ed25519 key from its hello, only when the key is bound to the enrolment.

        The hello is self-signed with the key it announces. A key already pinned must match (key_mismatch).
        Otherwise the key is pinned when it is the one an admin registered (``allscope central register-key``;
        any other key: key_not_registered), or, with none registered and over MQTT only, when the hello
        carries a proof signed by the TLS certificate recorded at enrolment (sync.wire.keyproof: no_key_proof,
        bad_key_proof). A USB import never chooses a key: it needs a pinned or registered one.
        """
        public = env_mod.hello_key(envelope)
        env_mod.verify(envelope, public)
        pem = keys.public_pem(public).decode("ascii")
        announced = keys.fingerprint(public)
        pinned = device.signing_public_key
        if pinned:
            if keys.raw_public(keys.ed25519_public_from_pem(pinned)) != keys.raw_public(public):
                raise Rejected("key_mismatch", f"hello with the signing key {announced}, not the pinned one "
                                               f"(re-enrol the device, or register its key)")
        elif device.signing_key_fingerprint:
            if normal_fingerprint(device.signing_key_fingerprint) != normal_fingerprint(announced):
                raise Rejected("key_not_registered", f"hello with the signing key {announced}, not the one "
                                                     f"registered for {device.device_id}")
        elif via == USB:
            raise Rejected("key_not_registered", f"a USB import cannot pin a signing key: register the key "
                                                 f"{announced} for {device.device_id} if the device printed it at "
                                                 f"enrolment (allscope central register-key), then import again")
        else:
            keyproof.check_proof(envelope.extra.get("proof"), device_id=device.device_id, signing_public=public,
                                 enrolled_cert_fingerprint=device.cert_fingerprint)
        with db_proxy.atomic():
            # Guarded on the row as read, so two receivers cannot pin two keys and a re-enrolment or a key
            # registration in between is not overwritten by what was checked against the old row.
            changed = Device.update(signing_public_key=pinned or pem, last_seen_at=utcnow()).where(
                (Device.id == device.id) & (Device.signing_public_key == pinned)
                & (Device.cert_fingerprint == device.cert_fingerprint)
                & (Device.signing_key_fingerprint == device.signing_key_fingerprint)).execute()
        if not changed:
            raise Rejected("key_mismatch", "the device's enrolment or key changed meanwhile; send the hello again")
        if not pinned:
            log.info("pinned the signing key of %s (%s, %s)", device.device_id, announced,
                     "registered by an admin" if device.signing_key_fingerprint else "proved by its certificate")
        return ack_item(envelope, "duplicate" if pinned else "stored")

    def _record(self, device: "_DeviceRow", envelope, plaintext: bytes) -> dict:
        if envelope.kind != "record":
            raise Rejected("malformed", f"unknown kind {envelope.kind!r}")
        row = record_rows.prepare(device.id, envelope.record, envelope.version, envelope.content_sha256,
                                  envelope.created, plaintext)
        return ack_item(envelope, record_rows.store_one(row))

    def _batch(self, device: "_DeviceRow", envelope, listed: list[dict], plaintext: bytes) -> list[dict]:
        """A batch envelope (sync/wire/batch.py), already verified and decrypted: one ack item per entry.

        An item that fails its own checks (hash, JSON, id) is rejected alone; the others are stored
        in one transaction (``record_rows.store_many``).
        """
        acks: list[dict | None] = []
        rows, places = [], []
        for item, piece in zip(listed, batch_mod.split(listed, plaintext)):
            try:
                if hashlib.sha256(piece).hexdigest() != item["sha256"]:
                    raise Rejected("hash_mismatch", "content does not match its sha256")
                rows.append(record_rows.prepare(device.id, item["record"], item["version"], item["sha256"],
                                                item["created"], piece))
                places.append(len(acks))
                acks.append(None)
            except Rejected as error:
                acks.append(self._item_rejected(device.device_id, item, error.reason, str(error)))
        for place, row, (status, reason) in zip(places, rows, record_rows.store_many(rows)):
            item = listed[place]
            if status == "rejected":
                acks[place] = self._item_rejected(device.device_id, item, reason, f"{item['record']} version "
                                                  f"{item['version']} already stored with other content")
            else:
                acks[place] = _item_ack(item, status)
        return acks

    def _item_rejected(self, device_id: str, item: dict, reason: str, detail: str) -> dict:
        self._record_error(device_id, reason, f"{detail} (batch item {item['record']} v{item['version']} "
                                              f"entry {item['entry']})")
        self.counts["rejected"] += 1
        return _item_ack(item, "rejected", reason)

    # --- bookkeeping -------------------------------------------------------------------------------------

    def _touch(self, device: "_DeviceRow") -> None:
        """Device.last_seen_at, written at most every 10 s per device (not one extra write per message)."""
        now = time.monotonic()
        if now - self._touched.get(device.id, -1e9) > 10:
            Device.update(last_seen_at=utcnow()).where(Device.id == device.id).execute()
            self._touched[device.id] = now

    def _rejection(self, topic_device_id, envelope, payload: bytes, reason: str, detail: str) -> list[dict]:
        claimed = getattr(envelope, "device", None) or topic_device_id or ""
        where = f" ({envelope.kind} {envelope.record} v{envelope.version} entry {envelope.entry})" if envelope else ""
        self._record_error(claimed, reason, f"{detail}{where}")
        self.counts["rejected"] += 1
        entry = _entry_of(envelope, payload)
        if entry is None:
            return []
        if envelope is not None and envelope.kind == batch_mod.KIND:
            try:  # every entry of the batch learns why, when the items themselves are readable
                return [_item_ack(item, "rejected", reason) for item in batch_mod.items(envelope)]
            except Rejected:
                pass
        if envelope is not None:
            return [ack_item(envelope, "rejected", reason)]
        return [{"entry": entry[0], "record": entry[1], "version": entry[2], "status": "rejected", "reason": reason}]

    def _record_error(self, device_id: str, reason: str, detail: str) -> None:
        self.counts[f"error:{reason}"] += 1
        log.warning("rejected a message from %s: %s: %s", device_id or "?", reason, detail)
        try:
            with db_proxy.atomic():
                IngestError.create(device_id=str(device_id)[:64], reason=reason[:32], detail=detail[:2000])
        except Exception:  # noqa: BLE001 - the database itself may be what failed
            log.exception("could not record the ingestion error")


def _reconnect_later() -> None:
    """Drop a connection the server may have closed (PostgreSQL restart): the next query opens a new one."""
    try:
        db_proxy.close()
    except Exception:  # noqa: BLE001 - it is broken already; all that matters is not to reuse it
        log.debug("closing the broken database connection failed", exc_info=True)


# --- helpers -----------------------------------------------------------------------------------------------

def _item_ack(item: dict, status: str, reason: str = "") -> dict:
    return {"entry": item["entry"], "record": item["record"], "version": item["version"], "status": status,
            "reason": reason}


def _entry_of(envelope, payload: bytes):
    """(entry, record, version) of a rejected message: from the parsed envelope, else best effort from the JSON."""
    if envelope is not None:
        return envelope.entry, envelope.record, envelope.version
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError, TypeError):
        return None
    if isinstance(data, dict) and type(data.get("entry")) is int and isinstance(data.get("record"), str):
        version = data.get("version") if type(data.get("version")) is int else 0
        return data["entry"], data["record"][:80], version
    return None
