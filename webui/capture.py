"""Blueprint 'capture' (being built; see issue 3)."""

from flask import Blueprint

bp = Blueprint("capture", __name__)
