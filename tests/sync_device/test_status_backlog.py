"""The central's view of a device's backlog follows the outbox within seconds (issue 16, defect 5: it lagged by up
to the 30 s status period). Real agent, real receiver, real mosquitto; the status period stays the default 30 s,
so only a status sent because the backlog changed can make the central see the drained outbox in time."""

from __future__ import annotations

from sync_agent_helpers import enrol_device, populate, setup_central, start_central
from sync_fixtures import wait_until

from sync.agent.status_info import StatusPacer

DEVICE = "clinic-backlog-1"


def test_the_central_sees_the_drained_backlog_soon_after_the_acks(pki, mqtt_broker, tmp_path):
    central = setup_central(tmp_path / "central", pki, [(DEVICE, "Clinic Backlog")])
    device = enrol_device(pki, mqtt_broker, tmp_path / "device", DEVICE)
    populate(device.data_dir, 1, amend=False)
    pending = len(device.outbox())
    assert pending > 0

    def central_backlog():
        rows = central.rows("SELECT backlog, last_seen_at FROM device WHERE device_id = ?", (DEVICE,))
        return rows[0][0] if rows and rows[0][1] is not None else None

    receiver = start_central(central, mqtt_broker)
    agent = device.run_agent()
    try:
        wait_until(lambda: device.outbox() == [], 120, "the device's outbox to drain")
        # a bound, not a measurement: well under the 30 s period of the periodic status
        wait_until(lambda: central_backlog() == 0, 12, "the central to see the backlog at 0")
    finally:
        agent.stop()
        receiver.stop()
    assert central_backlog() == 0


def test_the_pacer_publishes_on_a_change_at_most_every_check_and_periodically_otherwise():
    pacer, counted = StatusPacer(interval_s=30.0, check_s=2.0), []

    def count(value):
        return lambda: counted.append(value) or value

    assert pacer.due(0.0, count(5)) == 5          # the first one
    pacer.sent(0.0, 5)
    assert pacer.due(1.0, count(3)) is None and counted == [5]   # too soon to look again: no COUNT at all
    assert pacer.due(2.5, count(5)) is None       # looked: unchanged
    assert pacer.due(4.6, count(3)) == 3          # changed: at once
    pacer.sent(4.6, 3)
    assert pacer.due(20.0, count(3)) is None
    assert pacer.due(34.6, count(3)) == 3         # the periodic "online", unchanged or not
