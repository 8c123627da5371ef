"""The device's sync agent: settings, back-off, chunk sizes, acknowledgement handling, status and last will.

Real parts: a real enrolment bundle from the test PKI, the device's SQLite with
the outbox triggers, real envelopes and acks signed with the PKI's central key,
and (for the status tests) a real mosquitto with mutual TLS.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from sync_agent_helpers import REPO_ROOT, enrol_device, populate
from sync_fixtures import close, mqtt_client, receive

from sync.agent.config import ConfigError, load_config
from sync.agent.media import MediaFile, chunk_bytes, file_names
from sync.wire import acks as acks_mod
from sync.wire import envelope as env_mod
from sync.wire import keys, topics

DEVICE = "clinic-agent-1"


# --- settings ------------------------------------------------------------------------------------------

def test_an_unenrolled_device_is_told_to_enrol(tmp_path):
    with pytest.raises(ConfigError, match="not enrolled.*allscope device enrol"):
        load_config(tmp_path)
    run = subprocess.run([sys.executable, "-m", "device.cli", "sync", "run", "--data-dir", str(tmp_path)],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "allscope device enrol" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("settings, message", [
    ({"media": "video"}, "media must be one of frames, crops, none"),
    ({"window": 0}, "window must be between"),
    ({"max_message_bytes": 1000}, "max_message_bytes must be between"),
    ({"ack_timeout_s": "soon"}, "ack_timeout_s must be a number"),
    ({"windw": 5}, "unknown sync setting 'windw'"),
    ({"backoff_initial_s": 30, "backoff_max_s": 10}, "backoff_initial_s must not exceed backoff_max_s"),
])
def test_bad_agent_settings_are_one_line_naming_the_key(pki, tmp_path, settings, message):
    enrol_device(pki, None, tmp_path, DEVICE, **settings)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(tmp_path)
    assert "\n" not in str(caught.value)


def test_bundle_and_overrides_make_the_config(pki, tmp_path):
    enrol_device(pki, None, tmp_path, DEVICE, window=17, media="frames")
    config = load_config(tmp_path, {"media": "none", "max_message_bytes": None})
    assert (config.device_id, config.broker_port, config.window) == (DEVICE, 8883, 17)
    assert config.media == "none"  # the command line wins over agent.json
    assert config.max_message_bytes == 256 * 1024
    bundle = json.loads((tmp_path / "sync" / "bundle.json").read_text())
    bundle["broker_port"] = 70000
    (tmp_path / "sync" / "bundle.json").write_text(json.dumps(bundle))
    with pytest.raises(ConfigError, match="broker_port must be a port number"):
        load_config(tmp_path)
    (tmp_path / "sync" / "device.key").unlink()
    bundle["broker_port"] = 8883
    (tmp_path / "sync" / "bundle.json").write_text(json.dumps(bundle))
    with pytest.raises(ConfigError, match="device.key is missing"):
        load_config(tmp_path)


def test_backoff_doubles_to_the_cap_with_bounded_jitter():
    from sync.agent.connection import backoff_delays

    delays = backoff_delays(1.0, 60.0, 0.2, random.Random(7))
    values = [next(delays) for _ in range(12)]
    nominal = [min(60.0, 2.0 ** i) for i in range(12)]
    for value, base in zip(values, nominal):
        assert 0.8 * base <= value <= 1.2 * base
    assert len({round(v / b, 6) for v, b in zip(values, nominal)}) > 1, "no jitter"
    assert max(values) <= 72.0 and values[-1] >= 48.0


# --- media ---------------------------------------------------------------------------------------------

def test_media_policy_picks_frames_crops_or_nothing():
    payload = {"image_path": "images/ab/ab.png", "cells": [{"crop_path": "crops/1/0000.png"},
                                                           {"crop_path": "crops/1/0001.png"}, {"crop_path": ""}]}
    assert file_names(payload, "frames") == ["images/ab/ab.png", "crops/1/0000.png", "crops/1/0001.png"]
    assert file_names(payload, "crops") == ["crops/1/0000.png", "crops/1/0001.png"]
    assert file_names(payload, "none") == []


@pytest.mark.parametrize("limit", [8 * 1024, 64 * 1024, 256 * 1024])
def test_a_sealed_chunk_never_exceeds_max_message_bytes(tmp_path, limit):
    signing, server = keys.generate_ed25519(), keys.generate_x25519()
    size = chunk_bytes(limit)
    assert size > limit // 2  # the overhead is base64 and a header, not a second copy
    path = tmp_path / "frame.png"
    path.write_bytes(random.Random(1).randbytes(size * 3 + 5))
    media = MediaFile("n" * 255, path, "a" * 64, path.stat().st_size)
    assert media.count(size) == 4
    for index in range(media.count(size)):
        data = env_mod.seal(media.read_chunk(index, size), kind="chunk", device_id="d" * 64,
                            record=f"file:{'a' * 64}", version=1, entry=2 ** 62, created=env_mod.utc_timestamp(),
                            signing_key=signing, server_public=server.public_key(), extra=media.extra(index, size))
        assert len(data) <= limit


# --- acknowledgements ----------------------------------------------------------------------------------

@pytest.fixture
def agent(pki, tmp_path):
    """A SyncAgent on an enrolled device with one patient's records queued (not connected)."""
    from sync.agent.service import SyncAgent

    enrol_device(pki, None, tmp_path, DEVICE)
    populate(tmp_path, 1, amend=False)
    return SyncAgent(load_config(tmp_path))


