"""The device's /healthz and /metrics: parsed with prometheus_client's own parser, checked against the database."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
from prometheus_client.parser import text_string_to_metric_families
from review_data import add_sample


def _families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def _sample(families: dict, family: str, name: str, **labels) -> float:
    for sample in families[family].samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    raise AssertionError(f"no {name} {labels} in {family}")


def test_healthz_answers_without_login_and_names_the_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"database": "ok"}}


def test_healthz_is_503_when_the_database_is_gone(app, client):
    app.appliance.database.close()
    app.appliance.data.database.unlink()
    app.appliance.data.database.mkdir()  # a directory where the database file was: SQLite cannot open it
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unhealthy" and body["checks"]["database"].startswith("database unreachable")


def test_metrics_count_captures_latency_outbox_and_disk(app, client):
    from device.store.records import Capture, db_proxy

    add_sample(app)                                # one done capture
    add_sample(app, identifier="MRN-7", status="queued")
    add_sample(app, identifier="MRN-8", status="failed")
    with app.app_context(), db_proxy.atomic():
        capture = Capture.select().where(Capture.status == "done").get()
        Capture.update(analysed_at=capture.created_at + dt.timedelta(seconds=3)).where(
            Capture.id == capture.id).execute()
        outbox = app.appliance.database.execute_sql('SELECT COUNT(*) FROM "outbox"').fetchone()[0]
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    families = _families(response.get_data(as_text=True))
    for status, expected in (("done", 1), ("queued", 1), ("failed", 1), ("analysing", 0)):
        assert _sample(families, "allscope_device_captures", "allscope_device_captures", status=status) == expected
    latency = "allscope_device_analysis_latency_seconds"
    assert families[latency].type == "histogram"
    assert _sample(families, latency, latency + "_count") == 1
    assert _sample(families, latency, latency + "_sum") == pytest.approx(3.0)
    assert _sample(families, latency, latency + "_bucket", le="2.0") == 0
    assert _sample(families, latency, latency + "_bucket", le="5.0") == 1
    assert outbox > 0  # the sync triggers queued the new rows
    assert _sample(families, "allscope_device_outbox_backlog", "allscope_device_outbox_backlog") == outbox
    usage = shutil.disk_usage(app.appliance.data.root)
    assert _sample(families, "allscope_device_disk_total_bytes", "allscope_device_disk_total_bytes") == usage.total
    assert _sample(families, "allscope_device_disk_free_bytes", "allscope_device_disk_free_bytes") > 0


def test_metrics_only_from_allowed_networks(client):
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "192.168.1.20"}).status_code == 403
    # a forged header from outside changes nothing; from an untrusted proxy on loopback it is refused too
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "192.168.1.20"},
                      headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 403
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"},
                      headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 403
    assert client.get("/healthz", environ_base={"REMOTE_ADDR": "192.168.1.20"}).status_code == 200


def test_metrics_networks_come_from_the_configuration_file(tmp_path, users_database):
    from device.config.schema import parse_config
    from webui.app import create_app

    data = tmp_path / "var"
    data.mkdir()
    shutil.copyfile(users_database, data / "allscope.db")
    config = parse_config('[monitoring]\nmetrics_networks = ["10.1.0.0/16"]\n')
    app = create_app(config, data_dir=data, start_workers=False)
    try:
        client = app.test_client()
        assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
        assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 403
    finally:
        app.appliance.stop()


def test_a_bad_metrics_network_is_one_line():
    from device.config.schema import parse_config
    from device.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse_config('[monitoring]\nmetrics_networks = ["not-a-net"]\n')
    assert "'not-a-net' is not an IP address or network" in str(caught.value.problems)
