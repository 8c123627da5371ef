"""``/healthz`` (anyone: is the database reachable) and ``/metrics`` (Prometheus text, from allowed networks).

Device metrics, read from the database at each scrape (``device/services/device_metrics.py``)::

    allscope_device_captures{status="done"}          captures by status
    allscope_device_analysis_latency_seconds          histogram: capture stored -> analysis written
    allscope_device_outbox_backlog                    sync entries waiting for the central's ack
    allscope_device_disk_free_bytes / _total_bytes    the data directory's file system

The networks allowed to read ``/metrics`` are ``monitoring.metrics_networks`` of
the configuration file (loopback by default); see ``webui/kit/monitoring.py``.
"""

from __future__ import annotations

from flask import Blueprint, abort, request
from prometheus_client.core import GaugeMetricFamily

from device.services.device_metrics import LATENCY_BUCKETS_S, device_figures
from webui.kit.access import allow_anonymous
from webui.kit.monitoring import MetricsAccess, database_check, health_response, histogram_family, metrics_response
from webui.kit.runtime import appliance

bp = Blueprint("monitoring", __name__)


class DeviceCollector:
    def __init__(self, device):
        self.device = device

    def collect(self):
        figures = device_figures(self.device.database, self.device.data.root)
        captures = GaugeMetricFamily("allscope_device_captures", "Captures on this device by analysis status",
                                     labels=["status"])
        for status, count in sorted(figures.captures_by_status.items()):
            captures.add_metric([status], count)
        yield captures
        yield histogram_family("allscope_device_analysis_latency_seconds",
                               "Time from a capture being stored to its analysis being written (recent captures)",
                               figures.analysis_latencies_s, LATENCY_BUCKETS_S)
        if figures.outbox_backlog is not None:
            yield GaugeMetricFamily("allscope_device_outbox_backlog",
                                    "Sync outbox entries waiting for the central's acknowledgement",
                                    value=figures.outbox_backlog)
        yield GaugeMetricFamily("allscope_device_disk_free_bytes", "Free bytes on the data directory's file system",
                                value=figures.disk_free_bytes)
        yield GaugeMetricFamily("allscope_device_disk_total_bytes", "Size of the data directory's file system",
                                value=figures.disk_total_bytes)


@bp.get("/healthz")
@allow_anonymous
def healthz():
    return health_response({"database": database_check(appliance().database)})


@bp.get("/metrics")
@allow_anonymous
def metrics():
    device = appliance()
    if not MetricsAccess(device.config.monitoring.metrics_networks)(request):
        abort(403)
    return metrics_response(DeviceCollector(device))
