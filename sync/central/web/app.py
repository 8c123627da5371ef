"""The central server's admin web UI: a Flask app factory, one blueprint per area.

    create_central_app(central_db="var-central/central.db", data_dir="var-central", pki_dir=..., broker=..., tls=False)

Typed options in; one :class:`~sync.central.web.runtime.CentralServer` (data
directory, database, PKI, broker, page size, idle logout) out, carried as
``app.central`` and reached by the views through ``runtime.central()``.

Same security as the device UI (``webui/kit/security.py``): a session key
generated into the central data directory (0600), CSRF on every form,
HttpOnly + SameSite=Strict cookies, a strict CSP without inline script or
style, idle logout, one-line error pages, and deny-by-default role
declarations (``webui/kit/access.py``). Only central admins (role "admin") get
past the login page. Style and idle-logout script are the device UI's own
(``webui/kit/static``); ``sync/central/web/static`` adds the few central-only rules.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import send_from_directory, url_for
from flask_login import current_user
from flask_wtf.csrf import CSRFProtect

from device.config.monitoring import MonitoringSection
from device.services.accounts import LockoutPolicy
from device.store.datadir import DataDir
from sync.central.web import auth, devices, errors, exports, monitoring, people, records
from sync.central.web.runtime import CentralApp, CentralServer
from webui.kit import STATIC_DIR, access, install_templates, security
from webui.kit.proxies import TrustedProxies

DEFAULT_DATA_DIR = Path("var-central")
BLUEPRINTS = (auth, devices, records, errors, monitoring, people, exports)

DEFAULT_BROKER = "localhost:8883"

CENTRAL_ROLES = (access.ADMIN, access.PATHOLOGIST)  # pathologist: the per-clinic export only
NAV_ITEMS = (  # (endpoint, label, roles that see it)
    ("devices.device_list", "Devices", (access.ADMIN,)),
    ("records.record_list", "Records", (access.ADMIN,)),
    ("ingest.error_list", "Ingestion errors", (access.ADMIN,)),
    ("exports.export_page", "Export", CENTRAL_ROLES),
    ("people.user_list", "Users", (access.ADMIN,)),
    ("people.audit_trail", "Audit", (access.ADMIN,)),
)

_HERE = Path(__file__).resolve().parent
csrf = CSRFProtect()


def resolve_data_dir(data_dir: str | Path | None) -> DataDir:
    """The central data directory: argument, $ALLSCOPE_CENTRAL_DATA_DIR, or ./var-central (never the device's)."""
    return DataDir.resolve(data_dir or os.environ.get("ALLSCOPE_CENTRAL_DATA_DIR") or DEFAULT_DATA_DIR)


def resolve_central_db(central_db: str | Path | None, data: DataDir) -> str:
    """The central database: argument, $ALLSCOPE_CENTRAL_DB, or central.db in the data directory."""
    return str(central_db or os.environ.get("ALLSCOPE_CENTRAL_DB") or data.root / "central.db")


def create_central_app(central_db: str | Path | None = None, data_dir: str | Path | None = None, *,
                       pki_dir: str | Path | None = None, broker: str | None = None, tls: bool = False,
                       page_size: int = 50, idle_minutes: int = 15, login_policy: LockoutPolicy | None = None,
                       trusted_proxies: tuple[str, ...] = (), broker_restart_command: str = "",
                       monitoring: MonitoringSection | None = None) -> CentralApp:
    """The central admin UI. ``pki_dir``: $ALLSCOPE_PKI or pki in the data directory (as central run) when
    None; ``broker``: $ALLSCOPE_BROKER or localhost:8883 when None; ``login_policy``: the log-in delays
    (``[login]`` of the configuration file); ``trusted_proxies``: addresses or networks of the reverse proxies
    whose X-Forwarded-For is believed (none by default); ``monitoring``: ``[monitoring]`` (/metrics networks,
    online and silent thresholds, certificate warnings)."""
    from sync.central.db import open_central_database

    data = resolve_data_dir(data_dir)
    server = CentralServer(
        data=data, database=open_central_database(resolve_central_db(central_db, data)),
        pki_dir=Path(pki_dir or os.environ.get("ALLSCOPE_PKI") or data.root / "pki"),
        broker=broker or os.environ.get("ALLSCOPE_BROKER") or DEFAULT_BROKER,
        page_size=page_size, idle_minutes=idle_minutes, tls=tls, login_policy=login_policy or LockoutPolicy(),
        trusted_proxies=tuple(trusted_proxies), broker_restart_command=broker_restart_command,
        monitoring=monitoring or MonitoringSection())
    app = CentralApp(__name__, template_folder=str(_HERE / "templates"), static_folder=str(STATIC_DIR))
    app.central = server
    if server.trusted_proxies:
        app.wsgi_app = TrustedProxies(app.wsgi_app, server.trusted_proxies)  # type: ignore[method-assign]
    app.config.update(security.session_config(data.secret_key(), cookie_name="allscope_central_session",
                                              secure=tls))
    app.config.update(MAX_CONTENT_LENGTH=1024 * 1024, SEND_FILE_MAX_AGE_DEFAULT=3600)
    database = server.database

    install_templates(app)
    security.install(app, csrf, database, error_template="central/error.html", upload_limit_mb=lambda: 1,
                     idle_minutes=lambda: server.idle_minutes,
                     static_endpoints=("static", "central_static"),
                     unexpected="Something went wrong on the central server; the error was logged. "
                                "Nothing was half-saved: try again.")

    @app.get("/central-static/<path:filename>")
    @access.allow_anonymous
    def central_static(filename: str):
        return send_from_directory(_HERE / "static", filename, max_age=3600)

    @app.context_processor
    def _template_globals():
        nav = [(endpoint, label) for endpoint, label, roles in NAV_ITEMS
               if current_user.is_authenticated and current_user.has_any_role(*roles)]
        return {"idle_minutes": server.idle_minutes, "nav_items": nav,
                "central_css": url_for("central_static", filename="central.css")}

    for module in BLUEPRINTS:
        app.register_blueprint(module.bp)
    return app
