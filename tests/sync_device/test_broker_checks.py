"""The broker's files as mosquitto's user sees them (sync/fleet/broker_checks.py), issue 16.

The tests run as root, for whom everything is allowed: the checks are made for ``nobody`` (a user every
Debian has) from owner, group and mode bits, on real files in a folder every user can traverse.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from sync.fleet.broker_checks import check_broker_files, check_mosquitto_conf, default_acl, identity

NOBODY = identity("nobody")
pytestmark = pytest.mark.skipif(NOBODY is None, reason="this machine has no user 'nobody'")


@pytest.fixture
def world():
    """A folder under /tmp that every user can traverse (pytest's own tmp_path is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="allscope-broker-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _files(world: Path):
    persistence = world / "persistence"
    persistence.mkdir(mode=0o755)
    readable = []
    for name in ("ca.crt", "broker.crt", "crl.pem", "acl"):
        (world / name).write_text(name)
        (world / name).chmod(0o644)
        readable.append(world / name)
    key = world / "broker.key"
    key.write_text("secret")
    key.chmod(0o600)
    return persistence, readable, key


def test_a_root_owned_persistence_folder_and_key_are_reported_in_one_line_each(world):
    persistence, readable, key = _files(world)
    problems = check_broker_files(user="nobody", persistence_dir=persistence, readable=readable, key=key)
    assert problems == [
        (f"persistence folder {persistence} is not writable by nobody: sessions and queued messages would be lost "
         f"at each restart (chown nobody: {persistence})"),
        f"{key} is not readable by nobody (chown root:nobody {key}; chmod 0640 {key})"]


def test_the_right_owner_and_modes_pass(world):
    persistence, readable, key = _files(world)
    os.chown(persistence, NOBODY.uid, -1)
    os.chown(key, 0, min(NOBODY.gids))
    key.chmod(0o640)
    assert check_broker_files(user="nobody", persistence_dir=persistence, readable=readable, key=key) == []


def test_a_world_readable_key_an_unknown_user_and_a_missing_folder(world):
    persistence, readable, key = _files(world)
    os.chown(persistence, NOBODY.uid, -1)
    key.chmod(0o644)
    assert check_broker_files(user="nobody", persistence_dir=persistence, readable=readable, key=key) == [
        f"broker key {key} is readable by every user: chmod 0640 {key}"]
    assert "does not exist on this machine" in check_broker_files(
        user="no-such-user-x", persistence_dir=persistence, readable=readable, key=key)[0]
    missing = check_broker_files(user="nobody", persistence_dir=world / "nowhere", readable=readable, key=key)
    assert missing[0].startswith(f"persistence folder {world / 'nowhere'} does not exist")


def test_broker_config_reports_what_mosquitto_cannot_do(tmp_path, pki):
    (tmp_path / "db").mkdir(mode=0o755)
    made = subprocess.run([sys.executable, "-m", "device.cli", "central", "broker-config", "--pki", str(pki.root),
                           "--persistence", str(tmp_path / "db"), "--user", "nobody", "--out",
                           str(tmp_path / "allscope.conf")], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=60)
    assert made.returncode == 1, made.stderr
    assert f"allscope: broker problem: persistence folder {tmp_path / 'db'} is not writable by nobody" in made.stderr
    assert "Traceback" not in made.stderr
    checked = subprocess.run([sys.executable, "-m", "device.cli", "central", "broker-check",
                              str(tmp_path / "allscope.conf")], capture_output=True, text=True, cwd=REPO_ROOT,
                             timeout=60)
    assert checked.returncode == 1 and checked.stderr == made.stderr
    assert check_mosquitto_conf(tmp_path / "allscope.conf") == [
        line.removeprefix("allscope: broker problem: ") for line in made.stderr.splitlines()]


def test_the_acl_named_is_the_installed_one_when_there_is_one(tmp_path):
    shipped = tmp_path / "shipped-acl"
    assert default_acl(installed=tmp_path / "etc-acl", shipped=shipped) == shipped
    (tmp_path / "etc-acl").write_text("pattern read x\n")
    assert default_acl(installed=tmp_path / "etc-acl", shipped=shipped) == tmp_path / "etc-acl"


def test_doctor_reports_the_broker_files_in_one_line(tmp_path, pki):
    from device.cli.doctor_base import FAIL, SKIP
    from device.cli.doctor_sync import check_broker_files as doctor_check

    conf = tmp_path / "allscope.conf"
    assert doctor_check(None, conf).status == SKIP
    (tmp_path / "db").mkdir(mode=0o755)
    subprocess.run([sys.executable, "-m", "device.cli", "central", "broker-config", "--pki", str(pki.root),
                    "--persistence", str(tmp_path / "db"), "--user", "nobody", "--out", str(conf)],
                   capture_output=True, cwd=REPO_ROOT, timeout=60, check=False)
    result = doctor_check(None, conf)
    assert result.status == FAIL and "\n" not in result.detail
    assert result.detail.startswith(f"persistence folder {tmp_path / 'db'} is not writable by nobody")
    assert "more: allscope central broker-check" in result.detail
