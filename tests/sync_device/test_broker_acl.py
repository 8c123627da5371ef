"""The allscope mosquitto configuration against a real mosquitto 2 with real mutual TLS.

Negative cases ("never arrives") are proven with a barrier instead of a pause: MQTT keeps the order of
one publisher's messages to one subscriber, so when a later, allowed message from the same client has
arrived, an earlier forbidden one can no longer arrive.
"""

from __future__ import annotations

import json
import socket

import paho.mqtt.client as mqtt
import pytest
from sync_fixtures import Refused, close, issue_device, mqtt_client, receive, wait_until

from sync.fleet.pki import init_pki, issue, revoke
from sync.wire import topics

NOT_AUTHORIZED = 135  # MQTT v5 reason code 0x87


def central(broker, client_id="central-1", subscribe=None):
    pki = broker.pki
    return mqtt_client(broker, pki.cert_path("central"), pki.key_path("central"), client_id=client_id,
                       subscribe=subscribe if subscribe is not None else
                       [(topics.shared_up_subscription(), 1), (topics.status_subscription(), 1)])


def device(broker, device_id, **kwargs):
    issued = issue_device(broker.pki, device_id)
    return mqtt_client(broker, issued.cert, issued.key, client_id=device_id, **kwargs)


def publish(client, topic, payload, qos=1):
    """Publish and return the broker's PUBACK reason code (QoS 1) once it has arrived."""
    info = client.publish(topic, payload, qos=qos)
    if qos == 0:
        info.wait_for_publish(10)
        return None
    wait_until(lambda: info.mid in client.pubacks, what=f"PUBACK for {topic}")
    return client.pubacks[info.mid]


def log_size(broker) -> int:
    try:
        return len(broker.log.read_text(errors="replace"))
    except OSError:
        return 0


def wait_for_log(broker, since: int, *texts: str) -> None:
    """Until the broker has logged one of ``texts`` after offset ``since``.

    mosquitto may write the line after the client has already seen the refusal, and other
    connections' lines may follow it: a fixed tail read right away is a race.
    """
    wait_until(lambda: any(t in broker.log.read_text(errors="replace")[since:] for t in texts),
               what=f"the broker to log {' or '.join(map(repr, texts))}")


def subscribe(client, topic, qos=1):
    result, mid = client.subscribe(topic, qos)
    assert result == mqtt.MQTT_ERR_SUCCESS
    return wait_until(lambda: client.suback.get(mid), what=f"SUBACK for {topic}")[0]


# --- who may connect ------------------------------------------------------------------------------------

