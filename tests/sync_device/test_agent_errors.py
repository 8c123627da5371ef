"""What `allscope sync status` says went wrong (issue 16): the reason a revoked device is dropped, no error
after a clean exit. Real mosquitto with mutual TLS, a real enrolment bundle, the device's real database."""

from __future__ import annotations

from sync_agent_helpers import enrol_device

from sync.agent.config import load_config
from sync.agent.outbox import get_state
from sync.fleet.pki import revoke


def _agent(pki, broker, tmp_path, device_id):
    from device.store.records import open_database
    from sync.agent.service import SyncAgent

    enrol_device(pki, broker, tmp_path, device_id)
    open_database(tmp_path / "allscope.db")  # an empty outbox
    return SyncAgent(load_config(tmp_path))


def test_a_revoked_device_is_told_its_certificate_was_revoked(pki, mqtt_broker, tmp_path):
    agent = _agent(pki, mqtt_broker, tmp_path, "dev-told-why")
    revoke(pki, "dev-told-why")
    mqtt_broker.restart()  # the broker reads the new CRL
    finished, had_session = agent._session(until_empty=True)
    assert (finished, had_session) == (False, False)
    error = get_state("last_error")
    assert "the broker refused this device's certificate: certificate revoked" in error, error
    assert "re-enrol the device" in error and "Unspecified error" not in error


def test_a_clean_exit_leaves_no_error(pki, mqtt_broker, tmp_path):
    agent = _agent(pki, mqtt_broker, tmp_path, "dev-clean-exit")
    assert agent.run(until_empty=True) == 0  # nothing to send: connects, says offline, disconnects
    assert get_state("last_error") == "", get_state("last_error")
    assert get_state("last_ack_at") == "" and not agent.connected


def test_tls_refusal_is_empty_for_a_good_certificate(pki, mqtt_broker, tmp_path):
    from sync.agent.connection import tls_refusal

    agent = _agent(pki, mqtt_broker, tmp_path, "dev-good-cert")
    assert tls_refusal(agent.config) == ""
