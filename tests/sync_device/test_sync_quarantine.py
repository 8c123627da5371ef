"""An outbox entry that cannot be sent is quarantined (kept, with its reason) and everything behind it goes.

Before: an entry whose envelope exceeded the 4 MB envelope limit made the agent raise and exit (and systemd
restart it onto the same entry, for ever), and ``allscope sync export`` failed the same way; one between the
broker's packet limit (2 MB in the shipped mosquitto configuration) and 4 MB made the broker drop the
connection on every attempt. Real parts: mosquitto with mutual TLS, ``allscope sync run`` and
``allscope central run`` processes, the device's SQLite with its outbox triggers, the CLI for the rest.
"""

from __future__ import annotations

import json
import subprocess
import sys

from figures import report
from sync_agent_helpers import (
    REPO_ROOT,
    enrol_device,
    populate,
    register_signing_key,
    setup_central,
    start_central,
)

HUGE = 5 * 1024 * 1024  # notes whose envelope is above the 4 MB envelope limit
BIG = 2 * 1024 * 1024   # above max_message_bytes (256 KiB by default) and the broker's 2 MB packet limit


def _cli(*args, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "device.cli", *args], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=180)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def _patient(data_dir, identifier: str, notes: str) -> None:
    """A patient written by the device's own models (the outbox trigger queues it), with long notes."""
    from device.store.records import Patient, db_proxy, open_database

    open_database(data_dir / "allscope.db")
    with db_proxy.atomic():
        Patient.create(identifier=identifier, name="Long Notes", notes=notes)
    db_proxy.close()


def _status(device) -> dict:
    return json.loads(_cli("sync", "status", "--data-dir", str(device.data_dir), "--json").stdout)


def test_the_agent_quarantines_what_it_cannot_send_and_syncs_the_rest(pki, mqtt_broker, tmp_path):
    device_id = "clinic-quarantine-1"
    central = setup_central(tmp_path / "central", pki, [(device_id, "Clinic Q")])
    device = enrol_device(pki, mqtt_broker, tmp_path / "device", device_id, ack_timeout_s=3,
                          backoff_initial_s=0.2, backoff_max_s=2)
    _patient(device.data_dir, "MRN-HUGE", "x" * HUGE)
    _patient(device.data_dir, "MRN-BIG", "y" * BIG)
    populate(device.data_dir, 1, amend=False)  # queued behind the two
    queued = device.outbox()
    huge, big, rest = queued[0], queued[1], queued[2:]

    receiver = start_central(central, mqtt_broker)
    try:
        agent = device.run_agent("--until-empty")
        assert agent.wait(120) == 0, agent.tail()
    finally:
        receiver.stop()
    assert sorted(row[1:4] for row in central.records()) == sorted(row[:3] for row in rest)
    assert device.outbox() == [huge, big], "quarantined entries are kept, nothing else is left"
    assert central.errors() == {}
    warnings = [line for line in agent.lines if "quarantined outbox entry" in line]
    assert len(warnings) == 2, agent.tail()
    assert "exceeds the 4194304-byte limit" in warnings[0] and "max_message_bytes" in warnings[1]

    status = _status(device)
    assert status["quarantined"] == 2 and status["pending"] == 2
    reasons = {item["record"]: item["reason"] for item in status["quarantined_entries"]}
    assert "4194304-byte limit" in reasons[f"patient:{huge[1]}"]
    assert "max_message_bytes" in reasons[f"patient:{big[1]}"]
    text = _cli("sync", "status", "--data-dir", str(device.data_dir)).stdout
    assert "2 quarantined: cannot be sent" in text
    listed = [line for line in text.splitlines() if line.startswith("quarantined entry")]
    assert len(listed) == 2 and all("\n" not in line for line in listed)

    # A later start does not try them again (and does not die on them): it finishes at once.
    again = device.run_agent("--until-empty")
    receiver = start_central(central, mqtt_broker)
    try:
        assert again.wait(60) == 0, again.tail()
    finally:
        receiver.stop()
    assert not [line for line in again.lines if "quarantined outbox entry" in line]
    assert device.outbox() == [huge, big]
    report("sync: oversized outbox entries quarantined while the rest synced", 2)


def test_the_export_quarantines_what_it_cannot_seal_and_carries_the_rest(pki, tmp_path):
    device_id = "clinic-quarantine-2"
    central = setup_central(tmp_path / "central", pki, [(device_id, "Offline Clinic Q")])
    device = enrol_device(pki, None, tmp_path / "device", device_id)
    _patient(device.data_dir, "MRN-HUGE", "x" * HUGE)
    _patient(device.data_dir, "MRN-BIG", "y" * BIG)  # no broker on a USB stick: this one fits an envelope
    populate(device.data_dir, 1, amend=False)
    queued = device.outbox()
    huge = queued[0]
    usb = tmp_path / "usb"
    usb.mkdir()

    exported = _cli("sync", "export", "--to", str(usb), "--data-dir", str(device.data_dir))
    assert f"exported {len(queued) - 1} pending entries" in exported.stdout
    assert "1 entries quarantined, not exported" in exported.stdout
    (warning,) = exported.stderr.splitlines()
    assert warning.startswith("warning: quarantined outbox entry") and "4194304-byte limit" in warning
    (folder,) = list(usb.iterdir())
    assert json.loads((folder / "manifest.json").read_text())["entries"] == len(queued) - 1
    assert _status(device)["quarantined"] == 1

    register_signing_key(central, device)
    _cli("central", "import", str(usb), "--data-dir", str(central.root), "--central-db", str(central.database),
         "--pki", str(pki.root))
    _cli("sync", "import-acks", str(usb), "--data-dir", str(device.data_dir))
    assert device.outbox() == [huge]
    assert sorted(row[1:4] for row in central.records()) == sorted(row[:3] for row in queued[1:])
    status = _status(device)
    assert status["quarantined"] == 1 and status["quarantined_entries"][0]["entry"] > 0
    report("sync: oversized outbox entries quarantined while the rest synced", 1)
