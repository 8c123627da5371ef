"""allscope backup create|list|restore on a real data directory (SQLite file, stored images, crops)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from device.cli.main import main
from device.services.jobs import encode_png
from device.store import atrest
from device.store.backup import MANIFEST, create_backup, list_backups, restore_backup
from device.store.datadir import DataDir
from device.store.records import Capture, Patient, Sample, db_proxy, open_database

DEMO = Path(__file__).resolve().parents[2] / "device" / "demo"


@pytest.fixture(autouse=True)
def _plain_storage(monkeypatch):
    monkeypatch.delenv("ALLSCOPE_CONFIG", raising=False)
    atrest.reset()
    yield
    if not db_proxy.is_closed():
        db_proxy.close()
    atrest.reset()


def _png(seed: int) -> bytes:
    import numpy as np

    rng = np.random.default_rng(seed)
    return encode_png(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))


def _populate(data: DataDir, identifier: str, seed: int) -> Capture:
    relative, digest = data.store_image(_png(seed))
    patient = Patient.create(identifier=identifier, name=f"Name of {identifier}")
    sample = Sample.create(patient=patient)
    capture = Capture.create(sample=sample, image_path=relative, sha256=digest, source="upload", status="done")
    data.store_crop(capture.id, 0, _png(seed + 1000))
    return capture


@pytest.fixture
def data(tmp_path):
    data = DataDir.resolve(tmp_path / "var")
    database = open_database(data.database)
    _populate(data, "P-1", 1)
    _populate(data, "P-2", 2)
    data.secret_key()
    yield data
    database.close()


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.parts[len(root.parts)] in ("images", "crops")}


def test_create_modify_restore_brings_the_data_back(data, tmp_path, capsys):
    files_before = _tree(data.root)
    assert main(["backup", "create", "--data-dir", str(data.root), "--to", str(tmp_path / "bk")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("backup ") and "keeping the 7 newest" in out
    [backup] = list_backups(tmp_path / "bk")
    manifest = json.loads((backup.path / MANIFEST).read_text())
    assert set(manifest["files"]) == {"allscope.db", "secret_key", *files_before}
    # Images are hard links on the same file system: no second copy of every frame.
    first_image = next(name for name in files_before if name.startswith("images/"))
    assert os.path.samefile(data.root / first_image, backup.path / first_image)

    # Changes after the backup: a record renamed, one added, an image lost.
    Patient.update(name="Changed").where(Patient.identifier == "P-1").execute()
    _populate(data, "P-3", 3)
    (data.root / first_image).unlink()
    db_proxy.close()

    code = main(["backup", "restore", str(backup.path), "--data-dir", str(data.root)])
    assert code == 2
    assert "is not empty" in capsys.readouterr().err  # refused without --force
    assert main(["backup", "restore", str(backup.path), "--data-dir", str(data.root), "--force"]) == 0
    out = capsys.readouterr().out
    assert "integrity_check ok" in out and "previous contents are in" in out

    assert _tree(data.root) == files_before
    open_database(data.database)
    assert sorted((p.identifier, p.name) for p in Patient.select()) == [("P-1", "Name of P-1"), ("P-2", "Name of P-2")]
    aside = next(data.root.glob(".before-restore-*"))
    assert (aside / "allscope.db").is_file()  # the replaced data was moved aside, not deleted


def test_restore_into_an_empty_directory_and_list(data, tmp_path, capsys):
    backup = create_backup(data, tmp_path / "bk", keep=3)
    db_proxy.close()
    target = tmp_path / "new"
    assert restore_backup(backup, target) is None
    assert _tree(target) == _tree(data.root)
    assert main(["backup", "list", "--data-dir", str(data.root), "--to", str(tmp_path / "bk")]) == 0
    assert str(backup) in capsys.readouterr().out


def test_restore_refuses_a_database_in_use(data, tmp_path):
    backup = create_backup(data, tmp_path / "bk", keep=3)
    db_proxy.connect(reuse_if_open=True)
    Patient.select().count()  # the open connection: as the device service holds it
    with pytest.raises(Exception, match="in use: stop allscope-device"):
        restore_backup(backup, data.root, force=True)
    assert Patient.select().count() == 2


def test_rotation_keeps_the_newest(data, tmp_path):
    made = [create_backup(data, tmp_path / "bk", keep=2) for _ in range(4)]
    (tmp_path / "bk" / ".partial-allscope-backup-20000101T000000000000Z").mkdir()  # an interrupted backup
    made.append(create_backup(data, tmp_path / "bk", keep=2))
    remaining = [b.path for b in list_backups(tmp_path / "bk")]
    assert remaining == made[-2:]
    assert not list((tmp_path / "bk").glob(".partial-*"))


def test_default_backup_dir_is_in_the_data_directory_and_not_backed_up_again(data):
    first = create_backup(data, keep=5)
    second = create_backup(data, keep=5)
    assert first.parent == data.root / "backups"
    manifest = json.loads((second / MANIFEST).read_text())
    assert not any(name.startswith("backups/") for name in manifest["files"])


@pytest.mark.parametrize("damage", ["flip", "delete", "manifest"])
def test_a_damaged_backup_is_refused_in_one_line(data, tmp_path, capsys, damage):
    backup = create_backup(data, tmp_path / "bk", keep=3)
    db_proxy.close()
    image = next(backup.glob("images/*/*.png"))
    if damage == "flip":
        blob = bytearray(image.read_bytes())
        blob[len(blob) // 2] ^= 0x01
        image.unlink()  # a hard link: write a new file, not through the link into the live data
        image.write_bytes(bytes(blob))
    elif damage == "delete":
        image.unlink()
    else:
        (backup / MANIFEST).write_text("{not json")
    target = tmp_path / "new"
    code = main(["backup", "restore", str(backup), "--data-dir", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "damaged" in err
    assert not (target / "allscope.db").exists()  # nothing restored


def _outbox_versions(entity: str, record_id: int) -> list[int]:
    return [v for (v,) in db_proxy.execute_sql("SELECT version FROM outbox WHERE entity = ? AND record_id = ? "
                                               "ORDER BY id", (entity, record_id)).fetchall()]


def test_a_restore_rebases_sync_versions_so_later_changes_never_reuse_a_version_the_central_holds(data, tmp_path):
    """Issue 13 item 13: backup at v1, three changes sent (v2-v4), disk lost, restore: the next change was v2
    again, which the central holds with other content (replay_conflict), so it stayed in the outbox for ever."""
    from figures import report

    patient = Patient.get(Patient.identifier == "P-1")
    backup = create_backup(data, tmp_path / "bk", keep=3)
    for name in ("Two", "Three", "Four"):
        Patient.update(name=name).where(Patient.id == patient.id).execute()
    central_holds = set(_outbox_versions("patient", patient.id))
    assert central_holds == {1, 2, 3, 4}
    db_proxy.close()
    restore_backup(backup, data.root, force=True)
    open_database(data.database)
    Patient.update(name="After the restore").where(Patient.id == patient.id).execute()
    Sample.create(patient=patient)  # a new record too
    latest = _outbox_versions("patient", patient.id)[-1]
    assert latest not in central_holds and latest > max(central_holds)
    other = Patient.get(Patient.identifier == "P-2")
    Patient.update(name="Also changed").where(Patient.id == other.id).execute()
    assert _outbox_versions("patient", other.id)[-1] > max(central_holds)
    # The same backup restored again: above everything the first restore issued (it was moved aside).
    first_base = latest
    db_proxy.close()
    restore_backup(backup, data.root, force=True)
    open_database(data.database)
    Patient.update(name="Second restore").where(Patient.id == patient.id).execute()
    assert _outbox_versions("patient", patient.id)[-1] > first_base
    report("sync versions re-based after a restore (records checked)", 3)
