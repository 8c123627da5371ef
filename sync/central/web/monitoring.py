"""The central's ``/healthz`` (anyone: database and broker reachable) and ``/metrics`` (allowed networks only).

Metrics (``sync/central/health.py`` reads them from the database at each scrape)::

    allscope_central_records_ingested_total{entity}   stored record versions
    allscope_central_ingest_errors_total{reason}      rejected messages
    allscope_central_devices{state}                   enrolled / revoked
    allscope_central_devices_online                   enrolled devices seen within monitoring.online_minutes
    allscope_central_device_backlog{device}           outbox entries each device last reported
    allscope_central_ingest_latency_seconds           histogram: made on the device -> stored here
    allscope_central_receivers{state}                 receivers (allscope central run): running (heartbeat
                                                      fresh), not_responding, stopped

The broker check is a TCP connection to the broker address the server was given
(``--broker`` / $ALLSCOPE_BROKER): it shows the broker is listening, without the
central's client certificate (which the web app does not hold).
"""

from __future__ import annotations

import socket

from flask import Blueprint, abort, request
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from device.errors import AllscopeError
from sync.central.health import LATENCY_BUCKETS_S, central_figures
from sync.central.web.runtime import central
from webui.kit.access import allow_anonymous
from webui.kit.monitoring import MetricsAccess, database_check, health_response, histogram_family, metrics_response

bp = Blueprint("monitoring", __name__)
BROKER_TIMEOUT_S = 2.0


class CentralCollector:
    def __init__(self, online_minutes: int):
        self.online_minutes = online_minutes

    def collect(self):
        figures = central_figures(self.online_minutes)
        records = CounterMetricFamily("allscope_central_records_ingested", "Record versions stored, by entity",
                                      labels=["entity"])
        for entity, count in sorted(figures.records_by_entity.items()):
            records.add_metric([entity], count)
        yield records
        errors = CounterMetricFamily("allscope_central_ingest_errors", "Rejected messages, by reason",
                                     labels=["reason"])
        for reason, count in sorted(figures.errors_by_reason.items()):
            errors.add_metric([reason], count)
        yield errors
        devices = GaugeMetricFamily("allscope_central_devices", "Devices, by state", labels=["state"])
        for state, count in sorted(figures.devices_by_state.items()):
            devices.add_metric([state], count)
        yield devices
        yield GaugeMetricFamily("allscope_central_devices_online",
                                f"Enrolled devices seen within the last {self.online_minutes} minutes",
                                value=figures.devices_online)
        backlog = GaugeMetricFamily("allscope_central_device_backlog",
                                    "Outbox entries each enrolled device last reported", labels=["device"])
        for device_id, count in sorted(figures.backlog_by_device.items()):
            backlog.add_metric([device_id], count)
        yield backlog
        yield histogram_family("allscope_central_ingest_latency_seconds",
                               "Time from a record version being made on its device to being stored here "
                               "(recent versions)", figures.ingest_latencies_s, LATENCY_BUCKETS_S)
        receivers = GaugeMetricFamily("allscope_central_receivers", "Receivers (allscope central run) by state: "
                                      "running while their heartbeat is fresh", labels=["state"])
        for state, count in figures.receivers_by_state.items():
            receivers.add_metric([state], count)
        yield receivers


def broker_check(address: str) -> str:
    from sync.central.service import parse_broker

    try:
        host, port = parse_broker(address)
        with socket.create_connection((host, port), timeout=BROKER_TIMEOUT_S):
            pass
    except (AllscopeError, OSError) as error:
        return f"broker {address} unreachable: {' '.join(str(error).split())[:200]}"
    return "ok"


@bp.get("/healthz")
@allow_anonymous
def healthz():
    server = central()
    return health_response({"database": database_check(server.database), "broker": broker_check(server.broker)})


@bp.get("/metrics")
@allow_anonymous
def metrics():
    server = central()
    if not MetricsAccess(server.monitoring.metrics_networks)(request):
        abort(403)
    return metrics_response(CentralCollector(server.monitoring.online_minutes))
