"""Security plumbing shared by the device web UI and the central admin UI (``sync/central/web/app.py``).

One place for the choices both apps must make the same way: session cookies
(HttpOnly, SameSite=Strict, signed with a generated key), a strict CSP with no
inline script or style, idle logout, deny-by-default role checks
(``webui/kit/access.py``), same-site ``next`` targets, and one-line error pages
that never show a stack trace.

    app.config.update(session_config(data.secret_key(), cookie_name="allscope_session", secure=False))
    install_login(app, "auth.login")
    install_idle_logout(app, "auth.login", lambda: 10)
    install_role_check(app, "auth.login", respond)
    install_headers(app)
    register_error_handlers(app, respond, upload_limit_mb=lambda: 64, unexpected="Something went wrong ...")
"""

from __future__ import annotations

import logging
import time
from typing import Callable
from urllib.parse import urlsplit

from flask import Flask, flash, jsonify, redirect, render_template, request, session, url_for
from flask_login import LoginManager, current_user, logout_user
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

from webui.kit import access, errors
from webui.kit.jsonbounds import BoundedJSONProvider

log = logging.getLogger(__name__)

CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

ErrorResponder = Callable[[int, str], object]


HEALTH_ENDPOINT = "monitoring.healthz"  # both apps' /healthz (webui/kit/monitoring.py)


def install(app: Flask, csrf, database, *, error_template: str, upload_limit_mb: Callable[[], float],
            idle_minutes: Callable[[], float], unexpected: str, login_endpoint: str = "auth.login",
            static_endpoints: tuple[str, ...] = ("static",)) -> None:
    """Everything both web apps install the same way, in order: bounded ids, CSRF, flask-login, one kept
    database connection per server thread (opening one per request costs more than most pages; static
    files never touch it), idle logout, the role check, the headers and the one-line error pages."""
    install_id_converter(app)
    app.json = BoundedJSONProvider(app)  # JSON bodies: size and depth bounded before parsing (jsonbounds.py)
    csrf.init_app(app)
    install_login(app, login_endpoint)

    @app.before_request
    def _open_db():
        if request.endpoint not in static_endpoints and request.endpoint != HEALTH_ENDPOINT:
            database.connect(reuse_if_open=True)  # /healthz opens its own, to report a failure as 503

    respond = error_responder(error_template)
    install_idle_logout(app, login_endpoint, idle_minutes)
    install_role_check(app, login_endpoint, respond)
    install_headers(app)
    register_error_handlers(app, respond, upload_limit_mb=upload_limit_mb, unexpected=unexpected)


def session_config(secret_key: bytes, *, cookie_name: str, secure: bool) -> dict:
    """Flask settings for the session cookie and CSRF tokens (tokens live as long as the session)."""
    return {
        "SECRET_KEY": secret_key,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Strict",
        "SESSION_COOKIE_SECURE": bool(secure),
        "SESSION_COOKIE_NAME": cookie_name,
        "WTF_CSRF_TIME_LIMIT": None,  # tied to the session, which the idle timeout already bounds
    }


class RecordIdConverter(IntegerConverter):
    """``<int:...>`` bounded to SQLite's INTEGER range: a larger id is no route (404), not an OverflowError (500)."""

    def __init__(self, map, *args, **kwargs):  # noqa: A002 - werkzeug's parameter name
        kwargs.setdefault("max", 2**63 - 1)
        super().__init__(map, *args, **kwargs)


def install_id_converter(app: Flask) -> None:
    """Call before any route is added: every ``<int:...>`` URL part then fits a database id."""
    app.url_map.converters["int"] = RecordIdConverter


def install_login(app: Flask, login_endpoint: str) -> LoginManager:
    """flask-login over ``device.store.records.User`` (whatever database db_proxy is bound to); disabled users are out."""
    from device.store.records import User

    manager = LoginManager(app)
    manager.session_protection = "strong"
    manager.login_view = login_endpoint

    @manager.user_loader
    def load_user(user_id: str):
        user = User.get_or_none(User.id == int(user_id)) if user_id.isdigit() else None
        if user is None or user.disabled or session.get("epoch") != user.session_epoch:
            return None  # disabled, or the session predates a logout / password change (revoked)
        return user

    return manager


def start_session(user) -> None:
    """Log ``user`` in on a fresh session (no pre-login data survives: no fixation) bound to their epoch."""
    from flask_login import login_user

    session.clear()
    login_user(user)
    session["epoch"] = user.session_epoch
    session["last_seen"] = time.time()


