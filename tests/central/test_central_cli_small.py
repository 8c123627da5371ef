"""Small CLI defects of issue 16: `central enrol` on an existing id needs --force; audit names the system user."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys

from conftest import REPO_ROOT

from sync.fleet.pki import init_pki


def allscope(tmp_path, *args, env=None):
    return subprocess.run([sys.executable, "-m", "device.cli", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120, env=env)


def _enrol(tmp_path, *extra, env=None):
    return allscope(tmp_path, "central", "enrol", "dev-a", "--out", str(tmp_path / f"b{len(extra)}"), "--pki",
                    str(tmp_path / "pki"), "--central-db", str(tmp_path / "central.db"), *extra, env=env)


def test_enrol_on_an_existing_id_refuses_without_force(tmp_path):
    from device.store.records import AuditEvent
    from sync.central.db import open_central_database
    from sync.central.models import Device

    init_pki(tmp_path / "pki")
    assert _enrol(tmp_path).returncode == 0
    database = open_central_database(tmp_path / "central.db")
    Device.update(state="revoked", signing_public_key="PINNED").execute()
    database.close()
    refused = _enrol(tmp_path, "--clinic", "B")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "dev-a is already enrolled (revoked): --force re-enrols it" in refused.stderr
    database = open_central_database(tmp_path / "central.db")
    assert Device.get().state == "revoked" and Device.get().signing_public_key == "PINNED"  # nothing changed
    database.close()
    assert _enrol(tmp_path, "--force").returncode == 0
    database = open_central_database(tmp_path / "central.db")
    assert (Device.get().state, Device.get().signing_public_key) == ("enrolled", "")
    assert [e.after["re_enrolled"] for e in AuditEvent.select().where(AuditEvent.action == "enrol")] == [False, True]
    database.close()


def test_cli_audit_names_the_system_user_even_without_user_or_under_sudo(tmp_path):
    from device.store.records import AuditEvent
    from sync.central.db import open_central_database

    init_pki(tmp_path / "pki")
    bare = {k: v for k, v in os.environ.items() if k not in ("USER", "LOGNAME", "SUDO_USER")}
    assert _enrol(tmp_path, env=bare).returncode == 0
    revoked = allscope(tmp_path, "central", "revoke", "dev-a", "--pki", str(tmp_path / "pki"), "--central-db",
                       str(tmp_path / "central.db"), env=dict(bare, SUDO_USER="alice"))
    assert revoked.returncode == 0, revoked.stderr
    database = open_central_database(tmp_path / "central.db")
    events = [(e.action, e.username) for e in AuditEvent.select().order_by(AuditEvent.id)]
    database.close()
    expected_sudo = "cli:alice" if os.geteuid() == 0 else f"cli:{getpass.getuser()}"
    assert events == [("enrol", f"cli:{getpass.getuser()}"), ("revoke", expected_sudo)]
    assert "cli:unknown" not in {name for _, name in events}
