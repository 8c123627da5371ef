"""Central admin UI: log in, log out, and the one-time set-up page while no account exists.

Accounts are ``device.services.accounts`` bound to the central database (Argon2id,
persisted lock-out). Central admins hold the role "admin"; "pathologist" reaches the
per-clinic export only; any other role is refused everywhere after login by the role declarations.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from device.services import accounts
from sync.central import setup_token
from sync.central.web.forms import LoginForm, SetupForm
from sync.central.web.runtime import central
from webui.kit import security
from webui.kit.access import ADMIN, ANY_USER, PATHOLOGIST, allow, allow_anonymous
from webui.kit.security import safe_next

bp = Blueprint("auth", __name__)


def client_address() -> str:
    return request.remote_addr or "unknown"


def landing(user) -> str:
    """Admins land on the devices, pathologists (the export only) on the export page."""
    return url_for("devices.device_list") if user.has_any_role(ADMIN) else url_for("exports.export_page")


@bp.get("/")
@allow(ADMIN, PATHOLOGIST)
def home():
    return redirect(landing(current_user))


@bp.route("/login", methods=["GET", "POST"])
@allow_anonymous
def login():
    if not accounts.any_user_exists():
        return redirect(url_for("auth.setup"))
    form = LoginForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
    error = ""
    if form.validate_on_submit():
        user, error = accounts.authenticate(form.username.data, form.password.data, client_address(),
                                            central().login_policy)
        if user is not None:
            target = safe_next(form.next.data, landing(user))
            security.start_session(user)  # fresh session bound to the user's epoch (no fixation)
            return redirect(target)
    status = 401 if error else (400 if form.errors else 200)
    return render_template("central/login.html", form=form, error=error), status


@bp.post("/logout")
@allow(*ANY_USER)
def logout():
    return security.end_session(client_address(), url_for("auth.login"))


@bp.route("/setup", methods=["GET", "POST"])
@allow_anonymous
def setup():
    """Create the first central admin. Works only while the database has no user at all, and only with the
    one-time set-up token that only someone on the server can read (``sync/central/setup_token.py``)."""
    if accounts.any_user_exists():
        abort(404)
    form = SetupForm()
    error = ""
    root = central().data.root
    submitted = form.validate_on_submit()
    if submitted and not setup_token.matches(root, form.setup_token.data):
        error = ("Wrong set-up token: run allscope central setup-token on the server to see it."
                 if setup_token.current(root) else
                 "No set-up token exists yet: run allscope central setup-token on the server, then enter it here.")
    elif submitted:
        try:
            accounts.create_first_user(form.username.data, form.password.data, [ADMIN],
                                       full_name=form.full_name.data or "")
        except accounts.SetupClosed:  # lost a race with another set-up request
            abort(404)
        except accounts.AccountError as err:
            error = str(err)
        else:
            setup_token.consume(root)  # one-time: set-up is closed now anyway
            flash("Administrator created: log in.", "info")
            return redirect(url_for("auth.login"))
    return render_template("central/setup.html", form=form, error=error), (400 if error or form.errors else 200)
