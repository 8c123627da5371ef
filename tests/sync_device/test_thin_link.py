"""A thin link that drops mid-transfer: the agent resumes, every record arrives once, every file intact.

Real parts: the agent (``allscope sync run``) in its own network namespace behind a veth shaped
to 256 kbit/s both ways (``sync/bench/thinlink_net.py``), mosquitto with mutual TLS and
``allscope central run`` on the host. The device sends full frames (media "frames"), so a
frame is in chunks on the wire when the device's end of the link goes down; it stays down
until the agent has noticed the connection is gone, then comes back. Asserted: outcomes,
never times. Needs root and iproute2 (a namespace and a qdisc): skipped with the reason otherwise.
"""

from __future__ import annotations

import hashlib

import pytest
from sync_agent_helpers import (
    DEMO_FRAMES,
    assert_files_complete,
    assert_synced_exactly_once,
    enrol_device,
    populate,
    setup_central,
    start_central,
)
from sync_fixtures import wait_until

from sync.bench.thinlink_net import ThinLink, unavailable

DEVICE = "clinic-thin-1"
REASON = unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"thin link: {REASON}")


@pytest.fixture
def thin_link():
    with ThinLink(rate="256kbit", tag="t") as link:
        yield link


def test_a_link_dropped_mid_chunk_resumes_with_every_record_once_and_every_file_intact(tmp_path, thin_link):
    from sync.bench.probes import Process
    from sync.fleet.broker import Broker
    from sync.fleet.pki import DEFAULT_BROKER_HOSTS, init_pki

    assert DEMO_FRAMES, "the demo frames ship with the repository"
    pki = init_pki(tmp_path / "pki", broker_hosts=(*DEFAULT_BROKER_HOSTS, thin_link.host_ip))
    broker = Broker(pki, tmp_path / "broker", host=thin_link.host_ip).start()
    central = setup_central(tmp_path / "central", pki, [(DEVICE, "Remote clinic")])
    device = enrol_device(pki, broker, tmp_path / "device", DEVICE, media="frames", keepalive_s=5,
                          backoff_initial_s=0.5, backoff_max_s=2.0)
    populate(device.data_dir, 1, amend=False)
    expected = device.outbox()
    files = {sha for (sha,) in device.rows("SELECT sha256 FROM capture")}
    files |= {hashlib.sha256((device.data_dir / path).read_bytes()).hexdigest()
              for (path,) in device.rows("SELECT crop_path FROM cell")}
    receiver = start_central(central, broker)
    agent = Process(["-m", "device.cli", "sync", "run", "--data-dir", str(device.data_dir)],
                    device.data_dir / "agent.log", prefix=thin_link.prefix)
    try:
        # The frame is on its way: some of its chunks are at the central, not all of them.
        wait_until(lambda: central.rows("SELECT COUNT(*) FROM file_chunk")[0][0] > 0, 180, "the first chunks")
        assert central.rows("SELECT COUNT(*) FROM received_file WHERE complete = 0")[0][0] >= 1
        thin_link.down()
        try:
            wait_until(lambda: any("connection lost" in line or "disconnected from" in line for line in agent.lines),
                       120, "the agent to notice the dropped link")
        finally:
            thin_link.up()
        wait_until(lambda: not device.outbox() and all(central.files().get(sha, (False,))[0] for sha in files),
                   600, "the backlog to drain after the link came back")
    finally:
        agent.stop()
        receiver.stop()
        broker.stop()
    assert sum("connected to" in line for line in agent.lines) >= 2, "the agent never had to reconnect"
    assert assert_synced_exactly_once(central, device, expected) == len(expected)
    assert assert_files_complete(central, files) == len(files)
    assert central.errors() == {}
