"""The roles a central account may hold: ``admin`` (everything) and ``pathologist`` (the per-clinic export only).

The account model and its rules are the device's (``device.services.accounts``); the central accepts
only these two of its roles.
"""

from __future__ import annotations

CENTRAL_ROLE_CHOICES = ("admin", "pathologist")


def central_roles(text: str | list[str]) -> list[str]:
    """The checked role list; AccountError (one line) for an unknown role or one the central has no use for."""
    from device.services.accounts import AccountError, parse_roles

    roles = parse_roles(text)
    other = [role for role in roles if role not in CENTRAL_ROLE_CHOICES]
    if other:
        raise AccountError(f"role {', '.join(other)} has no use on the central: choose from "
                           f"{', '.join(CENTRAL_ROLE_CHOICES)}")
    return roles
