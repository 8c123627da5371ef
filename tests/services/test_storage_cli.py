"""``allscope storage prune|space`` and the disk-space guard on a real small filesystem (issue 15)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fault_helpers import small_tmpfs

from device.services.actor import Actor
from device.services.disk_guard import DiskGuard
from device.services.intake import NoRoom, store_upload
from device.store.datadir import DataDir
from device.store.records import AuditEvent, Capture, Patient, Report, Sample, db_proxy, open_database

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO = REPO_ROOT / "device" / "demo"
TECH = Actor("tech", "127.0.0.1")


def _cli(*args: str, config: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("ALLSCOPE_CONFIG", None)
    command = [sys.executable, "-m", "device.cli", "storage", *args] + (["--config", str(config)] if config else [])
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120, check=False)


@pytest.fixture
def recorded(tmp_path):
    """A data directory with one analysed-looking capture whose report is signed and acknowledged by the central;
    the database is closed again (the CLI opens it itself)."""
    data = DataDir.resolve(tmp_path / "var")
    database = open_database(data.database)
    sample = Sample.create(patient=Patient.create(identifier="P-1", name="Test Patient"))
    capture = store_upload(sample, "frame.jpg", (DEMO / "BloodImage_00000.jpg").read_bytes(), actor=TECH, data=data,
                           worker=None)
    thumb = data.store_thumb(capture.id, (DEMO / "BloodImage_00010.jpg").read_bytes())
    Capture.update(status="done", thumb_path=thumb).where(Capture.id == capture.id).execute()
    Report.create(sample=sample, status="signed", signed_by="path")
    db_proxy.execute_sql("DELETE FROM outbox WHERE entity = 'capture'")  # acknowledged
    database.close()
    return data, capture


def test_prune_dry_run_lists_then_prune_deletes_and_audits(tmp_path, recorded):
    data, capture = recorded
    config = tmp_path / "allscope.toml"
    config.write_text("[storage]\nprune_after_ack = true\n")
    nothing = _cli("prune", "--data-dir", str(data.root))  # the default: no policy
    assert nothing.returncode == 0 and "no retention policy is set" in nothing.stdout
    dry = _cli("prune", "--dry-run", "--data-dir", str(data.root), config=config)
    assert dry.returncode == 0, dry.stderr
    assert f"capture #{capture.id}: acknowledged by the central, report signed" in dry.stdout
    assert "would prune 1 frame" in dry.stdout and data.exists(capture.image_path)
    done = _cli("prune", "--data-dir", str(data.root), config=config)
    assert done.returncode == 0, done.stderr
    assert "pruned 1 frame" in done.stdout and not data.exists(capture.image_path)
    database = open_database(data.database)
    try:
        assert Capture.get_by_id(capture.id).frame_pruned_at is not None
        event = AuditEvent.get(AuditEvent.action == "prune_frame")
        assert event.username.startswith("cli:") and event.before["sha256"] == capture.sha256
    finally:
        database.close()


def test_a_bad_retention_setting_is_one_line(tmp_path, recorded):
    data, _capture = recorded
    config = tmp_path / "allscope.toml"
    config.write_text("[storage]\nprune_offline_days = -1\n")
    refused = _cli("prune", "--data-dir", str(data.root), config=config)
    assert refused.returncode != 0 and "prune_offline_days" in refused.stderr and "Traceback" not in refused.stderr


def test_space_says_the_days_left_and_fails_at_the_reserve(tmp_path, recorded):
    data, _capture = recorded
    fine = _cli("space", "--data-dir", str(data.root))
    assert fine.returncode in (0, 1) and "MB free" in fine.stdout and "days left" in fine.stdout
    config = tmp_path / "allscope.toml"
    config.write_text("[storage]\nreserve_mb = 10000000\n")
    full = _cli("space", "--data-dir", str(data.root), config=config)
    assert full.returncode == 2 and "Capture refused" in full.stdout


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB tmpfs (needs root and mount); skipped with the reason otherwise."""
    with small_tmpfs(tmp_path / "small", 8) as mount:
        yield mount


def test_on_a_small_disk_captures_stop_at_the_reserve_and_the_database_still_commits(small_disk):
    data = DataDir.resolve(small_disk / "var")
    database = open_database(data.database)
    try:
        sample = Sample.create(patient=Patient.create(identifier="P-1", name="Test Patient"))
        guard = DiskGuard(data, reserve_mb=2)
        frames = sorted(DEMO.glob("*.jpg"))
        # fill the disk up to 60 kB above the reserve: room for about two ~22 kB frames, not four
        filler = guard.free_bytes() - guard.reserve_bytes - 60 * 1024
        (small_disk / "filler").write_bytes(b"\0" * filler)
        stored, refused = [], []
        for frame in frames:
            try:
                stored.append(store_upload(sample, frame.name, frame.read_bytes(), actor=TECH, data=data,
                                           worker=None, guard=guard))
            except NoRoom as error:
                refused.append(str(error))
        assert stored and refused, (len(stored), refused)
        assert all(line.startswith("Capture refused: only ") and "\n" not in line for line in refused)
        assert guard.state().level == "full"
        # the reserve is there for the records: they still commit, and nothing half-stored is left
        Patient.create(identifier="P-2", name="Another Patient")
        assert Capture.select().count() == len(stored)
        assert len(list((data.root / "images").rglob("*.jpg"))) == len(stored)
    finally:
        database.close()
