"""End-to-end sync through a real mosquitto with mutual TLS: device records -> agent -> broker -> central.

Real parts only: the fleet PKI, mosquitto with the shipped configuration, the
agent as an ``allscope sync run`` process, the central as ``allscope central run``,
SQLite databases on disk, crops and frames cut from the bundled demo frames.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

from sync_agent_helpers import (
    REPO_ROOT,
    assert_synced_exactly_once,
    crop_hashes,
    enrol_device,
    enrol_with_cli,
    populate,
    register_signing_key,
    setup_central,
    sync_until_empty,
)


def test_records_crops_and_report_versions_arrive_once(pki, mqtt_broker, tmp_path):
    central = setup_central(tmp_path / "central", pki, [])
    device = enrol_with_cli(central, mqtt_broker, tmp_path / "device", "clinic-e2e-cli", "Clinic One",
                            max_message_bytes=8 * 1024)
    counts = populate(device.data_dir, 3)
    expected = device.outbox()
    entities = {entity for entity, *_ in expected}
    assert entities == {"patient", "sample", "capture", "report"}
    # Every report version is queued (signed v1, amendment draft v2 and its signing).
    assert {r[:2] for r in expected if r[0] == "report"} and len(expected) > 20

    sync_until_empty(central, mqtt_broker, device)
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


def test_frames_policy_sends_full_frames_in_chunks(pki, mqtt_broker, tmp_path):
    central = setup_central(tmp_path / "central", pki, [("clinic-e2e-3", "Clinic Three")])
    device = enrol_device(pki, mqtt_broker, tmp_path / "device", "clinic-e2e-3", max_message_bytes=64 * 1024)
    populate(device.data_dir, 1, amend=False)
    sync_until_empty(central, mqtt_broker, device, "--media", "frames")
    (frame_path, frame_sha), = device.rows("SELECT image_path, sha256 FROM capture")
    assert (device.data_dir / frame_path).stat().st_size > 2 * 64 * 1024  # really several chunks
    complete, stored = central.files()[frame_sha]
    assert complete
    assert (central.root / stored).read_bytes() == (device.data_dir / frame_path).read_bytes()
    assert crop_hashes(device) <= set(central.files())


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
    sync_until_empty(central, mqtt_broker, device)
    after = status()
    assert after["pending"] == 0 and after["last_ack_at"] and after["key_confirmed"]
    text = subprocess.run([sys.executable, "-m", "device.cli", "sync", "status", "--data-dir",
                           str(device.data_dir)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60).stdout
    assert "pending     0 entries" in text and "clinic-e2e-2" in text


def _cli(*args, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "device.cli", *args], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_usb_export_import_then_online_sync_stores_no_duplicates(pki, mqtt_broker, tmp_path):
    central = setup_central(tmp_path / "central", pki, [("clinic-usb-1", "Offline Clinic")])
    device = enrol_device(pki, mqtt_broker, tmp_path / "device", "clinic-usb-1", max_message_bytes=8 * 1024)
    populate(device.data_dir, 2)
    expected = device.outbox()
    usb = tmp_path / "usb"
    usb.mkdir()
    exported = _cli("sync", "export", "--to", str(usb), "--data-dir", str(device.data_dir))
    assert f"exported {len(expected)} pending entries" in exported.stdout
    (folder,) = [p for p in usb.iterdir()]
    assert folder.name.startswith("allscope-export-clinic-usb-1-")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["entries"] == len(expected) and manifest["chunks"] > 0
    assert device.outbox() == expected, "export must not remove anything from the outbox"
    # The broker-free path is encrypted too: no patient identifier in the clear on the stick.
    assert not any(b"MRN-" in path.read_bytes() for path in folder.glob("*.env"))

    register_signing_key(central, device)  # an import pins no key by itself
    imported = _cli("central", "import", str(usb), "--data-dir", str(central.root), "--central-db",
                    str(central.database), "--pki", str(pki.root))
    assert "rejected" in imported.stdout and " 0 rejected" in imported.stdout
    assert len(central.records()) == len(expected)
    assert (folder / "acks.json").is_file()

    # The device comes online without applying the acks: it resends, the central answers "duplicate".
    receiver = sync_until_empty(central, mqtt_broker, device)
    assert_synced_exactly_once(central, device, expected)
    summary = next(line for line in receiver.lines if "stopped after" in line)
    counts = _counts(summary)
    assert counts.get("stored", 0) == 0, summary
    assert counts.get("duplicate", 0) >= len(expected), summary
    crops = crop_hashes(device)
    assert all(central.files()[sha][0] for sha in crops)


def _counts(summary: str) -> dict:
    """{"stored": 3, "duplicate": 40, ...} from the receiver's last line."""
    return {key: int(value) for key, value in re.findall(r"([a-z_:]+) (\d+)", summary.partition("(")[2])}


def test_usb_acks_let_the_device_drop_what_the_central_stored(pki, tmp_path):
    central = setup_central(tmp_path / "central", pki, [("clinic-usb-2", "Offline Clinic")])
    device = enrol_device(pki, None, tmp_path / "device", "clinic-usb-2")
    populate(device.data_dir, 1, amend=False)
    expected = device.outbox()
    usb = tmp_path / "usb"
    usb.mkdir()
    _cli("sync", "export", "--to", str(usb), "--data-dir", str(device.data_dir))
    # Before the central imported it there are no acks to apply: one line, nothing dropped.
    missing = _cli("sync", "import-acks", str(usb), "--data-dir", str(device.data_dir), check=False)
    assert missing.returncode == 2 and "no acks.json found" in missing.stderr
    register_signing_key(central, device)
    _cli("central", "import", str(usb), "--data-dir", str(central.root), "--central-db", str(central.database),
         "--pki", str(pki.root))
    applied = _cli("sync", "import-acks", str(usb), "--data-dir", str(device.data_dir))
    assert f"{len(expected)} entries left the outbox" in applied.stdout
    assert device.outbox() == []
    assert_synced_exactly_once(central, device, expected)
    # A forged acks.json (not signed by the central) is ignored.
    populate(device.data_dir, 1, amend=False, start=50)
    before = device.outbox()
    _cli("sync", "export", "--to", str(usb), "--data-dir", str(device.data_dir))
    newest = max(p for p in usb.iterdir() if p.is_dir())
    from sync.wire import acks as acks_mod
    from sync.wire import keys

    forged = acks_mod.make_ack(device_id="clinic-usb-2", signing_key=keys.generate_ed25519(), acks=[
        {"entry": 1, "record": "patient:2", "version": 1, "status": "stored", "reason": ""}])
    (newest / "acks.json").write_bytes(forged)
    result = _cli("sync", "import-acks", str(newest), "--data-dir", str(device.data_dir), check=False)
    assert result.returncode == 1 and "signature" in result.stdout
    assert device.outbox() == before
