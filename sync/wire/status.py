"""The retained status message a device publishes on ``allscope/v1/devices/<id>/status``.

    {"state": "online", "backlog": 12, "software": "0.1.0",
     "model": {"id": "3f2a9c1b", "name": "allscope_blast", "version": "2.0.0"}}

``state`` is required ("online" or "offline"; the broker's last will is ``{"state": "offline"}``).
``backlog`` (outbox entries), ``software`` (the allscope package version) and ``model`` (the model the
device last analysed with) are optional and additive: an older device sends none of the last two, and
the central keeps what it knew. Each text is bounded; anything else is refused in one line.
"""

from __future__ import annotations

import json
from typing import Any

STATES = ("online", "offline")
MAX_TEXT = 64
MODEL_KEYS = ("id", "name", "version")


def make_status(state: str, backlog: int | None = None, software: str = "", model: dict | None = None) -> str:
    status: dict[str, Any] = {"state": state}
    if backlog is not None:
        status["backlog"] = backlog
    if software:
        status["software"] = software[:MAX_TEXT]
    if model:
        status["model"] = {key: str(model.get(key) or "")[:MAX_TEXT] for key in MODEL_KEYS}
    return json.dumps(status)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise ValueError(f"{what} must be a string of at most {MAX_TEXT} characters")
    return value


def parse_status(payload: bytes) -> dict:
    """The checked fields of a status message: state, and backlog / software / model when present."""
    status = json.loads(payload.decode("utf-8"))
    if not isinstance(status, dict) or status.get("state") not in STATES:
        raise ValueError("expected {\"state\": \"online\"|\"offline\", ...}")
    out: dict[str, Any] = {"state": status["state"]}
    backlog = status.get("backlog")
    if backlog is not None:
        if not isinstance(backlog, int) or isinstance(backlog, bool) or backlog < 0:
            raise ValueError("backlog must be a non-negative integer")
        out["backlog"] = backlog
    if status.get("software") is not None:
        out["software"] = _text(status["software"], "software")
    model = status.get("model")
    if model is not None:
        if not isinstance(model, dict):
            raise ValueError("model must be an object with id, name and version")
        out["model"] = {key: _text(model.get(key, ""), f"model.{key}") for key in MODEL_KEYS}
    return out
