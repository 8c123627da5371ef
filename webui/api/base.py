"""The JSON API under /api/: the same operations and role rules as the pages.

Each area adds its routes to this blueprint from its own module
(``webui/api/__init__.py`` imports them all). Session cookie auth; state-changing calls send the CSRF token in
the ``X-CSRFToken`` header (see static/app.js ``allscopeFetch``). Errors are
``{"error": "one line"}`` with a 4xx status.
"""

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api")
