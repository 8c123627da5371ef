"""Blueprint 'review' (being built; see issue 3)."""

from flask import Blueprint

bp = Blueprint("review", __name__)
