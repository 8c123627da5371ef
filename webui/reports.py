"""Blueprint 'reports' (being built; see issue 3)."""

from flask import Blueprint

bp = Blueprint("reports", __name__)
