"""What a device says about itself in its status message: software version and the model it last analysed with.

    software_version()   # "0.1.0": the installed allscope package ("" when run from a tree never installed)
    latest_model()       # {"id": short id, "name": ..., "version": ...} of the newest analysed capture, or None
"""

from __future__ import annotations

from importlib import metadata

from device.store.records import Capture


def software_version() -> str:
    try:
        return metadata.version("allscope")
    except metadata.PackageNotFoundError:
        return ""


def latest_model() -> dict | None:
    row = (Capture.select(Capture.model_identity).where(Capture.model_identity.is_null(False))
           .order_by(Capture.analysed_at.desc(nulls="LAST"), Capture.id.desc()).first())
    identity = row.model_identity if row is not None else None
    if not isinstance(identity, dict):
        return None
    return {"id": identity.get("short_id") or "", "name": identity.get("name") or "",
            "version": identity.get("version") or ""}