def test_plain_tcp_mqtt_gets_no_session(mqtt_broker):
    """No plain listener: an MQTT CONNECT without TLS is never answered with a CONNACK."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="plain", protocol=mqtt.MQTTv5,
                         reconnect_on_failure=False)
    acks = []
    client.on_connect = lambda *args: acks.append(args)
    assert client.connect(mqtt_broker.host, mqtt_broker.port) == mqtt.MQTT_ERR_SUCCESS  # TCP only
    result = mqtt.MQTT_ERR_SUCCESS
    for _ in range(200):  # until the broker drops the connection (it does so at once)
        result = client.loop(0.05)
        if result != mqtt.MQTT_ERR_SUCCESS:
            break
    assert result == mqtt.MQTT_ERR_CONN_LOST and acks == [] and not client.is_connected()


def test_client_without_certificate_is_refused(mqtt_broker):
    mark = log_size(mqtt_broker)
    with pytest.raises(Refused):
        mqtt_client(mqtt_broker, client_id="anonymous")
    wait_for_log(mqtt_broker, mark, "certificate")


def test_certificate_of_another_ca_is_refused(mqtt_broker, tmp_path):
    rogue = init_pki(tmp_path / "rogue")
    forged = issue(rogue, "dev-a")  # same CN as a real device, wrong CA
    mark = log_size(mqtt_broker)
    with pytest.raises(Refused):
        mqtt_client(mqtt_broker, forged.cert, forged.key, client_id="dev-a")
    wait_for_log(mqtt_broker, mark, "certificate verify failed")


def test_the_broker_server_certificate_is_no_client_certificate(mqtt_broker):
    pki = mqtt_broker.pki
    with pytest.raises(Refused):
        mqtt_client(mqtt_broker, pki.cert_path("broker"), pki.key_path("broker"), client_id="broker")


def test_a_fleet_certificate_connects_with_its_cn_as_username(mqtt_broker):
    mark = log_size(mqtt_broker)
    client = device(mqtt_broker, "dev-a")
    close(client)
    wait_for_log(mqtt_broker, mark, "as dev-a (p5, c1, k30, u'dev-a')")


# --- what a device may publish and read -----------------------------------------------------------------

def test_a_device_publishes_only_under_its_own_id(mqtt_broker):
    receiver = central(mqtt_broker)
    a = device(mqtt_broker, "dev-a")
    # mosquitto 2.0 answers a forbidden QoS 1 publish of an MQTT v5 client with PUBACK 0x87 and drops it;
    # a QoS 0 one is dropped silently.
    assert publish(a, topics.up("dev-b"), b"forged-up").value == NOT_AUTHORIZED
    assert publish(a, topics.status("dev-b"), b'{"state": "offline"}').value == NOT_AUTHORIZED
    assert publish(a, topics.ack("dev-a"), b"self-ack").value == NOT_AUTHORIZED
    assert publish(a, "allscope/v1/devices/dev-a/other", b"elsewhere").value == NOT_AUTHORIZED
    publish(a, topics.up("dev-b"), b"forged-qos0", qos=0)
    assert publish(a, topics.up("dev-a"), b"own-up").value == 0
    first = receive(receiver)  # the barrier: nothing forged came before it, so nothing forged will come
    assert (first.topic, first.payload) == (topics.up("dev-a"), b"own-up")
    assert receiver.messages.empty()
    close(a, receiver)


def test_a_device_reads_only_its_own_acknowledgements(mqtt_broker):
    sender = central(mqtt_broker, subscribe=[])
    a = device(mqtt_broker, "dev-a")
    # mosquitto 2.0.11 grants a subscription the ACL forbids and then delivers nothing on it (newer
    # releases may answer 0x87 instead); either way not one message of dev-b reaches dev-a.
    for forbidden in (topics.ack("dev-b"), "allscope/v1/devices/+/ack", topics.up("dev-b"), "#"):
        assert subscribe(a, forbidden).value in (1, NOT_AUTHORIZED)
    assert publish(sender, topics.ack("dev-b"), b"ack-for-b").value == 0
    b = device(mqtt_broker, "dev-b")
    assert publish(b, topics.up("dev-b"), b"b-up").value == 0
    # mosquitto is single-threaded: what was PUBACKed before the barrier was published was routed before it
    assert publish(sender, topics.ack("dev-a"), b"barrier").value == 0
    seen = []
    while not seen or seen[-1].payload != b"barrier":
        seen.append(receive(a))
    # overlapping subscriptions ("+/ack", "#") may deliver the barrier more than once, but only the barrier
    assert {(m.topic, m.payload) for m in seen} == {(topics.ack("dev-a"), b"barrier")}
    close(a, b, sender)


def test_taking_over_another_devices_client_id_reveals_nothing(mqtt_broker):
    """dev-a connecting under dev-b's client id gets dev-b's session but none of its queued messages.

    (The broker cannot stop the takeover itself — several central receivers share one identity, so the
    client id is not forced to the certificate's CN — but every delivery is checked against the ACL.)
    """
    sender = central(mqtt_broker, subscribe=[])
    b = device(mqtt_broker, "dev-b", clean_start=False, session_expiry=3600, subscribe=[(topics.ack("dev-b"), 1)])
    close(b)
    assert publish(sender, topics.ack("dev-b"), b"queued-for-b").value == 0
    a_cert = issue_device(mqtt_broker.pki, "dev-a")
    impostor = mqtt_client(mqtt_broker, a_cert.cert, a_cert.key, client_id="dev-b", clean_start=False,
                           session_expiry=3600)
    assert subscribe(impostor, topics.ack("dev-a")).value == 1
    assert publish(sender, topics.ack("dev-a"), b"barrier").value == 0
    assert receive(impostor).payload == b"barrier" and impostor.messages.empty()
    close(impostor, sender)


# --- central receivers, status, persistence, revocation -------------------------------------------------

def test_two_central_receivers_share_the_stream_each_message_once(mqtt_broker):
    first, second = central(mqtt_broker, "central-1"), central(mqtt_broker, "central-2")
    a, b = device(mqtt_broker, "dev-a"), device(mqtt_broker, "dev-b")
    sent = set()
    for index in range(20):
        for name, client in (("dev-a", a), ("dev-b", b)):
            payload = f"{name}:{index}".encode()
            assert publish(client, topics.up(name), payload).value == 0
            sent.add((topics.up(name), payload))
    got = {"central-1": [], "central-2": []}

    def drain():
        for name, client in (("central-1", first), ("central-2", second)):
            while not client.messages.empty():
                message = client.messages.get()
                got[name].append((message.topic, message.payload))
        return len(got["central-1"]) + len(got["central-2"]) >= len(sent)

    wait_until(drain, what="all 40 envelopes at the central receivers")
    one, two = got["central-1"], got["central-2"]
    assert len(one) + len(two) == len(sent) and set(one) | set(two) == sent and not set(one) & set(two)
    assert one and two  # both receivers took part
    close(a, b, first, second)


def test_retained_last_will_when_the_device_drops_off(mqtt_broker):
    watcher = central(mqtt_broker, subscribe=[(topics.status_subscription(), 1)])
    offline = json.dumps({"state": "offline"}).encode()
    a = device(mqtt_broker, "dev-a", will=(topics.status("dev-a"), offline, 1, True))
    assert publish(a, topics.status("dev-a"), json.dumps({"state": "online", "backlog": 3}).encode()).value == 0
    assert json.loads(receive(watcher).payload)["state"] == "online"
    a.socket().shutdown(socket.SHUT_RDWR)  # a cable pulled: no DISCONNECT packet
    will = receive(watcher)
    assert (will.topic, will.payload) == (topics.status("dev-a"), offline)
    a.loop_stop()
    late = central(mqtt_broker, "central-late", subscribe=[(topics.status_subscription(), 1)])
    retained = receive(late)
    assert retained.retain and retained.payload == offline
    close(watcher, late)


def test_a_queued_message_survives_a_broker_restart(mqtt_broker):
    a = device(mqtt_broker, "dev-a", clean_start=False, session_expiry=3600, subscribe=[(topics.ack("dev-a"), 1)])
    close(a)
    sender = central(mqtt_broker, subscribe=[])
    assert publish(sender, topics.ack("dev-a"), b"ack-while-offline").value == 0
    close(sender)
    mqtt_broker.restart()
    a = device(mqtt_broker, "dev-a", clean_start=False, session_expiry=3600)
    message = receive(a)
    assert (message.topic, message.payload, message.qos) == (topics.ack("dev-a"), b"ack-while-offline", 1)
    close(a)


def test_a_revoked_device_cannot_connect_after_a_reload_or_restart(mqtt_broker):
    issued = issue_device(mqtt_broker.pki, "dev-revoked")
    close(mqtt_client(mqtt_broker, issued.cert, issued.key, client_id="dev-revoked"))
    assert revoke(mqtt_broker.pki, "dev-revoked") == [issued.serial]
    mqtt_broker.reload()  # SIGHUP: the listener's TLS context (and its CRL) is rebuilt

    def refused():
        try:
            close(mqtt_client(mqtt_broker, issued.cert, issued.key, client_id="dev-revoked"))
        except Refused:
            return True
        return False

    wait_until(refused, what="the revoked certificate to be refused after SIGHUP")
    close(device(mqtt_broker, "dev-a"))  # the others are unaffected
    mqtt_broker.restart()
    mark = log_size(mqtt_broker)
    with pytest.raises(Refused):
        mqtt_client(mqtt_broker, issued.cert, issued.key, client_id="dev-revoked")
    wait_for_log(mqtt_broker, mark, "certificate revoked", "verify failed")
    close(device(mqtt_broker, "dev-a"))


def test_broker_config_cli_renders_one_mutual_tls_listener(tmp_path, pki):
    import subprocess
    import sys

    from conftest import REPO_ROOT

    out = tmp_path / "mosquitto.conf"
    made = subprocess.run([sys.executable, "-m", "device.cli", "central", "broker-config", "--pki", str(pki.root),
                           "--persistence", str(tmp_path / "db"), "--port", "8884", "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    # written, and the missing persistence folder reported (tests/sync_device/test_broker_checks.py: the checks)
    assert made.returncode == 1 and out.exists(), made.stderr
    assert all(line.startswith("allscope: broker problem: ") for line in made.stderr.splitlines()), made.stderr
    lines = [line.split() for line in out.read_text().splitlines() if line and not line.startswith("#")]
    settings = {line[0]: line[1:] for line in lines}
    assert [line for line in lines if line[0] == "listener"] == [["listener", "8884"]]
    assert settings["require_certificate"] == ["true"] and settings["use_identity_as_username"] == ["true"]
    assert settings["allow_anonymous"] == ["false"] and settings["persistence"] == ["true"]
    assert settings["crlfile"] == [str(pki.crl.resolve())] and settings["user"] == ["mosquitto"]
    assert settings["cafile"] == [str(pki.ca_cert.resolve())]
    assert not {"password_file", "psk_file", "psk_hint"} & set(settings)
