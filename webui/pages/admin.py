"""Admin pages: users and roles, device settings, status, and the audit trail. Administrators only.

An admin-only account sees none of the clinical pages (``webui/kit/access.py``);
a doctor who is both admin and pathologist sees both. Account changes go
through ``device.services.account_rules`` (no self-lock-out, never without an active
administrator) and settings through ``device.services.settings``; both audit in the
transaction that makes the change.
"""

from __future__ import annotations

import logging
import math

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from wtforms.fields.choices import SelectChoice

from device.services import account_rules, accounts
from device.services.accounts import AccountError
from device.services.settings import DeviceSettings, SettingsError, defaults_from_config, field_errors
from device.store.records import AuditEvent, User
from webui.forms.admin import ActionForm, AuditFilterForm, CreateUserForm, PasswordForm, RolesForm, SettingsForm
from webui.kit.access import ADMIN, allow
from webui.kit.errors import http_status
from webui.pages import admin_status

bp = Blueprint("admin", __name__, url_prefix="/admin")
log = logging.getLogger(__name__)

AUDIT_PAGE_SIZE = 50
RESTART_KEYS = {"model_path", "camera_kind", "camera_source"}  # read by the services when they start
_DEFAULTS = "allscope_settings_defaults"
LISTENERS = "allscope_settings_listeners"  # callables(settings, changed_keys) told after a save


def init_app(app) -> None:
    """Remember the configured defaults, then let the stored settings override the config."""
    app.extensions[_DEFAULTS] = defaults_from_config(app.config)
    app.extensions.setdefault(LISTENERS, [])
    with app.app_context():
        stored = DeviceSettings.stored_keys()
        if stored:
            apply_to_config(app, device_settings(app), stored)


def device_settings(app=None) -> DeviceSettings:
    """The settings in force: stored values over the defaults configured at start-up."""
    app = app or current_app
    return DeviceSettings.load(app.extensions.get(_DEFAULTS))


def apply_to_config(app, settings: DeviceSettings, keys: set[str]) -> None:
    """Mirror settings into app.config, where the app and the services read them."""
    if "idle_minutes" in keys:
        app.config["ALLSCOPE_IDLE_MINUTES"] = settings.idle_minutes
    if "max_upload_mb" in keys:
        app.config["ALLSCOPE_MAX_UPLOAD_MB"] = settings.max_upload_mb
        app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_mb * 1024 * 1024
    if "model_path" in keys:
        app.config["ALLSCOPE_MODEL"] = settings.model_path or None
    if "camera_kind" in keys:
        app.config["ALLSCOPE_CAMERA"] = settings.camera_kind
    if "camera_source" in keys:
        app.config["ALLSCOPE_CAMERA_SOURCE"] = settings.camera_source or None


def _notify(app, updated: DeviceSettings, changed: set[str]) -> str:
    """Tell the running services (worker, camera) about a save; the first failure as one line, or ""."""
    if not changed:
        return ""
    for listener in app.extensions.get(LISTENERS, []):
        try:
            listener(updated, changed)
        except Exception as error:  # noqa: BLE001 - the settings are stored; say what did not take effect
            log.exception("applying saved settings failed")
            return " ".join(str(error).split())[:200] or type(error).__name__
    return ""


def _address() -> str:
    return request.remote_addr or "unknown"


# --- status ------------------------------------------------------------------------------------------------

@bp.get("/status")
@allow(ADMIN)
def status():
    app = current_app._get_current_object()
    settings = device_settings(app)
    data = app.extensions["allscope_data"]
    sections = [("Model", admin_status.model_checks(app, settings)),
                ("Camera", admin_status.camera_checks(app, settings)),
                ("Storage", admin_status.disk_checks(data) +
                 admin_status.database_checks(app.extensions["allscope_db"], data)),
                ("Sync", [admin_status.Check("Sync", "not configured (a later release adds encrypted sync)",
                                             "info")])]
    return render_template("admin/status.html", sections=sections, counts=admin_status.counts(),
                           analyses=admin_status.recent_analyses(), events=admin_status.recent_audit())


# --- users -------------------------------------------------------------------------------------------------

def _render_users(create_form: CreateUserForm | None = None, failed: tuple[int, str, object] | None = None,
                  status: int = 200):
    """The users page; ``failed`` = (user id, "roles" | "password", form with errors) re-shown open."""
    users = list(User.select().order_by(User.username))
    active_admins = account_rules.active_admin_ids()
    forms = {}
    for user in users:
        roles_form = RolesForm(formdata=None, prefix=f"u{user.id}", data={"roles": sorted(user.role_set)})
        password_form = PasswordForm(formdata=None, prefix=f"p{user.id}")
        forms[user.id] = {"roles": roles_form, "password": password_form, "action": ActionForm(formdata=None)}
    if failed is not None and failed[0] in forms:
        forms[failed[0]][failed[1]] = failed[2]
    last_admin_id = next(iter(active_admins)) if len(active_admins) == 1 else None
    return render_template("admin/users.html", users=users, forms=forms, last_admin_id=last_admin_id,
                           create_form=create_form or CreateUserForm(formdata=None),
                           open_user=failed[0] if failed else None), status


@bp.route("/users", methods=["GET", "POST"])
@allow(ADMIN)
def users():
    if request.method == "GET":
        return _render_users()
    form = CreateUserForm()
    if form.validate_on_submit():
        try:
            user = accounts.create_user(form.username.data or "", form.password.data or "", form.roles.data,
                                        full_name=form.full_name.data or "", actor=current_user.username)
        except AccountError as error:
            message = str(error)
            field = form.password if "password" in message else form.roles if "role" in message else form.username
            field.errors = [message[:1].upper() + message[1:] + "."]
        else:
            flash(f"User {user.username} created ({user.roles.replace(',', ', ')}).", "info")
            return redirect(url_for("admin.users"))
    return _render_users(create_form=form, status=400)