def _ack(pki, items, device=DEVICE, key=None) -> bytes:
    return acks_mod.make_ack(device_id=device, acks=items, signing_key=key or keys.load_ed25519_private(pki.sign_key))


def _items(entries, status="stored", reason=""):
    return [{"entry": e.id, "record": e.record, "version": e.version, "status": status, "reason": reason}
            for e in entries]


def test_only_a_verified_central_ack_removes_entries(pki, agent):
    from sync.agent.outbox import OutboxEntry, get_state

    entries = list(OutboxEntry.select().order_by(OutboxEntry.id))
    assert len(entries) >= 4
    first, second, third = entries[0], entries[1], entries[2]
    # Forged (another key), for another device, for another version: nothing leaves the outbox.
    assert agent.handle_ack(_ack(pki, _items([first]), key=keys.generate_ed25519())) == 0
    assert agent.handle_ack(_ack(pki, _items([first]), device="clinic-agent-2")) == 0
    wrong = dict(_items([first])[0], version=first.version + 1)
    assert agent.handle_ack(_ack(pki, [wrong])) == 0
    assert agent.handle_ack(b'{"format": "allscope-ack"}') == 0
    assert agent.counts["bad_acks"] == 3
    assert OutboxEntry.select().count() == len(entries)
    # Genuine: "stored" and "duplicate" remove, "rejected" keeps the entry with its reason.
    assert agent.handle_ack(_ack(pki, _items([first]) + _items([second], "duplicate"))) == 2
    assert agent.handle_ack(_ack(pki, _items([third], "rejected", "replay_conflict"))) == 0
    kept = OutboxEntry.get_by_id(third.id)
    assert "replay_conflict" in kept.last_error
    assert third.id in agent.window.retry_after
    assert OutboxEntry.select().count() == len(entries) - 2
    assert get_state("last_ack_at")


def test_hello_ack_confirms_the_key_and_chunk_acks_complete_files(pki, agent):
    from sync.agent.outbox import file_complete, file_progress, get_state

    assert not agent.hello_confirmed
    hello = {"entry": 0, "record": env_mod.HELLO_RECORD, "version": 1, "status": "stored", "reason": ""}
    agent.handle_ack(_ack(pki, [hello]))
    assert agent.hello_confirmed and get_state("hello_key") == agent.key_fingerprint
    sha = "b" * 64
    file_progress(sha, name="crops/1/0000.png", size=100, chunks=2)
    chunk = {"entry": 5, "record": f"file:{sha}", "version": 1, "status": "stored", "reason": "", "index": 0}
    agent.handle_ack(_ack(pki, [chunk]))
    assert not file_complete(sha)
    agent.handle_ack(_ack(pki, [dict(chunk, index=1, status="duplicate")]))
    assert file_complete(sha)
    refused = dict(hello, status="rejected", reason="key_mismatch")
    agent.handle_ack(_ack(pki, [refused]))
    assert not agent.hello_confirmed and "key_mismatch" in get_state("last_error")


# --- status on the broker --------------------------------------------------------------------------------

def test_retained_online_status_with_backlog_then_offline(pki, mqtt_broker, tmp_path):
    """No central runs: the agent connects, reports online with its backlog, and says offline on SIGTERM
    (its own retained message) and on SIGKILL (the broker's last will)."""
    device = enrol_device(pki, mqtt_broker, tmp_path, DEVICE, status_interval_s=1)
    populate(tmp_path, 1, amend=False)
    from device.store.records import Capture, utcnow  # populate bound the device database

    identity = {"short_id": "3f2a9c1b", "name": "allscope_blast", "version": "2.0.0", "sha256": "ab" * 32}
    Capture.update(model_identity=identity, analysed_at=utcnow()).execute()  # the model it analysed with
    backlog = len(device.outbox())
    watcher = mqtt_client(mqtt_broker, pki.cert_path("central"), pki.key_path("central"),
                          subscribe=[(topics.status(DEVICE), 1)])
    try:
        agent = device.run_agent()
        agent.wait_for_line("connected to")
        online = _next_status(watcher, "online")
        from importlib import metadata

        assert online == {"state": "online", "backlog": backlog, "software": metadata.version("allscope"),
                          "model": {"id": "3f2a9c1b", "name": "allscope_blast", "version": "2.0.0"}}
        assert agent.stop() == 0
        assert _next_status(watcher, "offline")["state"] == "offline"
        assert device.outbox() and len(device.outbox()) == backlog, "nothing may leave without a central ack"

        agent = device.run_agent()
        agent.wait_for_line("connected to")
        _next_status(watcher, "online")
        agent.kill()
        assert _next_status(watcher, "offline") == {"state": "offline"}  # the last will
    finally:
        close(watcher)


def _next_status(client, state: str) -> dict:
    for _ in range(50):
        message = receive(client)
        status = json.loads(message.payload)
        if status["state"] == state:
            return status
    pytest.fail(f"no {state} status")
