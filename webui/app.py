"""The touchscreen web UI: a Flask app factory with one blueprint per area.

    create_app(data_dir=..., overrides={...})

Sessions are signed with a key generated into the data directory (0600);
CSRF protects every form and state-changing API call; every view declares its
roles (``webui/kit/access.py``) and undeclared views are refused; a session idle
for ``ALLSCOPE_IDLE_MINUTES`` (default 10, a shared touchscreen) is logged out.
No stack trace ever reaches a page: errors render as one line.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask, url_for
from flask_login import current_user
from flask_wtf.csrf import CSRFProtect

from device.core.analysis import DISCLAIMER
from device.store.datadir import DataDir
from device.store.records import open_database
from webui import api
from webui.kit import STATIC_DIR, access, security
from webui.pages import admin, auth, capture, patients, reports, review

csrf = CSRFProtect()

DEFAULTS = {
    "ALLSCOPE_IDLE_MINUTES": 10,
    "ALLSCOPE_MAX_UPLOAD_MB": 64,
    "ALLSCOPE_MODEL": None,            # default: models/allscope_blast_int8.tflite
    "ALLSCOPE_CAMERA": "replay",       # replay | opencv | picamera2
    "ALLSCOPE_CAMERA_SOURCE": None,    # replay: folder of frames (default: bundled demo frames)
    "ALLSCOPE_START_WORKERS": True,    # analysis worker and camera grabber threads
    "ALLSCOPE_TLS": False,             # served behind TLS: mark the session cookie Secure
}

# (endpoint, label, roles that see it) for the top bar; endpoints not registered are skipped.
NAV_ITEMS = (
    ("patients.patient_list", "Patients", access.CLINICAL),
    ("capture.capture_page", "Capture", access.CLINICAL),
    ("review.queue", "Review", (access.PATHOLOGIST,)),
    ("admin.status", "Admin", (access.ADMIN,)),
)

BLUEPRINTS = (auth, patients, capture, review, reports, admin, api)


def create_app(data_dir: str | Path | None = None, overrides: dict | None = None) -> Flask:
    app = Flask(__name__, static_folder=str(STATIC_DIR))
    app.config.update(DEFAULTS)
    app.config.update(overrides or {})
    data = DataDir.resolve(data_dir or app.config.get("ALLSCOPE_DATA_DIR"))
    app.config["ALLSCOPE_DATA_DIR"] = str(data.root)
    app.extensions["allscope_data"] = data
    app.config.update(security.session_config(data.secret_key(), cookie_name="allscope_session",
                                              secure=bool(app.config["ALLSCOPE_TLS"])))
    app.config.update(
        MAX_CONTENT_LENGTH=int(app.config["ALLSCOPE_MAX_UPLOAD_MB"]) * 1024 * 1024,
        SEND_FILE_MAX_AGE_DEFAULT=3600,  # static files: one request per hour per browser, not one per page
    )
    database = open_database(data.database)
    app.extensions["allscope_db"] = database

    security.install(app, csrf, database, error_template="error.html",
                     upload_limit_mb=app.config["ALLSCOPE_MAX_UPLOAD_MB"],
                     unexpected="Something went wrong on the device; the error was logged. "
                                "Nothing was half-saved: try again or call your administrator.")

    @app.context_processor
    def _template_globals():
        return {"disclaimer": DISCLAIMER, "idle_minutes": app.config["ALLSCOPE_IDLE_MINUTES"],
                "user_has": lambda *roles: current_user.is_authenticated and current_user.has_any_role(*roles),
                "nav_items": NAV_ITEMS, "nav_url": _nav_url}

    for module in BLUEPRINTS:
        app.register_blueprint(module.bp)
        if hasattr(module, "init_app"):
            module.init_app(app)
    return app


def _nav_url(endpoint: str) -> str | None:
    from flask import current_app

    return url_for(endpoint) if endpoint in current_app.view_functions else None
