"""A small fleet through the real path: 20 devices, each with its own certificate, one mosquitto, two
``allscope central run`` receivers sharing the subscription, PostgreSQL; every record stored exactly once.

The devices are ``sync.bench.fleet_devices``' simulated ones (one process, one MQTT connection and
certificate per device, hellos with the enrolment proof, batch envelopes); the same round as
``allscope bench fleet`` runs, asserted on its outcome, never its speed.
"""

from __future__ import annotations

from sync_fixtures import issue_device


def test_twenty_devices_through_two_receivers_on_postgresql_store_every_record_once(
        pki, mqtt_broker, postgres_server, tmp_path):
    from sync.bench.fleet import one_run
    from sync.bench.fleet_devices import SimulatedFleet

    names = [f"fleet-test-{number:02d}" for number in range(20)]
    for name in names:
        issue_device(pki, name)
    fleet = SimulatedFleet(pki, mqtt_broker, names, records=25, batch=8)  # 3 batches and one single envelope a device
    result = one_run(tmp_path, pki, mqtt_broker, postgres_server.create_database(), postgres_server.process.pid,
                     fleet, 2, print)
    assert fleet.messages == 20 * 4
    assert (result["records"], result["stored"]) == (500, 500)
    assert (result["lost"], result["duplicated"], result["altered"]) == (0, 0, 0)