def _target(user_id: int) -> User:
    user = User.get_or_none(User.id == user_id)
    if user is None:
        abort(404)
    return user


def _back_to(user: User):
    return redirect(url_for("admin.users", _anchor=f"user-{user.id}"))


@bp.post("/users/<int:user_id>/roles")
@allow(ADMIN)
def user_roles(user_id: int):
    user = _target(user_id)
    form = RolesForm(prefix=f"u{user.id}")
    if form.validate_on_submit():
        try:
            roles = account_rules.change_roles(user, form.roles.data, current_user.username, current_user.id)
        except AccountError as error:
            form.roles.errors = [str(error)[:1].upper() + str(error)[1:] + "."]
        else:
            flash(f"{user.username} now has the roles: {', '.join(roles)}.", "info")
            return _back_to(user)
    return _render_users(failed=(user.id, "roles", form), status=400)


def _set_enabled(user_id: int, enabled: bool):
    user = _target(user_id)
    form = ActionForm()
    if not form.validate_on_submit():
        flash("The form expired: reload the page and try again.", "error")
        return _render_users(status=400)
    try:
        account_rules.set_enabled(user, enabled, current_user.username, current_user.id)
    except AccountError as error:
        flash(str(error)[:1].upper() + str(error)[1:] + ".", "error")
        return _render_users(status=http_status(error) or 409)
    flash(f"{user.username} {'enabled' if enabled else 'disabled: they can no longer log in'}.", "info")
    return _back_to(user)


@bp.post("/users/<int:user_id>/disable")
@allow(ADMIN)
def user_disable(user_id: int):
    return _set_enabled(user_id, False)


@bp.post("/users/<int:user_id>/enable")
@allow(ADMIN)
def user_enable(user_id: int):
    return _set_enabled(user_id, True)


@bp.post("/users/<int:user_id>/password")
@allow(ADMIN)
def user_password(user_id: int):
    user = _target(user_id)
    form = PasswordForm(prefix=f"p{user.id}")
    if form.validate_on_submit():
        try:
            account_rules.reset_password(user, form.password.data or "", current_user.username)
        except AccountError as error:
            form.password.errors = [str(error)[:1].upper() + str(error)[1:] + "."]
        else:
            flash(f"New password set for {user.username}: give it to them in person.", "info")
            return _back_to(user)
    return _render_users(failed=(user.id, "password", form), status=400)


# --- settings ----------------------------------------------------------------------------------------------

@bp.route("/settings", methods=["GET", "POST"])
@allow(ADMIN)
def settings():
    app = current_app._get_current_object()
    current = device_settings(app)
    form = SettingsForm(data={k: ("" if v is None else str(v)) for k, v in current.as_dict().items()})
    status = 200
    if request.method == "POST" and form.validate_on_submit():
        changes = {key: form[key].data for key in DeviceSettings.keys()}
        errors = field_errors(changes)
        if not errors:
            try:
                updated = DeviceSettings.save(changes, current_user.username, address=_address(),
                                              defaults=app.extensions.get(_DEFAULTS))
            except SettingsError as error:
                errors = {error.key: str(error)}
            else:
                changed = {k for k in DeviceSettings.keys() if getattr(updated, k) != getattr(current, k)}
                apply_to_config(app, updated, changed)
                failed = _notify(app, updated, changed)
                if failed:
                    flash(f"Settings saved, but applying them failed ({failed}): restart the device.", "error")
                elif not changed:
                    flash("Nothing changed.", "info")
                elif changed & RESTART_KEYS and not app.extensions.get(LISTENERS):
                    flash("Settings saved. Model and camera changes take effect when the device restarts.", "info")
                else:
                    flash("Settings saved.", "info")
                return redirect(url_for("admin.settings"))
        for key, message in errors.items():
            form[key].errors = [message]
        status = 400
    elif request.method == "POST":
        status = 400
    return render_template("admin/settings.html", form=form, stored=DeviceSettings.stored_keys()), status


# --- audit trail -------------------------------------------------------------------------------------------

def _distinct(field) -> list[str]:
    return [v for (v,) in AuditEvent.select(field).distinct().order_by(field).tuples() if v]


@bp.get("/audit")
@allow(ADMIN)
def audit():
    form = AuditFilterForm(request.args)
    for name, field in (("user", AuditEvent.username), ("action", AuditEvent.action),
                        ("entity", AuditEvent.entity)):
        form[name].choices = [SelectChoice("", "Any")] + [SelectChoice(v, v) for v in _distinct(field)]
    query = AuditEvent.select()
    if form.user.data:
        query = query.where(AuditEvent.username == form.user.data)
    if form.action.data:
        query = query.where(AuditEvent.action == form.action.data)
    if form.entity.data:
        query = query.where(AuditEvent.entity == form.entity.data)
    total = query.count()
    pages = max(1, math.ceil(total / AUDIT_PAGE_SIZE))
    page = min(max(request.args.get("page", 1, type=int) or 1, 1), pages)
    events = list(query.order_by(AuditEvent.id.desc()).paginate(page, AUDIT_PAGE_SIZE))
    filters = {k: v for k, v in (("user", form.user.data), ("action", form.action.data),
                                 ("entity", form.entity.data)) if v}
    return render_template("admin/audit.html", form=form, events=events, page=page, pages=pages, total=total,
                           filters=filters)
