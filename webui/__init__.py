"""The touchscreen web UI: a Flask app factory with one blueprint per area.

    create_app(data_dir=..., overrides={...})

Sessions are signed with a key generated into the data directory (0600);
CSRF protects every form and state-changing API call; every view declares its
roles (``webui/access.py``) and undeclared views are refused; a session idle
for ``ALLSCOPE_IDLE_MINUTES`` (default 10, a shared touchscreen) is logged out.
No stack trace ever reaches a page: errors render as one line.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from flask import Flask, flash, jsonify, redirect, render_template, request, session, url_for
from flask_login import LoginManager, current_user, logout_user
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from device.analysis import DISCLAIMER
from device.records import User, open_database
from device.storage import DataDir
from webui import access

log = logging.getLogger(__name__)
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

BLUEPRINTS = ("auth", "patients", "capture", "review", "reports", "admin", "api")


def create_app(data_dir: str | Path | None = None, overrides: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(DEFAULTS)
    app.config.update(overrides or {})
    data = DataDir.resolve(data_dir or app.config.get("ALLSCOPE_DATA_DIR"))
    app.config["ALLSCOPE_DATA_DIR"] = str(data.root)
    app.extensions["allscope_data"] = data
    app.config.update(
        SECRET_KEY=data.secret_key(),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=bool(app.config["ALLSCOPE_TLS"]),
        SESSION_COOKIE_NAME="allscope_session",
        MAX_CONTENT_LENGTH=int(app.config["ALLSCOPE_MAX_UPLOAD_MB"]) * 1024 * 1024,
        WTF_CSRF_TIME_LIMIT=None,
        SEND_FILE_MAX_AGE_DEFAULT=3600,  # static files: one request per hour per browser, not one per page  # tied to the session, which the idle timeout already bounds
    )
    database = open_database(data.database)
    app.extensions["allscope_db"] = database

    csrf.init_app(app)
    login_manager = LoginManager(app)
    login_manager.session_protection = "strong"
    login_manager.login_view = "auth.login"

    @login_manager.user_loader
    def load_user(user_id: str):
        user = User.get_or_none(User.id == int(user_id)) if user_id.isdigit() else None
        return user if user is not None and not user.disabled else None

    # One SQLite connection per server thread, opened on first use and kept (peewee's connections are
    # thread-local): opening one per request costs more than most pages. Static files never touch it.
    @app.before_request
    def _open_db():
        if request.endpoint != "static":
            database.connect(reuse_if_open=True)

    @app.before_request
    def _idle_logout():
        if request.endpoint == "static" or not current_user.is_authenticated:
            return None
        now = time.time()
        last = session.get("last_seen", now)
        idle_limit = float(app.config["ALLSCOPE_IDLE_MINUTES"]) * 60
        if now - last > idle_limit:
            logout_user()
            session.clear()
            if access.is_api_request():
                return jsonify(error="session expired: log in again"), 401
            flash(f"Logged out after {app.config['ALLSCOPE_IDLE_MINUTES']} minutes without activity.", "info")
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?") if request.method == "GET" else None))
        if not request.path.endswith("/poll"):  # background polling does not count as activity
            session["last_seen"] = now
        return None

    @app.before_request
    def _check_roles():
        decision = access.decide(request.endpoint)
        if decision == "ok":
            return None
        if decision == "login":
            if access.is_api_request():
                return jsonify(error="log in first"), 401
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?") if request.method == "GET" else None))
        return _error_response(403, "Your role does not allow this page or action.")

    @app.after_request
    def _security_headers(response):
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                                    "script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                                    "frame-ancestors 'none'")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Permissions-Policy", "geolocation=(), microphone=()")
        if request.endpoint != "static":
            response.headers.setdefault("Cache-Control", "no-store")  # patient data must not linger in caches
        return response

    @app.context_processor
    def _template_globals():
        return {"disclaimer": DISCLAIMER, "idle_minutes": app.config["ALLSCOPE_IDLE_MINUTES"],
                "user_has": lambda *roles: current_user.is_authenticated and current_user.has_any_role(*roles),
                "nav_items": NAV_ITEMS, "nav_url": _nav_url}

    _register_errors(app)
    for name in BLUEPRINTS:
        module = __import__(f"webui.{name}", fromlist=["bp"])
        app.register_blueprint(module.bp)
        if hasattr(module, "init_app"):
            module.init_app(app)
    return app


def _nav_url(endpoint: str) -> str | None:
    from flask import current_app

    return url_for(endpoint) if endpoint in current_app.view_functions else None


def _error_response(status: int, message: str):
    if access.is_api_request():
        return jsonify(error=message), status
    return render_template("error.html", status=status, message=message), status


def _register_errors(app: Flask) -> None:
    messages = {
        400: "The request was not understood.",
        403: "Your role does not allow this page or action.",
        404: "There is no such page or record.",
        405: "This action is not available here.",
        413: f"The upload is too large (limit {app.config['ALLSCOPE_MAX_UPLOAD_MB']} MB).",
        429: "Too many requests: wait a moment and try again.",
    }

    @app.errorhandler(CSRFError)
    def _csrf(error):
        return _error_response(400, "The form expired or was not sent from this device: reload the page and try again.")

    @app.errorhandler(HTTPException)
    def _http(error):
        return _error_response(error.code or 500, messages.get(error.code, error.description or "Request failed."))

    @app.errorhandler(Exception)
    def _unexpected(error):
        log.exception("unexpected error on %s %s", request.method, request.path)
        return _error_response(500, "Something went wrong on the device; the error was logged. "
                                    "Nothing was half-saved: try again or call your administrator.")
