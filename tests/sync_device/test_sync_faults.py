"""Sync under faults: the agent SIGKILLed mid-sync, the broker restarted mid-sync, the central down for a while.

One scenario walks through all three on the same backlog (real mosquitto with
TLS, real ``allscope sync run`` and ``allscope central run`` processes, SQLite on
disk). Progress is read from the central database; each fault is injected when
a given share of the backlog has arrived, and the test checks it really
happened mid-sync. At the end the central holds every (device, entity,
record_id, version) exactly once with the device's content, every crop is
complete, and the device outbox is empty. The figures are printed.
"""

from __future__ import annotations

import re
import time

from sync_agent_helpers import (
    assert_synced_exactly_once,
    crop_hashes,
    enrol_device,
    populate,
    setup_central,
    start_central,
)
from sync_fixtures import wait_until

DEVICE = "clinic-faults-1"
BOUND = 90.0  # seconds any one phase may take (a bound for a hung test, never a pass condition)
AGENT_SETTINGS = dict(max_message_bytes=8 * 1024, window=8, ack_timeout_s=3, backoff_initial_s=0.2,
                      backoff_max_s=2, status_interval_s=2)


def test_kill_broker_restart_and_central_outage_lose_and_duplicate_nothing(pki, mqtt_broker, tmp_path):
    started = time.monotonic()
    central = setup_central(tmp_path / "central", pki, [(DEVICE, "Faulty Clinic")])
    device = enrol_device(pki, mqtt_broker, tmp_path / "device", DEVICE, **AGENT_SETTINGS)
    counts = populate(device.data_dir, 24)
    expected = device.outbox()
    total = len(expected)

    def stored() -> int:
        return len(central.rows("SELECT 1 FROM received_record"))

    # 1. The central is down: the agent connects, announces itself, and waits.
    agent = device.run_agent()
    agent.wait_for_line("connected to")
    assert stored() == 0
    receiver = start_central(central, mqtt_broker)
    processes = [agent, receiver]
    figures = {"records": total, "agent_kills": 0, "broker_restarts": 0, "central_outages": 1}  # 1: at the start
    try:
        # 2. SIGKILL the agent mid-sync, then start it again.
        at_kill = wait_until(lambda: (n := stored()) >= total // 5 and n, BOUND, "a fifth of the backlog")
        agent.kill()
        assert stored() < total, "the sync finished before the agent could be killed"
        figures["agent_kills"] += 1
        agent = device.run_agent()
        processes.append(agent)

        # 3. Restart the broker mid-sync.
        wait_until(lambda: stored() >= total * 2 // 5, BOUND, "two fifths of the backlog")
        at_restart = stored()
        mqtt_broker.restart()
        assert at_restart < total, "the sync finished before the broker restart"
        figures["broker_restarts"] += 1

        # 4. The central goes down (SIGKILL: no goodbye) for a while, then comes back.
        wait_until(lambda: stored() >= total * 3 // 5, BOUND, "three fifths of the backlog")
        receiver.kill()
        at_outage = stored()
        assert at_outage < total, "the sync finished before the central went down"
        figures["central_outages"] += 1
        agent.wait_for_line("connected to")  # still connected to the broker, still sending into the queue
        time.sleep(1.0)  # an outage of some length: the agent keeps publishing, nothing is acknowledged
        receiver = start_central(central, mqtt_broker, client_id="central-test")
        processes.append(receiver)

        # 5. SIGKILL the agent once more, after the outage, and restart it.
        wait_until(lambda: stored() >= total * 4 // 5, BOUND, "four fifths of the backlog")
        agent.kill()
        assert stored() < total, "the sync finished before the second kill"
        figures["agent_kills"] += 1
        agent = device.run_agent()
        processes.append(agent)

        # 6. Everything arrives; the agent empties its outbox.
        wait_until(lambda: not device.outbox(), BOUND * 2, "an empty device outbox")
        assert agent.stop() == 0, agent.tail()
        wait_until(lambda: central.rows("SELECT online FROM device WHERE device_id = ?", (DEVICE,)) == [(0,)],
                   30, "the agent's offline status at the central")
    finally:
        for process in processes:
            process.stop()

    checked = assert_synced_exactly_once(central, device, expected)
    files = central.files()
    crops = crop_hashes(device)
    assert all(files.get(sha, (False,))[0] for sha in crops), "a crop is missing or incomplete at the central"
    reasons = central.errors()
    assert set(reasons) <= {"no_key"}, f"unexpected ingestion errors: {reasons}"
    duplicates = sum(_count(line, "duplicate") for process in processes[1:] for line in process.lines
                     if "stopped after" in line)
    figures.update(checked=checked, duplicate_acks=duplicates, crops_checked=len(crops), stored_at_kill=at_kill, stored_at_broker_restart=at_restart,
                   stored_at_central_outage=at_outage, seconds=round(time.monotonic() - started, 1), **counts)
    print(f"\nfaults: {figures}")


def _count(line: str, key: str) -> int:
    """A figure from a receiver's last line, "... stopped after N envelopes (duplicate 3, stored 40)"."""
    match = re.search(rf"\b{key} (\d+)", line)
    return int(match.group(1)) if match else 0
