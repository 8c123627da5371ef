"""Review forms shared by the review pages and the review API: the conclusion and the amendment reason.

The API validates its JSON with the same classes (``formdata`` from the body, CSRF
checked globally), so the page and the API refuse the same text with the same line.
"""

from __future__ import annotations

from flask_wtf import FlaskForm
from werkzeug.datastructures import MultiDict
from wtforms import BooleanField, TextAreaField
from wtforms.validators import InputRequired

from webui.forms import limits
from webui.forms.limits import MaxChars


class ReportForm(FlaskForm):
    conclusion = TextAreaField("Conclusion", validators=[MaxChars(limits.CONCLUSION_MAX)])
    acknowledge_failed = BooleanField("Sign without the frames whose analysis failed (the report lists them)")
    override_reason = TextAreaField("Override reason (only to sign with fewer white cells counted than the "
                                    "minimum; printed on the report)",
                                    validators=[MaxChars(limits.OVERRIDE_REASON_MAX)])


class AmendForm(FlaskForm):
    reason = TextAreaField("Reason for the amendment",
                           validators=[InputRequired(message="Give the reason for the amendment."),
                                       MaxChars(limits.AMENDMENT_REASON_MAX)])


def bound(form_class, values: dict):
    """A form validated against explicit values (the API's JSON), never the request's own body."""
    data = MultiDict()
    for name, value in values.items():
        if value is None or value is False:
            continue  # an unchecked box is an absent one
        data[name] = "y" if value is True else str(value)
    return form_class(formdata=data, meta={"csrf": False})


def first_error(form: FlaskForm) -> str:
    """"field: message" of the first refused field (the API's one line)."""
    for name, messages in form.errors.items():
        if messages:
            return f"{name}: {messages[0]}"
    return "invalid request"
