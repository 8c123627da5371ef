"""The central server's admin web UI: a Flask app factory, one blueprint per area.

    create_central_app(central_db="var-central/central.db", data_dir="var-central", overrides={...})

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

from flask import Flask, send_from_directory, url_for
from flask_wtf.csrf import CSRFProtect

from device.store.datadir import DataDir
from sync.central.web import auth, devices, errors, records
from webui.kit import STATIC_DIR, access, security

DEFAULT_DATA_DIR = Path("var-central")
CENTRAL_ROLES = (access.ADMIN,)
BLUEPRINTS = (auth, devices, records, errors)

DEFAULTS = {
    "ALLSCOPE_IDLE_MINUTES": 15,
    "ALLSCOPE_TLS": False,              # served behind TLS: mark the session cookie Secure
    "CENTRAL_PKI_DIR": None,            # default: $ALLSCOPE_PKI or pki in the data directory (as central run)
    "CENTRAL_BROKER": None,             # bundles' default broker: $ALLSCOPE_BROKER or localhost:8883
    "CENTRAL_PAGE_SIZE": 50,
}

NAV_ITEMS = (
    ("devices.device_list", "Devices"),
    ("records.record_list", "Records"),
    ("ingest.error_list", "Ingestion errors"),
)

_HERE = Path(__file__).resolve().parent
csrf = CSRFProtect()


def resolve_data_dir(data_dir: str | Path | None) -> DataDir:
    """The central data directory: argument, $ALLSCOPE_CENTRAL_DATA_DIR, or ./var-central (never the device's)."""
    return DataDir.resolve(data_dir or os.environ.get("ALLSCOPE_CENTRAL_DATA_DIR") or DEFAULT_DATA_DIR)


def resolve_central_db(central_db: str | Path | None, data: DataDir) -> str:
    """The central database: argument, $ALLSCOPE_CENTRAL_DB, or central.db in the data directory."""
    return str(central_db or os.environ.get("ALLSCOPE_CENTRAL_DB") or data.root / "central.db")


def create_central_app(central_db: str | Path | None = None, data_dir: str | Path | None = None,
                       overrides: dict | None = None) -> Flask:
    from sync.central.db import open_central_database

    app = Flask(__name__, template_folder=str(_HERE / "templates"),
                static_folder=str(STATIC_DIR))
    app.config.update(DEFAULTS)
    app.config.update(overrides or {})
    data = resolve_data_dir(data_dir)
    app.extensions["central_data"] = data
    app.config["CENTRAL_DATA_DIR"] = str(data.root)
    app.config["CENTRAL_PKI_DIR"] = str(app.config["CENTRAL_PKI_DIR"] or os.environ.get("ALLSCOPE_PKI")
                                        or data.root / "pki")
    app.config["CENTRAL_BROKER"] = (app.config["CENTRAL_BROKER"] or os.environ.get("ALLSCOPE_BROKER")
                                    or "localhost:8883")
    app.config.update(security.session_config(data.secret_key(), cookie_name="allscope_central_session",
                                              secure=app.config["ALLSCOPE_TLS"]))
    app.config.update(MAX_CONTENT_LENGTH=1024 * 1024, SEND_FILE_MAX_AGE_DEFAULT=3600)
    database = open_central_database(resolve_central_db(central_db, data))
    app.extensions["central_db"] = database

    security.install(app, csrf, database, error_template="central/error.html", upload_limit_mb=1,
                     static_endpoints=("static", "central_static"),
                     unexpected="Something went wrong on the central server; the error was logged. "
                                "Nothing was half-saved: try again.")

    @app.get("/central-static/<path:filename>")
    @access.allow_anonymous
    def central_static(filename: str):
        return send_from_directory(_HERE / "static", filename, max_age=3600)

    @app.context_processor
    def _template_globals():
        return {"idle_minutes": app.config["ALLSCOPE_IDLE_MINUTES"], "nav_items": NAV_ITEMS,
                "central_css": url_for("central_static", filename="central.css")}

    for module in BLUEPRINTS:
        app.register_blueprint(module.bp)
    return app
