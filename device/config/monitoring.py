"""``[monitoring]`` of the configuration file: who may read ``/metrics``, and the fleet's health thresholds.

The device service and the central server each read their own file; the device
uses ``metrics_networks`` only, the central all four keys.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, field_validator

LOOPBACK = ("127.0.0.0/8", "::1/128")


def check_networks(value: tuple[str, ...]) -> tuple[str, ...]:
    """Each item an IP address or network; one line naming the first that is not."""
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network (such as 10.0.0.0/8)") from None
    return value


class MonitoringSection(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    metrics_networks: tuple[str, ...] = Field(
        LOOPBACK, max_length=32, strict=False,
        description="Addresses or networks allowed to read /metrics (Prometheus). Default: loopback only. "
                    "Behind a reverse proxy the client address counts only when the proxy is trusted "
                    "(central.trusted_proxies); a forwarded request from an untrusted proxy is refused.")
    online_minutes: int = Field(10, ge=1, le=24 * 60,
                                description="Central: a device seen within this many minutes counts as online.")
    silent_days: int = Field(3, ge=1, le=365, description="Central: a device not seen for more than this many days "
                                                           "is flagged silent on the devices page.")
    cert_warning_days: int = Field(30, ge=1, le=3650,
                                   description="Central: certificates expiring within this many days are flagged.")

    @field_validator("metrics_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]):
        return check_networks(value)
