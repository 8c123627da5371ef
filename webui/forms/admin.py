"""The admin pages' forms (flask-wtf: CSRF included, messages shown next to each field)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import PasswordField, SelectField, SelectMultipleField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import EqualTo, InputRequired, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget, NumberInput

from device.config.choices import CAMERA_KINDS
from device.services.accounts import MIN_PASSWORD_LENGTH
from device.services.settings import DESCRIPTIONS, LABELS
from device.store.records import ROLES

ROLE_CHOICES = [SelectChoice(role, role.capitalize()) for role in ROLES]


class CheckboxesField(SelectMultipleField):
    """A multiple choice shown as a list of check boxes (big touch targets, no hidden menus)."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


def password_fields(label: str = "New password"):
    """A password and its confirmation, with the account rules' minimum length (shared with the central UI)."""
    password = PasswordField(label, validators=[
        InputRequired(message="Enter a password."),
        Length(min=MIN_PASSWORD_LENGTH, message=f"Use at least {MIN_PASSWORD_LENGTH} characters.")],
        render_kw={"autocomplete": "new-password"})
    confirm = PasswordField("Password again", validators=[
        InputRequired(message="Type the password a second time."),
        EqualTo("password", message="The two passwords differ.")], render_kw={"autocomplete": "new-password"})
    return password, confirm


class CreateUserForm(FlaskForm):
    username = StringField("Username", validators=[InputRequired(message="Enter a username."), Length(max=64)],
                           description="2-64 characters: lower-case letters, digits, '.', '_' or '-'.",
                           render_kw={"autocapitalize": "none", "autocomplete": "off"})
    full_name = StringField("Full name", validators=[Optional(), Length(max=200)])
    roles = CheckboxesField("Roles", choices=ROLE_CHOICES,
                            validators=[InputRequired(message="Choose at least one role.")],
                            description="Technicians capture and analyse; pathologists also review and sign; "
                                        "administrators manage users and the device.")
    password, confirm = password_fields()


class RolesForm(FlaskForm):
    roles = CheckboxesField("Roles", choices=ROLE_CHOICES,
                            validators=[InputRequired(message="Choose at least one role.")])


class PasswordForm(FlaskForm):
    password, confirm = password_fields()


class ActionForm(FlaskForm):
    """A button-only form (disable / enable): just the CSRF token."""


def _setting(field_class, key: str, **kwargs):
    return field_class(LABELS[key], description=DESCRIPTIONS[key], **kwargs)


class SettingsForm(FlaskForm):
    """Every device setting; numbers as number inputs with their bounds (a touch keyboard shows digits, the
    spinner stays in range), still read as text: device.services.settings checks the values and names the
    bad field."""

    threshold = _setting(StringField, "threshold", widget=NumberInput(step="0.01", min=0, max=1))
    review_low = _setting(StringField, "review_low", widget=NumberInput(step="0.01", min=0, max=1))
    review_high = _setting(StringField, "review_high", widget=NumberInput(step="0.01", min=0, max=1))
    camera_kind = _setting(SelectField, "camera_kind", choices=[SelectChoice(k, k) for k in CAMERA_KINDS])
    camera_source = _setting(StringField, "camera_source", render_kw={"autocapitalize": "none"})
    model_path = _setting(StringField, "model_path", render_kw={"autocapitalize": "none"})
    idle_minutes = _setting(StringField, "idle_minutes", widget=NumberInput(step=1, min=1, max=120))
    max_upload_mb = _setting(StringField, "max_upload_mb", widget=NumberInput(step=1, min=1, max=512))
    target_white_cells = _setting(StringField, "target_white_cells", widget=NumberInput(step=1, min=10, max=1000))
    min_white_cells = _setting(StringField, "min_white_cells", widget=NumberInput(step=1, min=0, max=1000))

    SECTIONS = (("Decision", ("threshold", "review_low", "review_high")),
                ("Camera", ("camera_kind", "camera_source")),
                ("Model", ("model_path",)),
                ("Sessions and uploads", ("idle_minutes", "max_upload_mb")),
                ("White cell count", ("target_white_cells", "min_white_cells")))


class AuditFilterForm(FlaskForm):
    """The audit trail's filters: a read-only GET form, so no CSRF token."""

    class Meta:
        csrf = False

    user = SelectField("User", choices=[], validate_choice=False)
    action = SelectField("Action", choices=[], validate_choice=False)
    entity = SelectField("Record", choices=[], validate_choice=False)
