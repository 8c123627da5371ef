"""``/healthz`` and ``/metrics`` plumbing shared by the device and the central web apps.

    allowed = MetricsAccess(("127.0.0.0/8", "::1/128"))
    if not allowed(request): abort(403)
    return metrics_response(collector)          # Prometheus text format (prometheus_client)
    return health_response({"database": ok, "broker": ok})   # JSON, 200 when all true, else 503

Who may read ``/metrics``: the client address (``REMOTE_ADDR``, which
``webui/kit/proxies.py`` has already set to the client behind a *trusted* proxy)
must lie in one of the configured networks. A request that carries
``X-Forwarded-For`` but did not come through a trusted proxy is refused: an
untrusted reverse proxy on loopback would otherwise make every outside client
look local.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from flask import Response, jsonify
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector


class MetricsAccess:
    def __init__(self, networks: Iterable[str]):
        self.networks = tuple(ipaddress.ip_network(item, strict=False) for item in networks)

    def address_allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)

    def __call__(self, request) -> bool:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded and "allscope.proxy_addr" not in request.environ:
            return False  # came through a proxy we do not trust: its client is unknown
        return self.address_allowed(request.remote_addr or "")


def metrics_response(collector: Collector) -> Response:
    """One scrape: a fresh registry around ``collector`` (values read now, nothing kept between scrapes)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return Response(generate_latest(registry), mimetype=None, content_type=CONTENT_TYPE_LATEST,
                    headers={"Cache-Control": "no-store"})


def health_response(checks: dict[str, str]) -> Response:
    """``checks``: name -> "ok" or a one-line problem. 200 when every check is "ok", else 503 with the
    problems joined into one ``error`` line."""
    problems = [" ".join(value.split()) for value in checks.values() if value != "ok"]
    body: dict = {"status": "unhealthy" if problems else "ok", "checks": checks}
    if problems:  # the JSON APIs' one-line "error", as every error answer of both apps carries
        body["error"] = "; ".join(problems)
    healthy = not problems
    response = jsonify(body)
    response.status_code = 200 if healthy else 503
    response.headers["Cache-Control"] = "no-store"
    return response


def database_check(database) -> str:
    """"ok" when ``SELECT 1`` answers, else the error in one line."""
    try:
        database.execute_sql("SELECT 1").fetchone()
    except Exception as error:  # noqa: BLE001 - any failure is the answer
        return f"database unreachable: {' '.join(str(error).split())[:200]}"
    return "ok"


def histogram_family(name: str, documentation: str, values: list[float], bounds: tuple[float, ...]):
    """A Prometheus histogram of ``values`` (cumulative buckets at ``bounds``, then +Inf, and the sum)."""
    from prometheus_client.core import HistogramMetricFamily

    ordered = sorted(values)
    buckets, index = [], 0
    for bound in bounds:
        while index < len(ordered) and ordered[index] <= bound:
            index += 1
        buckets.append((repr(float(bound)), index))
    buckets.append(("+Inf", len(ordered)))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=float(sum(ordered)))
