"""Central admin UI: accounts (disable, enable, new password, roles) and the audit trail, filterable.

The rules are the device's own (``device.services.account_rules``): nobody disables or
demotes themselves, the last active administrator stays one; every change is audited in
its transaction. Central roles: ``admin`` (everything) and ``pathologist`` (the
per-clinic export only, for the people who report upwards). Accounts are created here (*New user*: the
CLI's rules, ``device.services.accounts.create_user``, audited as "create"), with ``allscope central users
create``, or on the first set-up page.
"""

from __future__ import annotations

import datetime as dt
import math

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, Optional

from device.services import account_rules, accounts
from device.services.accounts import AccountError
from device.store.records import AuditEvent, User
from sync.central.roles import CENTRAL_ROLE_CHOICES, central_roles
from sync.central.web.runtime import central
from webui.forms.admin import ActionForm, CheckboxesField, password_fields
from webui.kit.access import ADMIN, allow
from webui.kit.errors import http_status

bp = Blueprint("people", __name__)


class RolesForm(FlaskForm):
    roles = CheckboxesField("Roles", choices=[SelectChoice(r, r.capitalize()) for r in CENTRAL_ROLE_CHOICES])


class PasswordForm(FlaskForm):
    password, confirm = password_fields()


class CreateUserForm(FlaskForm):
    username = StringField("Username", validators=[InputRequired(message="Enter a username."), Length(max=64)],
                           description="2-64 characters: lower-case letters, digits, '.', '_' or '-'.",
                           render_kw={"autocapitalize": "none", "autocomplete": "off"})
    full_name = StringField("Full name", validators=[Optional(), Length(max=200)])
    roles = CheckboxesField("Roles", choices=[SelectChoice(r, r.capitalize()) for r in CENTRAL_ROLE_CHOICES],
                            validators=[InputRequired(message="Choose at least one role.")])
    password, confirm = password_fields("Password")


def _line(error: Exception) -> str:
    text = str(error)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _target(user_id: int) -> User:
    user = User.get_or_none(User.id == user_id)
    if user is None:
        abort(404)
    return user


def _render(status: int = 200, open_user: int | None = None, failed: FlaskForm | None = None, kind: str = "",
            create: CreateUserForm | None = None):
    users = list(User.select().order_by(User.username))
    forms = {u.id: {"roles": RolesForm(formdata=None, prefix=f"r{u.id}", data={"roles": sorted(u.role_set)}),
                    "password": PasswordForm(formdata=None, prefix=f"p{u.id}")} for u in users}
    if failed is not None and open_user in forms:
        forms[open_user][kind] = failed
    return render_template("central/users.html", users=users, forms=forms, action=ActionForm(formdata=None),
                           open_user=open_user, create=create or CreateUserForm(formdata=None, prefix="new"),
                           create_open=create is not None), status


@bp.get("/users")
@allow(ADMIN)
def user_list():
    return _render()


@bp.post("/users/new")
@allow(ADMIN)
def user_create():
    """A new central account: the CLI's username, password and role rules; audited ("create") in its transaction."""
    form = CreateUserForm(prefix="new")
    if form.validate_on_submit():
        try:
            roles = central_roles(form.roles.data or [])
            user = accounts.create_user(form.username.data or "", form.password.data or "", roles,
                                        full_name=form.full_name.data or "", actor=current_user.username)
        except AccountError as error:
            message = str(error)
            field = form.password if "password" in message else form.roles if "role" in message else form.username
            field.errors = [_line(error)]
        else:
            flash(f"User {user.username} created ({user.roles.replace(',', ', ')}).", "info")
            return redirect(url_for("people.user_list"))
    elif not form.errors:
        form.username.errors = ["The form expired: reload the page and try again."]
    return _render(400, create=form)


def _enabled(user_id: int, enabled: bool):
    user = _target(user_id)
    if not ActionForm().validate_on_submit():
        flash("The form expired: reload the page and try again.", "error")
        return _render(400)
    try:
        account_rules.set_enabled(user, enabled, current_user.username, current_user.id)
    except AccountError as error:
        flash(_line(error), "error")
        return _render(http_status(error) or 409)
    flash(f"{user.username} {'enabled' if enabled else 'disabled: they can no longer log in'}.", "info")
    return redirect(url_for("people.user_list"))


@bp.post("/users/<int:user_id>/disable")
@allow(ADMIN)
def user_disable(user_id: int):
    return _enabled(user_id, False)


@bp.post("/users/<int:user_id>/enable")
@allow(ADMIN)
def user_enable(user_id: int):
    return _enabled(user_id, True)


@bp.post("/users/<int:user_id>/password")
@allow(ADMIN)
def user_password(user_id: int):
    user = _target(user_id)
    form = PasswordForm(prefix=f"p{user.id}")
    if form.validate_on_submit():
        try:
            account_rules.reset_password(user, form.password.data or "", current_user.username)
        except AccountError as error:
            form.password.errors = [_line(error)]
        else:
            flash(f"New password set for {user.username}: give it to them in person.", "info")
            return redirect(url_for("people.user_list"))
    return _render(400, user.id, form, "password")


@bp.post("/users/<int:user_id>/roles")
@allow(ADMIN)
def user_roles(user_id: int):
    user = _target(user_id)
    form = RolesForm(prefix=f"r{user.id}")
    if form.validate_on_submit():
        try:
            roles = account_rules.change_roles(user, central_roles(form.roles.data or []), current_user.username,
                                               current_user.id)
        except AccountError as error:
            form.roles.errors = [_line(error)]
        else:
            flash(f"{user.username} now has the roles: {', '.join(roles)}.", "info")
            return redirect(url_for("people.user_list"))
    elif not form.roles.errors:
        form.roles.errors = ["The form expired: reload the page and try again."]
    return _render(400, user.id, form, "roles")


# --- audit trail ---------------------------------------------------------------------------------------------

def _date(name: str) -> dt.date | None:
    text = request.args.get(name, "").strip()[:10]
    try:
        return dt.date.fromisoformat(text) if text else None
    except ValueError:
        return None


@bp.get("/audit")
@allow(ADMIN)
def audit_trail():
    user = request.args.get("user", "").strip()[:64]
    action = request.args.get("action", "").strip()[:32]
    start, end = _date("from"), _date("to")
    query = AuditEvent.select()
    if user:
        query = query.where(AuditEvent.username == user)
    if action:
        query = query.where(AuditEvent.action == action)
    if start:
        query = query.where(AuditEvent.at >= dt.datetime.combine(start, dt.time()))
    if end:  # the whole day named
        query = query.where(AuditEvent.at < dt.datetime.combine(end + dt.timedelta(days=1), dt.time()))
    size = central().page_size
    total = query.count()
    pages = max(1, math.ceil(total / size))
    page = min(max(request.args.get("page", 1, type=int) or 1, 1), pages)
    events = list(query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).paginate(page, size))
    filters = {k: v for k, v in (("user", user), ("action", action), ("from", start and start.isoformat()),
                                 ("to", end and end.isoformat())) if v}
    users = [u for (u,) in AuditEvent.select(AuditEvent.username).distinct().order_by(AuditEvent.username).tuples()]
    actions = [a for (a,) in AuditEvent.select(AuditEvent.action).distinct().order_by(AuditEvent.action).tuples()]
    return render_template("central/audit.html", events=events, total=total, page=page, pages=pages,
                           filters=filters, users=users, actions=actions)
