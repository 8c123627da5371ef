"""Every enumeration of the appliance, listed once.

The configuration file's pydantic fields (``Literal`` types), the command
line's ``choices=``, the admin settings page and the runtime checks (camera
factory, delegate plugins, sync media policy) all read these lists, so a new
kind is added in one place.
"""

from __future__ import annotations

from typing import Literal, get_args

CameraKind = Literal["replay", "opencv", "picamera2"]
DelegateKind = Literal["cpu", "edgetpu", "external"]
MediaPolicy = Literal["frames", "crops", "none"]
SqliteSynchronous = Literal["full", "normal"]

CAMERA_KINDS: tuple[str, ...] = get_args(CameraKind)
DELEGATE_KINDS: tuple[str, ...] = get_args(DelegateKind)
MEDIA_POLICIES: tuple[str, ...] = get_args(MediaPolicy)
SQLITE_SYNCHRONOUS: tuple[str, ...] = get_args(SqliteSynchronous)
