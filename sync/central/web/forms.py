"""Forms of the central admin UI (flask-wtf: CSRF included, messages shown next to each field)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import InputRequired, Length, Optional, Regexp, ValidationError

from device.errors import AllscopeError
from sync.wire.topics import DEVICE_ID_RE
from webui.forms.admin import password_fields


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[InputRequired(message="Enter your username.")],
                           render_kw={"autocomplete": "username", "autocapitalize": "none", "autofocus": True})
    password = PasswordField("Password", validators=[InputRequired(message="Enter your password.")],
                             render_kw={"autocomplete": "current-password"})
    next = HiddenField()


class SetupForm(FlaskForm):
    setup_token = StringField("Set-up token", validators=[InputRequired(message="Enter the set-up token."),
                                                          Length(max=200)],
                              description="Printed by allscope central setup-token (and by allscope central serve "
                                          "at start) on the server.",
                              render_kw={"autocapitalize": "none", "autocomplete": "off", "spellcheck": "false"})
    username = StringField("Username", validators=[InputRequired(message="Enter a username."), Length(max=64)],
                           description="2-64 characters: lower-case letters, digits, '.', '_' or '-'.",
                           render_kw={"autocapitalize": "none", "autocomplete": "off"})
    full_name = StringField("Full name", validators=[Optional(), Length(max=200)])
    password, confirm = password_fields("Password")


def _broker_address(form, field) -> None:
    """Parsed by ``sync.fleet.enrol.parse_broker`` (as ``allscope central enrol --broker``); kept on ``field.parsed``."""
    from sync.fleet.enrol import parse_broker

    try:
        field.parsed = parse_broker(field.data or "")
    except AllscopeError:
        raise ValidationError("Write the broker as host:port, for example mqtt.example.org:8883.") from None


def _device_name(form, field) -> None:
    """The CLI's own rules (``sync.fleet.enrol.check_device_name``: e.g. names reserved for the server side)."""
    from sync.fleet.enrol import check_device_name

    try:
        check_device_name(field.data or "")
    except AllscopeError as error:
        raise ValidationError(str(error)) from None


class EnrolForm(FlaskForm):
    device_id = StringField("Device id", validators=[
        InputRequired(message="Enter the device id."),
        Regexp(DEVICE_ID_RE, message="Use 3-64 lower-case letters, digits and '-', starting with a letter or digit."),
        _device_name],
        description="The name of the appliance's certificate, e.g. scope-kano-01.",
        render_kw={"autocapitalize": "none", "autocomplete": "off"})
    clinic = StringField("Clinic", validators=[Optional(), Length(max=200)])
    broker = StringField("Broker address", validators=[InputRequired(message="Enter host:port."), _broker_address],
                         description="Where the device connects (host:port), as seen from the clinic.",
                         render_kw={"autocapitalize": "none"})


class ActionForm(FlaskForm):
    """A button-only form (revoke): just the CSRF token."""


class SigningKeyForm(FlaskForm):
    """Register the signing key fingerprint a device printed at ``allscope device enrol``."""

    fingerprint = StringField("Signing key SHA-256", validators=[
        InputRequired(message="Enter the fingerprint the device printed."),
        Regexp(r"^\s*([0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}\s*$",
               message="64 hex digits, with or without colons, as allscope device enrol prints them.")],
        render_kw={"autocapitalize": "none", "autocomplete": "off", "spellcheck": "false"})
