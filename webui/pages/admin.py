"""Admin pages: users and roles, device settings, status, and the audit trail. Administrators only.

An admin-only account sees none of the clinical pages (``webui/kit/access.py``);
a doctor who is both admin and pathologist sees both. Account changes go
through ``device.services.account_rules`` (no self-lock-out, never without an active
administrator) and settings through ``device.services.settings``; both audit in the
transaction that makes the change.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from wtforms.fields.choices import SelectChoice

from device.services import account_rules, accounts
from device.services.accounts import AccountError
from device.services.settings import DeviceSettings, SettingsError, field_errors
from device.store.records import CLINICAL_ROLES, AuditEvent, User
from webui.forms.admin import ActionForm, AuditFilterForm, CreateUserForm, PasswordForm, RolesForm, SettingsForm
from webui.kit.access import ADMIN, allow
from webui.kit.errors import http_status
from webui.kit.runtime import actor, appliance
from webui.pages import admin_status

bp = Blueprint("admin", __name__, url_prefix="/admin")

AUDIT_PAGE_SIZE = 50


# --- status ------------------------------------------------------------------------------------------------

@bp.get("/status")
@allow(ADMIN)
def status():
    device = appliance()
    sections = [("Model", admin_status.model_checks(device)),
                ("Camera", admin_status.camera_checks(device)),
                ("Storage", admin_status.disk_checks(device.data, device.disk_guard) +
                 admin_status.database_checks(device.database, device.data)),
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
    policy = _login_policy()
    waiting = {user.id: accounts.waiting_addresses(user.username, policy) for user in users}
    create_form = create_form or CreateUserForm(formdata=None)
    return render_template("admin/users.html", users=users, forms=forms, last_admin_id=last_admin_id,
                           waiting=waiting, create_form=create_form, open_user=failed[0] if failed else None,
                           problems=_problems(create_form, failed, users)), status


def _problems(create_form, failed, users) -> list[tuple[str, str, str]]:
    """(field label, message, anchor) of every error on the page, for the summary at its top: the forms are
    further down, below the list of users, where a refusal would otherwise go unseen."""
    forms = [(create_form, "New user")]
    if failed:
        forms.append((failed[2], _username(users, failed[0])))
    out = []
    for form, prefix in forms:
        for name, messages in form.errors.items():
            if messages and name != "csrf_token":
                field = form[name]
                out.append((f"{prefix}: {field.label.text}", messages[0], field.id))
    return out


def _username(users, user_id: int) -> str:
    return next((u.username for u in users if u.id == user_id), "User")


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


def _login_policy() -> accounts.LockoutPolicy:
    return accounts.LockoutPolicy.from_config(appliance().config.login)


@bp.post("/users/<int:user_id>/unlock")
@allow(ADMIN)
def user_unlock(user_id: int):
    """Clear the user's log-in delays from every address (audited): the way out the login page promises."""
    user = _target(user_id)
    if not ActionForm().validate_on_submit():
        flash("The form expired: reload the page and try again.", "error")
        return _render_users(status=400)
    cleared = accounts.unlock(user.username, current_user.username, actor().address)
    flash(f"{user.username} can log in again at once ({cleared} failed log-in{'' if cleared == 1 else 's'} "
          f"cleared).", "info")
    return _back_to(user)


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
    device = appliance()
    current = device.settings
    form = SettingsForm(data={k: ("" if v is None else str(v)) for k, v in current.as_dict().items()})
    status = 200
    if request.method == "POST" and form.validate_on_submit():
        changes = {key: form[key].data for key in DeviceSettings.keys()}
        errors = field_errors(changes)
        if not errors:
            try:
                saved = device.save_settings(changes, actor())
            except SettingsError as error:
                errors = {error.key: str(error)}
            else:
                if saved.apply_problem:
                    flash(f"Settings saved, but applying them failed ({saved.apply_problem}): restart the device.",
                          "error")
                elif not saved.changed:
                    flash("Nothing changed.", "info")
                elif saved.restart_needed:
                    flash("Settings saved. Model and camera changes take effect when the device restarts.", "info")
                else:
                    flash("Settings saved.", "info")
                return redirect(url_for("admin.settings"))
        for key, message in errors.items():
            form[key].errors = [message]
        status = 400
    elif request.method == "POST":
        status = 400
    return render_template("admin/settings.html", form=form, stored=device.stored_keys()), status


# --- audit trail -------------------------------------------------------------------------------------------

# Entities whose before/after/detail an admin without a clinical role may read; every other entity (patient,
# sample, capture, cell, report, and any added later) shows who, what and when only: the audit trail must not
# become the clinical page the role walls keep admin-only accounts away from.
NON_CLINICAL_ENTITIES = frozenset({"", "user", "settings", "device"})


@dataclass(frozen=True)
class AuditRow:
    """One audit event as the page shows it; ``withheld`` when its clinical content is not shown."""

    at: object
    username: str
    action: str
    entity: str
    entity_id: str
    address: str
    before: object = None
    after: object = None
    detail: str = ""
    withheld: bool = False


def audit_row(event: AuditEvent, clinical: bool) -> AuditRow:
    """The event for a viewer with (``clinical``) or without a clinical role."""
    row = AuditRow(event.at, event.username, event.action, event.entity, event.entity_id, event.address)
    if clinical or event.entity in NON_CLINICAL_ENTITIES:
        return dataclasses.replace(row, before=event.before, after=event.after, detail=event.detail)
    return dataclasses.replace(row, withheld=bool(event.before or event.after or event.detail))


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
    clinical = current_user.has_any_role(*CLINICAL_ROLES)
    events = [audit_row(e, clinical) for e in query.order_by(AuditEvent.id.desc()).paginate(page, AUDIT_PAGE_SIZE)]
    filters = {k: v for k, v in (("user", form.user.data), ("action", form.action.data),
                                 ("entity", form.entity.data)) if v}
    return render_template("admin/audit.html", form=form, events=events, page=page, pages=pages, total=total,
                           filters=filters)
