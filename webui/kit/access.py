"""Who may call which route: every view declares its roles, and undeclared views are refused.

    @bp.get("/patients")
    @allow(*CLINICAL)
    def patient_list(): ...

``allow_anonymous`` marks the few public views (login, one-time set-up,
static files). The check runs in ``before_request`` (see ``webui/__init__``),
so a view that forgets to declare is denied rather than exposed;
``tests/web/test_access.py`` walks every registered route as anonymous and as
each role against one table of who may do what.
"""

from __future__ import annotations

from typing import Callable

from flask import current_app, request
from flask_login import current_user

ANONYMOUS = "anonymous"
TECHNICIAN = "technician"
PATHOLOGIST = "pathologist"
ADMIN = "admin"
CLINICAL = (TECHNICIAN, PATHOLOGIST)
ANY_USER = (TECHNICIAN, PATHOLOGIST, ADMIN)

_ATTRIBUTE = "_allscope_roles"


def allow(*roles: str) -> Callable:
    """Declare the roles that may call a view (a user needs any one of them)."""
    if not roles:
        raise ValueError("allow() needs at least one role")

    def mark(view: Callable) -> Callable:
        setattr(view, _ATTRIBUTE, frozenset(roles))
        return view

    return mark


def allow_anonymous(view: Callable) -> Callable:
    setattr(view, _ATTRIBUTE, frozenset({ANONYMOUS}))
    return view


def declared_roles(endpoint: str) -> frozenset[str] | None:
    if endpoint == "static":
        return frozenset({ANONYMOUS})
    view = current_app.view_functions.get(endpoint)
    return getattr(view, _ATTRIBUTE, None) if view is not None else None


def decide(endpoint: str | None) -> str:
    """"ok", "login" (anonymous must log in) or "forbidden" for the current user and endpoint."""
    if endpoint is None:  # 404 / 405: let Flask answer
        return "ok"
    roles = declared_roles(endpoint)
    if roles is None:
        return "forbidden"  # undeclared: deny by default
    if ANONYMOUS in roles:
        return "ok"
    if not current_user.is_authenticated:
        return "login"
    return "ok" if current_user.has_any_role(*roles) else "forbidden"


def is_api_request() -> bool:
    return request.path.startswith("/api/")
