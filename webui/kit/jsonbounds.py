"""Bounded JSON request bodies for both web apps: a size and a nesting depth, checked before parsing.

    app.json = BoundedJSONProvider(app)     # security.install does this for the device and the central app
    app.config["JSON_MAX_BYTES"], app.config["JSON_MAX_DEPTH"]   # ui.max_json_kb, ui.max_json_depth

Python's json parser recurses: a body nested 5,000 deep raised RecursionError, which no handler expected (a
500). Here a body larger than the limit, or deeper, is refused with one line (400, ``InvalidInput``) before the
parser sees it. Only parsing is bounded: what the apps send (``jsonify``) is not.
"""

from __future__ import annotations

import re
from typing import Any

from flask import current_app
from flask.json.provider import DefaultJSONProvider

from device.config.schema import UISection
from device.errors import InvalidInput

DEFAULT_MAX_BYTES = UISection.model_fields["max_json_kb"].default * 1024
DEFAULT_MAX_DEPTH = UISection.model_fields["max_json_depth"].default

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


class JSONRejected(InvalidInput):
    """A JSON body over the size or depth limit: refused before parsing."""


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (brackets inside strings do not count)."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRING.sub('""', text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def check_json(text: str | bytes, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH) -> str:
    """``text`` as str when within the limits; JSONRejected (one line) otherwise."""
    size = len(text) if isinstance(text, (bytes, bytearray)) else len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise JSONRejected(f"JSON body too large: {size:,} bytes (limit {max_bytes:,})")
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise JSONRejected("JSON body is not UTF-8") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise JSONRejected(f"JSON nested too deep: {depth} levels (limit {max_depth})")
    return text


class BoundedJSONProvider(DefaultJSONProvider):
    """Flask's JSON with bounded parsing (the limits from the app's config, else the defaults)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        config = current_app.config if current_app else {}
        text = check_json(s, int(config.get("JSON_MAX_BYTES", DEFAULT_MAX_BYTES)),
                          int(config.get("JSON_MAX_DEPTH", DEFAULT_MAX_DEPTH)))
        try:
            return super().loads(text, **kwargs)
        except RecursionError:  # a depth limit set above what the parser's stack holds
            raise JSONRejected("JSON nested too deep") from None
