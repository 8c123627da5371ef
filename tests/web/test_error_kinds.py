"""One AllscopeError hierarchy, mapped to HTTP statuses in one place (webui/kit/errors.py)."""

from __future__ import annotations

import pytest

from device.errors import AllscopeError, Conflict, InvalidInput, NotFound
from device.services.accounts import AccountError, AccountRefused, NoSuchAccount, SetupClosed
from device.services.patients import DuplicateIdentifier
from device.services.settings import SettingsError
from device.services.signoff import ReviewError, ReviewInputError
from webui.forms.patients import PayloadError
from webui.kit.errors import http_status


@pytest.mark.parametrize("error, status", [
    (ReviewError("signed"), 409), (ReviewInputError("unknown label"), 400),
    (AccountError("weak password"), 400), (AccountRefused("last admin"), 409), (NoSuchAccount("nobody"), 404),
    (SetupClosed("closed"), 404), (SettingsError("threshold", "must be a number"), 400),
    (PayloadError("send a JSON object"), 400), (DuplicateIdentifier("P-1"), 400),
])
def test_every_service_error_has_a_kind_and_its_status(error, status):
    assert isinstance(error, AllscopeError)
    assert http_status(error) == status


def test_a_more_specific_kind_wins_and_a_bare_error_has_no_status():
    assert isinstance(ReviewInputError("x"), Conflict) and isinstance(ReviewInputError("x"), InvalidInput)
    assert http_status(ReviewInputError("x")) == 400  # the request's own fault first
    assert http_status(AllscopeError("model file broken")) is None
    assert http_status(ValueError("no kind")) is None


def test_an_uncaught_domain_error_is_one_line_with_its_status_on_pages_and_api(app):
    from flask import Blueprint

    from webui.kit.access import allow_anonymous

    bp = Blueprint("raising", __name__)

    @bp.get("/raise/<kind>")
    @bp.get("/api/raise/<kind>")
    @allow_anonymous
    def _raise(kind: str):
        raise {"missing": NotFound("no such thing"), "bare": AllscopeError("broken inside")}[kind]

    app.register_blueprint(bp)
    client = app.test_client()
    page = client.get("/raise/missing")
    assert page.status_code == 404 and "no such thing" in page.get_data(as_text=True)
    api = client.get("/api/raise/missing")
    assert api.status_code == 404 and api.get_json() == {"error": "no such thing"}
    bare = client.get("/api/raise/bare")
    assert bare.status_code == 500 and "broken inside" not in bare.get_data(as_text=True)
