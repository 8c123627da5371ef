"""The receivers' heartbeat rows (sync/central/receivers.py): the devices page lists them, the CLI lists and forgets.

The real processes (two `allscope central run` against a real broker, one stopped) are in
test_central_service.py; here the rows are written through the same functions a receiver calls.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

from central_web_kit import admin, central  # noqa: F401  (shared fixtures)
from conftest import REPO_ROOT

from device.store.records import utcnow
from sync.central import receivers
from sync.central.models import ReceiverBeat


def test_devices_page_lists_running_stale_and_stopped_receivers(admin):
    receivers.register("central-a", "central.example", 101)
    receivers.register("central-b", "central.example", 102)
    receivers.register("central-c", "other.example", 103)
    receivers.stopped("central-c", 7)
    old = utcnow() - dt.timedelta(seconds=receivers.STALE_AFTER_S * 2)
    ReceiverBeat.update(last_seen_at=old).where(ReceiverBeat.client_id == "central-b").execute()
    html = admin.get("/devices").get_data(as_text=True)
    section = html[html.index('id="receivers"'):]
    assert section.index("central-a") < section.index("central-b") < section.index("central-c")
    assert 'ce-receiver-running' in section and 'ce-receiver-not-responding' in section
    assert 'ce-receiver-stopped' in section and "other.example" in section


def test_devices_page_warns_when_no_receiver_reported(admin):
    assert "No receiver has reported yet" in admin.get("/devices").get_data(as_text=True)


def test_register_again_restarts_the_row(central):
    receivers.register("central-a", "h", 1)
    receivers.stopped("central-a", 5)
    receivers.register("central-a", "h", 2)
    (view,) = receivers.listing()
    assert (view.state, view.pid, view.handled) == ("running", 2, 0)


def _cli(tmp_path, *arguments):
    return subprocess.run([sys.executable, "-m", "device.cli", "central", "receivers", "--data-dir",
                           str(tmp_path / "central"), *arguments], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=60)


def test_cli_lists_and_forgets_only_a_stopped_receiver(tmp_path):
    from sync.central.db import open_central_database

    database = open_central_database(tmp_path / "central" / "central.db")
    receivers.register("central-a", "h", 1)
    receivers.register("central-b", "h", 2)
    receivers.stopped("central-b", 3)
    database.close()
    listed = _cli(tmp_path)
    assert listed.returncode == 0 and "central-a\trunning" in listed.stdout and "central-b\tstopped" in listed.stdout
    refused = _cli(tmp_path, "--forget", "central-a")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "stop it first" in refused.stderr
    assert _cli(tmp_path, "--forget", "central-b").returncode == 0
    assert "central-b" not in _cli(tmp_path).stdout
    unknown = _cli(tmp_path, "--forget", "central-z")
    assert unknown.returncode == 2 and "no receiver 'central-z'" in unknown.stderr
