"""`allscope users …` as a real process: password from stdin only, one-line errors, last-admin rule."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT, TEST_PASSWORD


def users(data_dir, *args, stdin=""):
    return subprocess.run([sys.executable, "-m", "device.cli", "users", *args, "--data-dir", str(data_dir)],
                          input=stdin, text=True, capture_output=True, cwd=REPO_ROOT, timeout=60)


def test_create_list_disable_enable(tmp_path):
    created = users(tmp_path, "create", "Boss", "--role", "admin,pathologist", stdin=TEST_PASSWORD + "\n")
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "created boss (pathologist, admin)"
    assert users(tmp_path, "create", "tech1", "--role", "technician", stdin=TEST_PASSWORD + "\n").returncode == 0
    listing = users(tmp_path, "list").stdout
    assert "boss\tpathologist,admin\tactive" in listing and "tech1\ttechnician\tactive" in listing
    assert TEST_PASSWORD not in listing
    assert users(tmp_path, "disable", "tech1").stdout.strip() == "tech1 disabled"
    assert "tech1\ttechnician\tdisabled" in users(tmp_path, "list").stdout
    assert users(tmp_path, "enable", "tech1").returncode == 0


def test_errors_are_one_line(tmp_path):
    weak = users(tmp_path, "create", "bob", "--role", "technician", stdin="short\n")
    assert weak.returncode == 2 and weak.stderr.strip().count("\n") == 0 and "too short" in weak.stderr
    bad_role = users(tmp_path, "create", "bob", "--role", "surgeon", stdin=TEST_PASSWORD + "\n")
    assert bad_role.returncode == 2 and "unknown role surgeon" in bad_role.stderr
    users(tmp_path, "create", "bob", "--role", "technician", stdin=TEST_PASSWORD + "\n")
    again = users(tmp_path, "create", "bob", "--role", "technician", stdin=TEST_PASSWORD + "\n")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    assert "no such user" in users(tmp_path, "disable", "nobody").stderr


def test_the_last_administrator_cannot_be_disabled(tmp_path):
    users(tmp_path, "create", "boss", "--role", "admin", stdin=TEST_PASSWORD + "\n")
    refused = users(tmp_path, "disable", "boss")
    assert refused.returncode == 2 and "last active administrator" in refused.stderr
    users(tmp_path, "create", "deputy", "--role", "admin", stdin=TEST_PASSWORD + "\n")
    assert users(tmp_path, "disable", "boss").returncode == 0


def test_the_data_directory_comes_from_the_configuration_file(tmp_path):
    """As on the appliance: `allscope users --config /etc/allscope/allscope.toml create …` with no --data-dir."""
    data = tmp_path / "lib" / "allscope"
    config = tmp_path / "allscope.toml"
    config.write_text(f'[device]\ndata_dir = "{data}"\n')
    env_free = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "device.cli", "users", "create", "boss", "--role", "admin",
                          "--config", str(config)], input=TEST_PASSWORD + "\n", text=True, capture_output=True,
                         cwd=tmp_path, timeout=60, env={**env_free, "PYTHONPATH": str(REPO_ROOT)})
    assert run.returncode == 0, run.stderr
    assert (data / "allscope.db").is_file() and not (tmp_path / "var").exists()
    assert "boss\tadmin\tactive" in users(data, "list").stdout
