"""Admin: users and roles, device settings, status (being built; see issue 3)."""

from flask import Blueprint, render_template

from webui.access import ADMIN, allow

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.get("/status")
@allow(ADMIN)
def status():
    return render_template("error.html", status=200, message="Status page under construction.")
