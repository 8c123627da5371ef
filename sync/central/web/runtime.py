"""The central admin UI's one typed handle on what it runs on: data directory, database, PKI, broker, options.

    central()     # CentralServer of the current app (``sync/central/web/app.py`` sets it once, at creation)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import peewee as pw
from flask import Flask, current_app

from device.config.monitoring import MonitoringSection
from device.services.accounts import LockoutPolicy
from device.store.datadir import DataDir


@dataclass(frozen=True)
class CentralServer:
    """Resolved once by ``create_central_app``: every default and flag already applied."""

    data: DataDir
    database: pw.Database
    pki_dir: Path                # fleet PKI for enrol/revoke: flag, else $ALLSCOPE_PKI, else pki/ in the data dir
    broker: str                  # the bundles' default broker: flag, else $ALLSCOPE_BROKER, else localhost:8883
    page_size: int = 50
    idle_minutes: int = 15
    tls: bool = False            # served behind TLS: the session cookie is Secure
    login_policy: LockoutPolicy = field(default_factory=LockoutPolicy)  # [login] of the configuration file
    trusted_proxies: tuple[str, ...] = ()  # central.trusted_proxies: X-Forwarded-For only from these
    broker_restart_command: str = ""       # central.broker_restart_command: the revoke page may restart the broker
    monitoring: MonitoringSection = field(default_factory=MonitoringSection)  # [monitoring]: /metrics, health


class CentralApp(Flask):
    """A Flask app that carries its CentralServer."""

    central: CentralServer


def central() -> CentralServer:
    return cast(CentralApp, current_app._get_current_object()).central
