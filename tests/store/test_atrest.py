"""Encryption at rest, switched on: SQLCipher database, AES-256-GCM images and crops, the whole app on top."""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("sqlcipher3", reason="encryption at rest needs sqlcipher3-binary / sqlcipher3-wheels")

from conftest import REPO_ROOT, TEST_PASSWORD, Auth, csrf_from  # noqa: E402

from device.store import atrest  # noqa: E402
from device.store.datadir import DataDir  # noqa: E402
from device.store.records import Capture, Cell, Patient, db_proxy, open_database  # noqa: E402

DEMO = REPO_ROOT / "device" / "demo"
JPEG_SIGNATURE = b"\xff\xd8\xff"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAME = "Zéphyrine Quillfeather"


def _key(path: Path) -> Path:
    path.write_bytes(atrest.new_secret())
    path.chmod(0o600)
    return path


@pytest.fixture
def key(tmp_path, monkeypatch):
    monkeypatch.delenv("ALLSCOPE_CONFIG", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = _key(tmp_path / "db.key")
    atrest.configure(encrypt=True, key_file=path)
    yield path
    if not db_proxy.is_closed():
        db_proxy.close()
    atrest.reset()


def _all_bytes(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in root.rglob("*") if p.is_file()]


def test_the_app_works_end_to_end_and_nothing_readable_is_left_on_disk(tmp_path, key):
    from device.config.schema import AllscopeConfig, CameraSection
    from device.services import accounts
    from webui.app import create_app

    app = create_app(AllscopeConfig(camera=CameraSection(backend="replay")), data_dir=tmp_path / "var",
                     start_workers=True)
    app.testing = True
    try:
        with app.app_context():
            accounts.create_user("tech", TEST_PASSWORD, "technician", actor="test")
            accounts.create_user("path", TEST_PASSWORD, "pathologist", actor="test")
        client = app.test_client()
        auth = Auth(client)
        auth.login("tech")
        token = csrf_from(client.get("/patients/new").get_data(as_text=True))
        response = client.post("/patients/new", data={"csrf_token": token, "identifier": "MRN-7731", "name": NAME,
                                                      "sex": "female", "date_of_birth": "1970-01-02"})
        assert response.status_code == 302, response.get_data(as_text=True)[:500]
        headers = {"X-CSRFToken": csrf_from(client.get("/").get_data(as_text=True))}
        with app.app_context():
            patient_id = Patient.get(Patient.identifier == "MRN-7731").id
        sample = client.post(f"/api/patients/{patient_id}/samples", json={}, headers=headers)
        assert sample.status_code == 201, sample.get_json()
        sample_id = sample.get_json()["sample"]["id"]
        jpeg = (DEMO / "BloodImage_00000.jpg").read_bytes()
        upload = client.post(f"/api/samples/{sample_id}/captures", headers=headers, content_type="multipart/form-data",
                             data={"files": [(io.BytesIO(jpeg), "frame.jpg")]})
        assert upload.status_code == 201, upload.get_json()
        capture_id = upload.get_json()["captures"][0]
        deadline = time.monotonic() + 60
        while client.get(f"/api/captures/{capture_id}/poll").get_json()["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline, "analysis did not finish"
            time.sleep(0.1)
        with app.app_context():
            capture = Capture.get_by_id(capture_id)
            assert capture.status == "done", capture.error
            cells = list(Cell.select().where(Cell.capture == capture_id))
        assert cells, "the demo frame holds white cells"

        # The image and a crop come back decrypted through the web UI.
        image = client.get(f"/captures/{capture_id}/image")
        assert image.status_code == 200 and image.data == jpeg  # the upload as it arrived, bit-exact (issue 15)
        assert hashlib.sha256(image.data).hexdigest() == capture.sha256
        assert client.get(f"/captures/{capture_id}/image?w=320").data[:2] == b"\xff\xd8"  # thumbnail (JPEG)
        assert client.get(f"/cells/{cells[0].id}/crop").data.startswith(JPEG_SIGNATURE)

        # A pathologist signs; the PDF report carries the (decrypted) crops.
        auth.logout()
        auth.login("path")
        headers = {"X-CSRFToken": csrf_from(client.get("/").get_data(as_text=True))}
        signed = client.post(f"/api/samples/{sample_id}/report/sign", json={"conclusion": "Reviewed.",
                             "override_reason": "one demo frame only"}, headers=headers)  # below 100 white cells
        assert signed.status_code == 200, signed.get_json()
        pdf = client.get(f"/reports/{signed.get_json()['report']['id']}.pdf")
        assert pdf.status_code == 200 and pdf.data.count(b"/Subtype /Image") >= 1
    finally:
        app.appliance.close()

    root = tmp_path / "var"
    assert atrest.is_encrypted(root)
    # Plain SQLite cannot read the database, and no file holds the patient's name or an image in the clear.
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        sqlite3.connect(str(root / "allscope.db")).execute("SELECT * FROM patient").fetchall()
    files = _all_bytes(root)
    assert any(p.name == "allscope.db" for p, _ in files)
    name_bytes = (NAME.encode("utf-8"), "Quillfeather".encode("utf-16-le"), b"Quillfeather", b"MRN-7731")
    for path, blob in files:
        assert not any(n in blob for n in name_bytes), f"{path} holds the patient in the clear"
        assert PNG_SIGNATURE not in blob and b"IHDR" not in blob, f"{path} holds a PNG in the clear"
        assert not blob.startswith(JPEG_SIGNATURE) and b"JFIF" not in blob, f"{path} holds a JPEG in the clear"
    stored = [p for p, _ in files if p.suffix in (".png", ".jpg")]  # the frame, its crops and its thumbnail
    assert len(stored) == 2 + len(cells) and all(p.read_bytes().startswith(atrest.MAGIC) for p in stored)


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device.cli", *args], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=60)


def test_wrong_or_missing_key_is_one_line(tmp_path, key):
    data = DataDir.resolve(tmp_path / "var")
    open_database(data.database)
    Patient.create(identifier="A-1", name=NAME)
    db_proxy.close()
    other = _key(tmp_path / "other.key")
    config = tmp_path / "allscope.toml"
    env = dict(os.environ, ALLSCOPE_CONFIG=str(config), PYTHONPATH=str(REPO_ROOT))
    env.pop("CREDENTIALS_DIRECTORY", None)
    for key_file, expected in ((other, "the at-rest key does not open this data directory"),
                               (tmp_path / "missing.key", "no such key file")):
        config.write_text(f'[storage]\nencrypt_at_rest = true\nkey_file = "{key_file}"\n')
        result = _cli("users", "list", "--data-dir", str(data.root), env=env)
        assert result.returncode == 2, result
        assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    # The right key, from a systemd credential this time.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "allscope-db-key").write_bytes(key.read_bytes())
    config.write_text("[storage]\nencrypt_at_rest = true\n")
    result = _cli("storage", "status", "--data-dir", str(data.root), env=dict(env, CREDENTIALS_DIRECTORY=str(credentials)))
    assert result.returncode == 0 and "the key opens it" in result.stdout, result


def test_plaintext_data_is_not_silently_left_in_the_clear(tmp_path, key):
    atrest.configure(encrypt=False)
    data = DataDir.resolve(tmp_path / "var")
    open_database(data.database).close()
    atrest.configure(encrypt=True, key_file=key)
    with pytest.raises(atrest.AtRestError, match="holds unencrypted data"):
        open_database(data.database)


def test_files_are_bound_to_their_name_and_tampering_is_detected(tmp_path, key):
    data = DataDir.resolve(tmp_path / "var")
    a, _ = data.store_image(PNG_SIGNATURE + b"first")
    b, _ = data.store_image(PNG_SIGNATURE + b"second")
    assert data.read_bytes(a) == PNG_SIGNATURE + b"first"
    (data.root / b).write_bytes((data.root / a).read_bytes())  # a file swapped for another
    with pytest.raises(atrest.AtRestError, match="cannot be decrypted"):
        data.read_bytes(b)
    blob = bytearray((data.root / a).read_bytes())
    blob[-1] ^= 1
    (data.root / a).write_bytes(bytes(blob))
    with pytest.raises(atrest.AtRestError, match="cannot be decrypted"):
        data.read_bytes(a)


def test_backup_and_restore_of_an_encrypted_data_directory(tmp_path, key):
    from device.store.backup import create_backup, restore_backup
    from sync.agent.media import FileIndex

    data = DataDir.resolve(tmp_path / "var")
    open_database(data.database)
    relative, digest = data.store_image(PNG_SIGNATURE + b"frame")
    Patient.create(identifier="B-1", name=NAME)
    # The sync agent sends the image itself (hash of the plain PNG), not the ciphertext on disk.
    media = FileIndex(data.root).describe(relative)
    assert media.sha256 == digest and media.read_chunk(0, 1 << 20) == PNG_SIGNATURE + b"frame"
    backup = create_backup(data, tmp_path / "bk", keep=2)
    db_proxy.close()
    copy = (backup / "allscope.db").read_bytes()
    assert not copy.startswith(b"SQLite format 3") and NAME.encode() not in copy
    target = tmp_path / "restored"
    restore_backup(backup, target)
    assert atrest.is_encrypted(target)
    assert DataDir.resolve(target).read_bytes(relative) == PNG_SIGNATURE + b"frame"
    open_database(target / "allscope.db")
    assert Patient.get(Patient.identifier == "B-1").name == NAME


def test_init_key_writes_a_private_key_once(tmp_path, capsys, key):
    from device.cli.main import main

    out = tmp_path / "etc" / "allscope-db.key"
    assert main(["storage", "init-key", "--out", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    secret = out.read_bytes()
    assert len(secret.strip()) == 64 and bytes.fromhex(secret.strip().decode())
    assert "Keep a copy off the device" in capsys.readouterr().out
    assert main(["storage", "init-key", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == secret
