"""Log in, log out, and the one-time set-up page that creates the first admin while no user exists."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from device.services import accounts
from webui.kit import security
from webui.kit.access import ANY_USER, allow, allow_anonymous
from webui.kit.runtime import appliance

bp = Blueprint("auth", __name__)


def safe_next(target: str | None) -> str:
    return security.safe_next(target, url_for("patients.patient_list"))


def client_address() -> str:
    return request.remote_addr or "unknown"


@bp.route("/login", methods=["GET", "POST"])
@allow_anonymous
def login():
    if not accounts.any_user_exists():
        return redirect(url_for("auth.setup"))
    error = ""
    if request.method == "POST":
        user, error = accounts.authenticate(request.form.get("username", ""), request.form.get("password", ""),
                                            client_address(),
                                            accounts.LockoutPolicy.from_config(appliance().config.login))
        if user is not None:
            next_url = safe_next(request.form.get("next") or request.args.get("next"))
            security.start_session(user)  # fresh session bound to the user's epoch (no fixation)
            if user.role_set == {"admin"} and next_url == url_for("patients.patient_list"):
                next_url = url_for("admin.status")
            return redirect(next_url)
    return render_template("auth/login.html", error=error, next=request.args.get("next", "")), (401 if error else 200)


@bp.post("/logout")
@allow(*ANY_USER)
def logout():
    return security.end_session(client_address(), url_for("auth.login"))


@bp.post("/session/ping")
@allow(*ANY_USER)
def session_ping():
    """Activity on the page (typing, touching) that sent no request: the idle logout's clock starts again
    (``webui/kit/security.py`` counts every request not ending in /poll). The page's "Stay logged in" and its
    throttled activity ping call it."""
    return "", 204


@bp.route("/setup", methods=["GET", "POST"])
@allow_anonymous
def setup():
    """Create the first admin account. Works only while the database has no user at all."""
    if accounts.any_user_exists():
        abort(404)
    errors: dict[str, str] = {}
    values = {"username": "", "full_name": "", "roles": ["admin"]}
    if request.method == "POST":
        # What was typed comes back on a refusal (never the passwords), with every problem at its field.
        values = {"username": request.form.get("username", "")[:200], "full_name": request.form.get("full_name", "")[:400],
                  "roles": request.form.getlist("roles")}
        password = request.form.get("password", "")
        errors = accounts.new_account_problems(values["username"], password, values["roles"] or ["admin"],
                                               full_name=values["full_name"],
                                               password_again=request.form.get("password_again", ""))
        if not errors:
            try:
                accounts.create_first_user(values["username"], password, values["roles"] or ["admin"],
                                           full_name=values["full_name"])
            except accounts.SetupClosed:  # lost a race with another set-up request
                abort(404)
            except accounts.AccountError as err:
                errors = {"username": str(err)}
            else:
                flash("Administrator created: log in.", "info")
                return redirect(url_for("auth.login"))
    return render_template("auth/setup.html", errors=errors, values=values, labels=SETUP_LABELS), \
        (400 if errors else 200)


SETUP_LABELS = {"username": "Username", "full_name": "Full name", "password": "Password",
                "password_again": "Password again", "roles": "Roles"}
