"""Revocation on a live connection (issue 16): what takes effect when, said by the CLI and the admin UI.

With the real broker: a connected device stays connected through a reload (mosquitto checks the CRL
only at the handshake), and is dropped and refused by the restart that ``central revoke`` names (and
runs with ``--restart-broker``). The restart command itself is stood in by ``touch`` / ``false`` where
the test cannot hand the test broker to systemd.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from central_web_kit import admin, central, device_row, form_token  # noqa: F401  (shared fixtures)
from conftest import REPO_ROOT
from sync_fixtures import Refused, close, issue_device, mqtt_client, wait_until

from sync.wire import topics


def allscope(*args):
    return subprocess.run([sys.executable, "-m", "device.cli", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120)


@pytest.fixture
def central_db(tmp_path):
    from sync.central.db import open_central_database

    database = open_central_database(tmp_path / "central.db")
    yield tmp_path / "central.db"
    database.close()


def _enrolled(pki, device_id: str):
    from sync.central.models import Device

    issued = issue_device(pki, device_id)
    Device.create(device_id=device_id, cert_fingerprint=issued.fingerprint)
    return issued


def test_a_connected_revoked_device_is_dropped_and_refused_at_the_broker_restart(mqtt_broker, central_db):
    issued = _enrolled(mqtt_broker.pki, "dev-live")
    client = mqtt_client(mqtt_broker, issued.cert, issued.key, client_id="dev-live")
    done = allscope("central", "revoke", "dev-live", "--pki", str(mqtt_broker.pki.root), "--central-db",
                    str(central_db))
    assert done.returncode == 0, done.stderr
    assert "its envelopes are refused by the receivers from now on" in done.stdout
    assert "dev-live stays connected to the broker until the broker restarts" in done.stdout
    assert "run `systemctl restart mosquitto`" in done.stdout
    mqtt_broker.reload()  # what the README used to say was enough
    info = client.publish(topics.status("dev-live"), b'{"state": "online"}', qos=1)
    info.wait_for_publish(15)
    assert client.is_connected()  # still there after the reload: hence the restart
    mqtt_broker.restart()
    wait_until(lambda: not client.is_connected(), what="the broker restart to close the revoked connection")
    close(client)
    with pytest.raises(Refused):
        mqtt_client(mqtt_broker, issued.cert, issued.key, client_id="dev-live")


def test_revoke_restart_broker_runs_the_command_and_audits(tmp_path, pki, central_db):
    from device.store.records import AuditEvent

    _enrolled(pki, "dev-cmd")
    marker = tmp_path / "restarted"
    done = allscope("central", "revoke", "dev-cmd", "--pki", str(pki.root), "--central-db", str(central_db),
                    "--restart-broker", "--restart-command", f"touch {marker}")
    assert done.returncode == 0, done.stderr
    assert marker.exists() and "the broker was restarted: dev-cmd's connection is closed" in done.stdout
    assert AuditEvent.get(AuditEvent.action == "restart-broker").detail == "after revoking dev-cmd"


def test_revoke_with_a_failing_restart_is_one_line_and_the_device_stays_revoked(pki, central_db):
    from sync.central.models import Device

    _enrolled(pki, "dev-fail")
    done = allscope("central", "revoke", "dev-fail", "--pki", str(pki.root), "--central-db", str(central_db),
                    "--restart-broker", "--restart-command", "false")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "`false` failed (exit 1)" in done.stderr
    assert Device.get(Device.device_id == "dev-fail").state == "revoked"


def test_admin_ui_says_when_revocation_takes_effect_and_can_restart_the_broker(central, admin, tmp_path):
    from device.store.records import AuditEvent
    from sync.fleet.pki import init_pki, issue

    pki = init_pki(central.central.pki_dir)
    issue(pki, "scope-kano-01")
    device_row("scope-kano-01")
    page = admin.get("/devices/scope-kano-01/revoke").get_data(as_text=True)
    assert "until the broker restarts" in page and "systemctl restart mosquitto" in page
    assert 'name="restart_broker"' not in page  # no command configured: nothing to run from here
    marker = tmp_path / "restarted"
    central.central = dataclasses.replace(central.central, broker_restart_command=f"touch {marker}")
    token = form_token(admin, "/devices/scope-kano-01/revoke")
    assert 'name="restart_broker"' in admin.get("/devices/scope-kano-01/revoke").get_data(as_text=True)
    response = admin.post("/devices/scope-kano-01/revoke", data={"csrf_token": token, "restart_broker": "1"})
    shown = admin.get(response.location).get_data(as_text=True)
    assert marker.exists() and "the broker was restarted" in shown
    assert AuditEvent.get(AuditEvent.action == "restart-broker").username == "boss"


def test_admin_ui_revoke_without_restart_says_the_device_stays_connected(central, admin):
    from sync.fleet.pki import init_pki, issue

    issue(init_pki(central.central.pki_dir), "scope-kano-01")
    device_row("scope-kano-01")
    token = form_token(admin, "/devices/scope-kano-01/revoke")
    response = admin.post("/devices/scope-kano-01/revoke", data={"csrf_token": token})
    shown = admin.get(response.location).get_data(as_text=True)
    assert "scope-kano-01 stays connected to the broker until the broker restarts" in shown
