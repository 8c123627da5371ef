"""The touchscreen web UI: a Flask app factory with one blueprint per area.

    create_app(load_config(), data_dir=..., model=..., start_workers=True)

Typed options in: the configuration file (``device.config.schema.AllscopeConfig``)
and the command line's flags. They make one
:class:`~device.services.appliance.Appliance` (data directory, database, the
settings in force, the analysis worker and the camera) that the app carries as
``app.appliance`` and the views reach through ``webui.kit.runtime.appliance()``.

Sessions are signed with a key generated into the data directory (0600);
CSRF protects every form and state-changing API call; every view declares its
roles (``webui/kit/access.py``) and undeclared views are refused; a session idle
for the idle-logout setting (default 10 minutes, a shared touchscreen) is logged out.
No stack trace ever reaches a page: errors render as one line.
"""

from __future__ import annotations

import os

from flask import url_for
from flask_login import current_user
from flask_wtf.csrf import CSRFProtect

from device.config.schema import AllscopeConfig
from device.core.analysis import DISCLAIMER
from device.services.appliance import Appliance
from webui import api
from webui.kit import STATIC_DIR, access, install_templates, security
from webui.kit.runtime import DeviceApp
from webui.pages import admin, auth, capture, monitoring, patients, reports, results, review

csrf = CSRFProtect()
MB = 1024 * 1024

# (endpoint, label, roles that see it) for the top bar; endpoints not registered are skipped.
NAV_ITEMS = (
    ("patients.patient_list", "Patients", access.CLINICAL),
    ("capture.capture_page", "Capture", access.CLINICAL),
    ("review.queue", "Review", (access.PATHOLOGIST,)),
    ("admin.status", "Admin", (access.ADMIN,)),
)

BLUEPRINTS = (auth, patients, capture, results, review, reports, admin, api, monitoring)


def create_app(config: AllscopeConfig | None = None, *, data_dir: str | os.PathLike | None = None,
               model: str | os.PathLike | None = None, start_workers: bool = True) -> DeviceApp:
    """The device web UI over one appliance; ``data_dir`` and ``model`` are command-line flags (they win over
    the file); ``start_workers`` starts the analysis worker and the camera grabber (off in most tests)."""
    device = Appliance(config, data_dir=data_dir, model=model, start_workers=start_workers)
    app = DeviceApp(__name__, static_folder=str(STATIC_DIR))
    app.appliance = device
    app.config.update(security.session_config(device.data.secret_key(), cookie_name="allscope_session",
                                              secure=device.config.device.tls))
    app.config.update(
        MAX_CONTENT_LENGTH=device.settings.max_upload_mb * MB,
        SEND_FILE_MAX_AGE_DEFAULT=3600,  # static files: one request per hour per browser, not one per page
        JSON_MAX_BYTES=device.config.ui.max_json_kb * 1024, JSON_MAX_DEPTH=device.config.ui.max_json_depth,
    )

    def follow_upload_limit(settings, changed: set) -> None:  # Flask's own limit follows the setting
        if "max_upload_mb" in changed:
            app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_mb * MB

    device.listeners.append(follow_upload_limit)
    install_templates(app)
    security.install(app, csrf, device.database, error_template="error.html",
                     upload_limit_mb=lambda: device.settings.max_upload_mb,
                     idle_minutes=lambda: device.settings.idle_minutes,
                     unexpected="Something went wrong on the device; the error was logged. "
                                "Nothing was half-saved: try again or call your administrator.")

    @app.context_processor
    def _template_globals():
        return {"disclaimer": DISCLAIMER, "idle_minutes": device.settings.idle_minutes,
                "user_has": lambda *roles: current_user.is_authenticated and current_user.has_any_role(*roles),
                "nav_items": NAV_ITEMS, "nav_url": _nav_url, "ping_url": _nav_url("auth.session_ping")}

    for module in BLUEPRINTS:
        app.register_blueprint(module.bp)
    device.start()  # the worker and the camera, when start_workers
    return app


def _nav_url(endpoint: str) -> str | None:
    from flask import current_app

    return url_for(endpoint) if endpoint in current_app.view_functions else None
