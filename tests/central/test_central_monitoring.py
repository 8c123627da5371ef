"""The central's /healthz (database and broker, real mosquitto) and /metrics (parsed with prometheus_client's
parser, checked against rows in real SQLite and PostgreSQL databases)."""

from __future__ import annotations

import datetime as dt

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sync.fleet.broker import free_port


def _families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def _value(families: dict, family: str, name: str, **labels) -> float:
    for sample in families[family].samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    raise AssertionError(f"no {name} {labels} in {family}")


@pytest.fixture(params=["sqlite", "postgresql"])
def central_any(request, tmp_path):
    from sync.central.web.app import create_central_app

    url = tmp_path / "central.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    app = create_central_app(url, tmp_path / "data", pki_dir=tmp_path / "pki", broker=f"127.0.0.1:{free_port()}")
    app.testing = True
    yield app
    app.central.database.close()


def _fill(now: dt.datetime):
    from central_web_kit import device_row, patient_row, record_row

    from sync.central.models import IngestError

    kano = device_row("scope-kano-01", last_seen_at=now - dt.timedelta(minutes=2), backlog=7, online=True)
    device_row("scope-jos-02", clinic="Jos", last_seen_at=now - dt.timedelta(hours=3), backlog=0)
    device_row("scope-old-03", clinic="Old", state="revoked", backlog=99)
    patient_row(kano, 1, "P-1", "Ada Obi")
    patient_row(kano, 2, "P-2", "Bola Ade")
    record_row(kano, "sample", 1, 1, {"id": 1}, "P-1")
    latest = record_row(kano, "report", 1, 1, {"id": 1, "status": "draft"}, "P-1", when=now - dt.timedelta(seconds=20))
    # received_at is "now" by default: the latest version took 20 s from the device to here
    assert latest.received_at >= latest.created_at
    for reason in ("bad_signature", "bad_signature", "unknown_device"):
        IngestError.create(device_id="x", reason=reason, detail="test")
    _receivers(now)


def _receivers(now: dt.datetime):
    """Two receivers with a fresh heartbeat, one killed (silent for a minute), one stopped cleanly."""
    from sync.central import receivers
    from sync.central.models import ReceiverBeat

    for client_id in ("central-a", "central-b", "central-killed", "central-old"):
        receivers.register(client_id, "host", 100)
    ReceiverBeat.update(last_seen_at=now - dt.timedelta(seconds=receivers.STALE_AFTER_S + 30)).where(
        ReceiverBeat.client_id == "central-killed").execute()
    receivers.stopped("central-old", handled=5)


def test_metrics_match_the_database(central_any):
    from device.store.records import utcnow

    with central_any.app_context():
        _fill(utcnow())
    response = central_any.test_client().get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    families = _families(response.get_data(as_text=True))
    records = "allscope_central_records_ingested"
    assert families[records].type == "counter"
    for entity, count in (("patient", 2), ("sample", 1), ("report", 1), ("capture", 0)):
        assert _value(families, records, records + "_total", entity=entity) == count
    errors = "allscope_central_ingest_errors"
    assert _value(families, errors, errors + "_total", reason="bad_signature") == 2
    assert _value(families, errors, errors + "_total", reason="unknown_device") == 1
    assert _value(families, "allscope_central_devices", "allscope_central_devices", state="enrolled") == 2
    assert _value(families, "allscope_central_devices", "allscope_central_devices", state="revoked") == 1
    assert _value(families, "allscope_central_devices_online", "allscope_central_devices_online") == 1
    backlog = "allscope_central_device_backlog"
    assert _value(families, backlog, backlog, device="scope-kano-01") == 7
    assert _value(families, backlog, backlog, device="scope-jos-02") == 0
    assert not [s for s in families[backlog].samples if s.labels["device"] == "scope-old-03"]  # revoked: not listed
    latency = "allscope_central_ingest_latency_seconds"
    assert families[latency].type == "histogram"
    assert _value(families, latency, latency + "_count") == 4
    assert _value(families, latency, latency + "_bucket", le="1.0") == 0
    assert _value(families, latency, latency + "_bucket", le="30.0") == 1  # the report, 20 s; the rest are 2024's
    receivers = "allscope_central_receivers"
    assert families[receivers].type == "gauge"
    assert _value(families, receivers, receivers, state="running") == 2
    assert _value(families, receivers, receivers, state="not_responding") == 1
    assert _value(families, receivers, receivers, state="stopped") == 1


