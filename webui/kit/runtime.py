"""The device web UI's one typed handle on the running appliance, and the actor of the current request.

    appliance()   # device.services.appliance.Appliance: data dir, database, settings in force, worker, camera
    actor()       # device.services.actor.Actor: the logged-in user and the client address, for the services
    count_policy()  # device.services.signoff.CountPolicy: target and sign-off minimum white cell counts in force

The app is a :class:`DeviceApp` (``webui/app.py`` builds it) whose ``appliance``
attribute is set once, at creation; nothing else is kept beside it.
"""

from __future__ import annotations

from typing import cast

from flask import Flask, current_app, request
from flask_login import current_user

from device.services.actor import Actor
from device.services.appliance import Appliance
from device.services.signoff import CountPolicy
from device.services.signoff import count_policy as _policy_of


class DeviceApp(Flask):
    """A Flask app that carries the running appliance."""

    appliance: Appliance


def appliance() -> Appliance:
    """The running appliance of the current app (inside a request or an app context)."""
    return cast(DeviceApp, current_app._get_current_object()).appliance


def actor() -> Actor:
    """The logged-in user and the client's address, as the services take them."""
    return Actor(current_user.username, request.remote_addr or "")


def count_policy() -> CountPolicy:
    """The target and minimum white cell counts in force on this device (stored settings over the file's)."""
    return _policy_of(appliance().settings)