def end_session(address: str, login_url: str):
    """The logout view of both apps: audited, every session of the user ended server-side, back to login."""
    from device.store.records import audit, db_proxy

    idle = bool(request.form.get("idle"))
    with db_proxy.atomic():
        audit("logout", "user", current_user.id, username=current_user.username, address=address,
              detail="idle" if idle else "")
        revoke_sessions(current_user.id)  # a copy of this session's cookie dies with it
    logout_user()
    session.clear()
    if idle:
        flash("Logged out after a period without activity.", "info")
    return redirect(login_url)


def revoke_sessions(user_id: int) -> None:
    """End every session of a user, on every browser, including copies of the cookie."""
    from device.store.records import User

    User.update(session_epoch=User.session_epoch + 1).where(User.id == user_id).execute()


def _login_redirect(login_endpoint: str):
    return redirect(url_for(login_endpoint, next=request.full_path.rstrip("?") if request.method == "GET" else None))


def install_idle_logout(app: Flask, login_endpoint: str, idle_minutes: Callable[[], float]) -> None:
    """Log out a session idle for ``idle_minutes()`` minutes (the setting in force); paths ending in /poll are
    not activity."""

    @app.before_request
    def _idle_logout():
        if request.endpoint == "static" or not current_user.is_authenticated:
            return None
        now = time.time()
        last = session.get("last_seen", now)
        minutes = idle_minutes()
        if now - last > float(minutes) * 60:
            logout_user()
            session.clear()
            if access.is_api_request():
                return jsonify(error="session expired: log in again"), 401
            flash(f"Logged out after {minutes} minute{'' if float(minutes) == 1 else 's'} without activity.", "info")
            return _login_redirect(login_endpoint)
        if not request.path.endswith("/poll"):  # background polling does not count as activity
            session["last_seen"] = now
        return None


def install_role_check(app: Flask, login_endpoint: str, respond: ErrorResponder) -> None:
    """Every request passes ``access.decide``: undeclared views are refused, anonymous users sent to log in."""

    @app.before_request
    def _check_roles():
        decision = access.decide(request.endpoint)
        if decision == "ok":
            return None
        if decision == "login":
            if access.is_api_request():
                return jsonify(error="log in first"), 401
            return _login_redirect(login_endpoint)
        return respond(403, "Your role does not allow this page or action.")


def install_headers(app: Flask) -> None:
    @app.after_request
    def _security_headers(response):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Permissions-Policy", "geolocation=(), microphone=()")
        if request.endpoint != "static":
            response.headers.setdefault("Cache-Control", "no-store")  # patient data must not linger in caches
        return response


def error_responder(template: str) -> ErrorResponder:
    """A function (status, message) -> response: JSON ``{"error": ...}`` under /api/, else the one-line page."""

    def respond(status: int, message: str):
        if access.is_api_request():
            return jsonify(error=message), status
        return render_template(template, status=status, message=message), status

    return respond


def register_error_handlers(app: Flask, respond: ErrorResponder, *, upload_limit_mb: Callable[[], float],
                            unexpected: str) -> None:
    messages = {
        400: "The request was not understood.",
        403: "Your role does not allow this page or action.",
        404: "There is no such page or record.",
        405: "This action is not available here.",
        429: "Too many requests: wait a moment and try again.",
    }

    @app.errorhandler(CSRFError)
    def _csrf(error):
        return respond(400, "The form expired or was not sent from this device: reload the page and try again.")

    @app.errorhandler(HTTPException)
    def _http(error):
        if error.code == 413:
            return respond(413, f"The upload is too large (limit {upload_limit_mb():g} MB).")
        return respond(error.code or 500, messages.get(error.code, error.description or "Request failed."))

    @app.errorhandler(Exception)
    def _unexpected(error):
        if storage_full(error):  # a state the operator can fix: say which, not "something went wrong"
            log.error("storage full on %s %s: %s", request.method, request.path, error)
            return respond(507, STORAGE_FULL)
        log.exception("unexpected error on %s %s", request.method, request.path)
        return respond(500, unexpected)

    errors.install(app, respond, _unexpected)  # domain errors: their kind's status, one place


STORAGE_FULL = ("The device's storage is full: nothing was saved. Free space (export or archive old records) "
                "and try again.")


def storage_full(error: BaseException) -> bool:
    """A write that failed for lack of space: ENOSPC from a file, or SQLite's "database or disk is full".

    Also when that is only the context of the error raised: SQLite rolls back by itself on a full disk,
    so peewee's own rollback then fails with "no transaction is active" and hides the real cause.
    """
    import errno

    seen = 0
    while error is not None and seen < 5:
        if (isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)) or \
                "database or disk is full" in str(error):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def safe_next(target: str | None, default: str) -> str:
    """Only same-site relative paths: no scheme, no host, no '//' or backslash tricks; else ``default``."""
    if not target:
        return default
    if any(ord(c) < 32 or ord(c) == 127 for c in target):  # CR/LF would split the Location header: a 500
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target
