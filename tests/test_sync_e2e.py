"""End-to-end sync through a real mosquitto with mutual TLS: device records -> agent -> broker -> central.

Real parts only: the fleet PKI, mosquitto with the shipped configuration, the
agent as an ``allscope sync run`` process, the central as ``allscope central run``,
SQLite databases on disk, crops and frames cut from the bundled demo frames.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

from sync_agent_helpers import (REPO_ROOT, assert_synced_exactly_once, crop_hashes, enrol_device, populate,
                                setup_central, start_central)


def test_records_crops_and_report_versions_arrive_once(pki, mqtt_broker, tmp_path):
    central = setup_central(tmp_path / "central", pki, [("clinic-e2e-1", "Clinic One")])
    device = enrol_device(pki, mqtt_broker, tmp_path / "device", "clinic-e2e-1", max_message_bytes=8 * 1024)
    counts = populate(device.data_dir, 3)
    expected = device.outbox()
    entities = {entity for entity, *_ in expected}
    assert entities == {"patient", "sample", "capture", "report"}
    # Every report version is queued (signed v1, amendment draft v2 and its signing).
    assert {r[:2] for r in expected if r[0] == "report"} and len(expected) > 20

    receiver = start_central(central, mqtt_broker)
    try:
        agent = device.run_agent("--until-empty")
        assert agent.wait(120) == 0, agent.tail()
    finally:
        receiver.stop()
    checked = assert_synced_exactly_once(central, device, expected)

    # Crops (policy "crops", the default) arrived whole, hash-checked, and stored under their hash.
    crops = crop_hashes(device)
    files = central.files()
    assert crops <= set(files), f"{len(crops - set(files))} crops missing at the central"
    for sha in crops:
        complete, stored = files[sha]
        assert complete
        assert hashlib.sha256((central.root / stored).read_bytes()).hexdigest() == sha
    frame_hashes = {sha for (sha,) in device.rows("SELECT sha256 FROM capture")}
    assert not frame_hashes & set(files), "policy crops must not send full frames"
    # With 8 KiB messages a crop takes several chunks: the chunking really happened.
    assert max(chunks for (chunks,) in central.rows("SELECT chunks FROM received_file")) > 1
    assert central.errors() == {}
    # Amendments: both signed versions of each report reached the central, with their conclusions.
    conclusions = central.rows("SELECT payload FROM received_record WHERE entity = 'report'")
    texts = {json.loads(p)["conclusion"] for (p,) in conclusions}
    assert any("(amended)" in t for t in texts) and any("(amended)" not in t and t for t in texts)
    print(f"\ne2e: {checked} record versions and {len(crops)} crops checked ({counts})")


def test_status_command_reports_the_backlog_and_last_ack(pki, mqtt_broker, tmp_path):
    central = setup_central(tmp_path / "central", pki, [("clinic-e2e-2", "Clinic Two")])
    device = enrol_device(pki, mqtt_broker, tmp_path / "device", "clinic-e2e-2")
    populate(device.data_dir, 1, amend=False)
    pending = len(device.outbox())

    def status() -> dict:
        out = subprocess.run([sys.executable, "-m", "device.cli", "sync", "status", "--data-dir",
                              str(device.data_dir), "--json"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=60, check=True)
        return json.loads(out.stdout)

    before = status()
    assert before["pending"] == pending and before["last_ack_at"] is None and before["enrolled"]
    assert before["device_id"] == "clinic-e2e-2" and before["oldest_pending_seconds"] >= 0
    receiver = start_central(central, mqtt_broker)
    try:
        agent = device.run_agent("--until-empty")
        assert agent.wait(120) == 0, agent.tail()
    finally:
        receiver.stop()
    after = status()
    assert after["pending"] == 0 and after["last_ack_at"] and after["key_confirmed"]
    text = subprocess.run([sys.executable, "-m", "device.cli", "sync", "status", "--data-dir",
                           str(device.data_dir)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60).stdout
    assert "pending     0 entries" in text and "clinic-e2e-2" in text
