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
StillFormat = Literal["jpeg90", "jpeg95", "webp-lossless", "png"]  # how a camera still is kept (frame_files.py)

CAMERA_KINDS: tuple[str, ...] = get_args(CameraKind)
DELEGATE_KINDS: tuple[str, ...] = get_args(DelegateKind)
MEDIA_POLICIES: tuple[str, ...] = get_args(MediaPolicy)
SQLITE_SYNCHRONOUS: tuple[str, ...] = get_args(SqliteSynchronous)
STILL_FORMATS: tuple[str, ...] = get_args(StillFormat)

# A cell's label. The AI answers only "blast" or "normal"; a reviewer may also give the white cell's class
# (a manual differential), "normal" (a normal white cell, class not given), "other" (a white cell of another
# type, e.g. a plasma cell: counted) or "unusable" (not a countable white cell: smudged, cut, an artefact;
# never counted). device/core/differential.py defines the counts over these.
CellLabel = Literal["blast", "normal", "lymphocyte", "neutrophil", "monocyte", "eosinophil", "basophil", "other",
                    "unusable"]
CELL_LABELS: tuple[str, ...] = get_args(CellLabel)
AI_LABELS: tuple[str, ...] = ("blast", "normal")
# How a cell's reviewed label came about: the reviewer's own label, or the AI's label accepted as it was.
LabelSource = Literal["reviewer", "ai_accepted"]
LABEL_SOURCES: tuple[str, ...] = get_args(LabelSource)