def test_online_minutes_come_from_the_monitoring_section(tmp_path):
    from device.config.monitoring import MonitoringSection
    from device.store.records import utcnow
    from sync.central.web.app import create_central_app

    app = create_central_app(tmp_path / "central.db", tmp_path / "data", pki_dir=tmp_path / "pki",
                             monitoring=MonitoringSection(online_minutes=24 * 60))
    try:
        with app.app_context():
            _fill(utcnow())
        families = _families(app.test_client().get("/metrics").get_data(as_text=True))
        assert _value(families, "allscope_central_devices_online", "allscope_central_devices_online") == 2
    finally:
        app.central.database.close()


def test_metrics_only_from_allowed_networks_and_trusted_proxies(tmp_path):
    from device.config.monitoring import MonitoringSection
    from sync.central.web.app import create_central_app

    app = create_central_app(tmp_path / "central.db", tmp_path / "data", pki_dir=tmp_path / "pki",
                             trusted_proxies=("10.9.0.1",),
                             monitoring=MonitoringSection(metrics_networks=("127.0.0.1", "192.0.2.0/24")))
    try:
        client = app.test_client()

        def status(remote: str, forwarded: str = "") -> int:
            headers = {"X-Forwarded-For": forwarded} if forwarded else {}
            return client.get("/metrics", environ_base={"REMOTE_ADDR": remote}, headers=headers).status_code

        assert status("127.0.0.1") == 200
        assert status("192.0.2.44") == 200
        assert status("198.51.100.7") == 403
        assert status("198.51.100.7", forwarded="127.0.0.1") == 403   # forged header, untrusted sender
        assert status("127.0.0.1", forwarded="198.51.100.7") == 403   # an untrusted proxy on loopback
        assert status("10.9.0.1", forwarded="192.0.2.5") == 200       # trusted proxy, allowed client
        assert status("10.9.0.1", forwarded="198.51.100.7") == 403    # trusted proxy, outside client
        assert status("10.9.0.1") == 403                              # the proxy itself is not allowed
        assert client.get("/healthz", environ_base={"REMOTE_ADDR": "198.51.100.7"}).status_code in (200, 503)
    finally:
        app.central.database.close()


def test_healthz_reports_the_broker_and_the_database(tmp_path, mqtt_broker):
    from sync.central.web.app import create_central_app

    app = create_central_app(tmp_path / "central.db", tmp_path / "data", pki_dir=tmp_path / "pki",
                             broker=f"{mqtt_broker.host}:{mqtt_broker.port}")
    try:
        client = app.test_client()
        response = client.get("/healthz")
        assert response.status_code == 200, response.get_json()
        assert response.get_json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}
        mqtt_broker.stop()
        response = client.get("/healthz")
        assert response.status_code == 503
        body = response.get_json()
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["broker"].startswith(f"broker {mqtt_broker.host}:{mqtt_broker.port} unreachable")
        assert body["error"] == body["checks"]["broker"] and "\n" not in body["error"]
    finally:
        app.central.database.close()


def test_healthz_reports_a_database_that_is_gone(postgres_server, tmp_path):
    from sync.central.web.app import create_central_app

    url = postgres_server.create_database()
    app = create_central_app(url, tmp_path / "data", pki_dir=tmp_path / "pki", broker=f"127.0.0.1:{free_port()}")
    try:
        app.central.database.close()
        name = url.rsplit("/", 1)[1]
        app.central.database.init(name, **{**app.central.database.connect_params, "port": free_port()})
        response = app.test_client().get("/healthz")
        assert response.status_code == 503
        assert response.get_json()["checks"]["database"].startswith("database unreachable")
    finally:
        app.central.database.close()
