"""Patients: list with search, patient page, register and edit (being built; see issue 3)."""

from flask import Blueprint, render_template

from webui.access import CLINICAL, allow

bp = Blueprint("patients", __name__)


@bp.get("/")
@allow(*CLINICAL)
def patient_list():
    return render_template("error.html", status=200, message="Patients page under construction.")
