"""Blueprint 'api' (being built; see issue 3)."""

from flask import Blueprint

bp = Blueprint("api", __name__)
