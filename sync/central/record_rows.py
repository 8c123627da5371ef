"""Storing record versions at the central: one from a single-record envelope, many from a batch, exactly once.

Both paths check a version the same way (:func:`prepare`) and leave the same row.
Exactly once rests on the unique key (device, entity, record_id, version): a version
already stored with the same content is acknowledged as a "duplicate", with other
content it is refused as a "replay_conflict", never stored twice.

A batch (``sync/wire/batch.py``) is stored in ONE transaction: the versions already
present are read with one query (before it), the new ones inserted with one multi-row INSERT.
When another receiver stores one of them in between (the unique key refuses the
INSERT), the transaction is rolled back and the batch is stored version by version,
each on its own (the slow path, as for single envelopes), with the same outcome.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import peewee as pw

from device.store.records import db_proxy, utcnow
from sync.central.models import ENTITIES, ReceivedRecord
from sync.wire.envelope import EnvelopeError as Rejected

_RECORD_RE = re.compile(r"^([a-z]+):([0-9]{1,18})$")
_COLUMNS = ("device", "entity", "record_id", "version", "content_sha256", "payload", "created_at", "received_at",
            "patient_identifier")
_ROWS_PER_INSERT = 100  # 9 parameters a row: well under SQLite's and PostgreSQL's limits


def prepare(device: int, record: str, version: int, content_sha256: str, created: str, plaintext: bytes) -> dict:
    """The row of one record version, checked; raises Rejected("malformed")."""
    entity, record_id = split_record(record)
    if entity not in ENTITIES:
        raise Rejected("malformed", f"unknown entity {entity!r}")
    if version < 1:
        raise Rejected("malformed", f"version {version} < 1")
    try:
        payload = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Rejected("malformed", "record payload is not JSON") from None
    if not isinstance(payload, dict):
        raise Rejected("malformed", "record payload is not a JSON object")
    if "id" in payload and payload["id"] != record_id:
        raise Rejected("malformed", f"payload id {payload['id']!r} differs from {record!r}")
    return {"device": device, "entity": entity, "record_id": record_id, "version": version,
            "content_sha256": content_sha256, "payload": payload, "created_at": parse_time(created),
            "received_at": utcnow(), "patient_identifier": patient_identifier(entity, payload)}


def store_one(row: dict) -> str:
    """Store one prepared version: "stored" or "duplicate"; raises Rejected("replay_conflict")."""
    try:  # insert first: a new version is the common case, a replay the exception
        with db_proxy.atomic():
            insert_rows([row])
        return "stored"
    except pw.IntegrityError:  # this version is already here (a resend, or another receiver was faster)
        existing = _existing(row["device"], [row]).get(_key(row))
        if existing is None:
            raise
    return _replay(row, existing)


def store_many(rows: list[dict]) -> list[tuple[str, str]]:
    """Store prepared versions of one device in one transaction: (status, reason) per row, in order.

    Status "stored" / "duplicate", or "rejected" with reason "replay_conflict". Several versions
    of one record in one batch are fine (their keys differ); the same key twice is stored once.
    """
    if not rows:
        return []
    # Read before the transaction: on SQLite a transaction that reads first and then writes fails at once
    # ("database is locked", no busy wait) when another connection wrote in between. A version stored by
    # someone else after this read makes the INSERT fail on the unique key: the slow path below.
    present = _existing(rows[0]["device"], rows)
    outcome, new, seen = [], [], {}
    for row in rows:
        key = _key(row)
        known = present.get(key) or seen.get(key)
        if known is None:
            seen[key] = row["content_sha256"]
            new.append(row)
            outcome.append(("stored", ""))
        else:
            outcome.append(_outcome(row, known))
    if not new:
        return outcome
    try:
        with db_proxy.atomic():
            insert_rows(new)
        return outcome
    except pw.IntegrityError:  # another receiver stored one of them meanwhile: one by one, same outcome
        results = []
        for row in rows:
            try:
                results.append((store_one(row), ""))
            except Rejected as error:
                results.append(("rejected", error.reason))
        return results


def _outcome(row: dict, known_sha256: str) -> tuple[str, str]:
    try:
        return _replay(row, known_sha256), ""
    except Rejected as error:
        return "rejected", error.reason


def _replay(row: dict, existing_sha256: str) -> str:
    if existing_sha256 == row["content_sha256"]:
        return "duplicate"
    raise Rejected("replay_conflict", f"{row['entity']}:{row['record_id']} version {row['version']} already stored "
                                      f"with other content")


def _key(row: dict) -> tuple:
    return row["entity"], row["record_id"], row["version"]


def _existing(device: int, rows: list[dict]) -> dict[tuple, str]:
    """(entity, record_id, version) -> content_sha256 of those of ``rows`` the central already holds."""
    found: dict[tuple, str] = {}
    by_entity: dict[str, set[int]] = {}
    for row in rows:
        by_entity.setdefault(row["entity"], set()).add(row["record_id"])
    for entity, id_set in by_entity.items():  # device, entity and record_id: the unique index's prefix, no scan
        ids = sorted(id_set)
        for start in range(0, len(ids), 500):
            query = ReceivedRecord.select(ReceivedRecord.record_id, ReceivedRecord.version,
                                          ReceivedRecord.content_sha256).where(
                (ReceivedRecord.device == device) & (ReceivedRecord.entity == entity)
                & ReceivedRecord.record_id.in_(ids[start:start + 500])).tuples()
            for record_id, version, sha in query:
                found[(entity, record_id, version)] = sha
    return found


# (placeholder, quote characters, rows) -> SQL. Keyed by the dialect, not by id(database): a new database
# object can reuse a freed one's id (a PostgreSQL statement was once run on SQLite that way).
_INSERT_SQL: dict[tuple[str, str, int], str] = {}


def insert_rows(rows: list[dict]) -> None:
    """INSERT ReceivedRecord rows with SQL built once per database and row count (building it through the ORM
    cost more than decrypting the envelope). Values still pass through each field's db_value, as with insert."""
    database = db_proxy.obj
    fields = [ReceivedRecord._meta.fields[name] for name in _COLUMNS]
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        part = rows[start:start + _ROWS_PER_INSERT]
        dialect = (database.param, database.quote, len(part))
        sql = _INSERT_SQL.get(dialect)
        if sql is None:
            open_quote, close_quote = database.quote[0], database.quote[-1]  # '""' on SQLite and PostgreSQL
            columns = ", ".join(f"{open_quote}{field.column_name}{close_quote}" for field in fields)
            one = "(" + ", ".join([database.param] * len(fields)) + ")"
            table = f"{open_quote}{ReceivedRecord._meta.table_name}{close_quote}"
            sql = _INSERT_SQL[dialect] = f"INSERT INTO {table} ({columns}) VALUES " + ", ".join([one] * len(part))
        database.execute_sql(sql, [field.db_value(row[field.name]) for row in part for field in fields])


# --- helpers -----------------------------------------------------------------------------------------------

def split_record(record: str) -> tuple[str, int]:
    match = _RECORD_RE.match(record)
    if not match:
        raise Rejected("malformed", f"record {record[:80]!r} is not <entity>:<id>")
    return match.group(1), int(match.group(2))


def patient_identifier(entity: str, payload: dict) -> str:
    value = payload.get("patient_identifier")
    if not value and entity == "patient":
        value = payload.get("identifier")
    return str(value or "")[:64]


def parse_time(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise Rejected("malformed", f"created {text[:40]!r} is not an ISO 8601 time") from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value
