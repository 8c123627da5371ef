"""Domain errors to HTTP statuses, in one place, for both web apps.

Services raise the kinds of ``device/errors.py``; a page or an API view may
catch one to show it in its form, and asks :func:`http_status` for the status
to answer with. An error a view does not catch reaches the handler that
:func:`install` registers: the page's one-line error or the API's
``{"error": ...}``, with the kind's status. A bare ``AllscopeError`` (no kind)
is not the request's fault and stays the "something went wrong" 500.
"""

from __future__ import annotations

from typing import Callable

from flask import Flask

from device.errors import (
    AllscopeError,
    Conflict,
    Forbidden,
    InsufficientStorage,
    InvalidInput,
    NotFound,
    Unavailable,
    UnsupportedMedia,
)

STATUS_OF_KIND: dict[type[AllscopeError], int] = {
    UnsupportedMedia: 415,
    InvalidInput: 400,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    InsufficientStorage: 507,
    Unavailable: 503,
}


def http_status(error: BaseException) -> int | None:
    """The status of the error's kind (the first kind in its class's MRO), or None when it has none."""
    for cls in type(error).__mro__:
        status = STATUS_OF_KIND.get(cls)
        if status is not None:
            return status
    return None


def install(app: Flask, respond: Callable[[int, str], object], unexpected: Callable[[BaseException], object]) -> None:
    """Answer an uncaught domain error with its one line and its kind's status; one without a kind as
    ``unexpected`` does (the 500 handler)."""

    @app.errorhandler(AllscopeError)
    def _domain_error(error: AllscopeError):
        status = http_status(error)
        if status is None:
            return unexpected(error)
        return respond(status, str(error))
