"""One line per problem of a configuration file: ``FILE:LINE: dotted.key: what is wrong (got VALUE)``.

tomllib keeps no line numbers, so :class:`KeyLines` finds them in the text; pydantic's error
records are turned into short messages that name the allowed values or bounds of the field.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import BaseModel


def problem_lines(name: str, text: str, errors: list[dict], root: type[BaseModel]) -> list[str]:
    """The problems of ``errors`` (pydantic's ``ValidationError.errors()``), sorted by line."""
    lines = KeyLines(text)
    numbered = [(lines.line(_loc(e)), _problem(root, e)) for e in errors]
    return [f"{name}:{number}: {message}" for number, message in sorted(numbered, key=lambda item: item[0])]


def _loc(error: dict) -> tuple[str, ...]:
    return tuple(str(part) for part in error["loc"] if not isinstance(part, int))


class KeyLines:
    """Line numbers of the tables and keys of a TOML text (tomllib does not keep them).

    Understands ``[table]`` headers, ``key = value`` and dotted ``a.b = value`` lines, and skips the
    inside of multi-line strings and arrays well enough for a configuration file.
    """

    _HEADER = re.compile(r'^\s*\[\s*([A-Za-z0-9_.\-" ]+?)\s*\]\s*(#.*)?$')
    _KEY = re.compile(r'^\s*([A-Za-z0-9_\-"\'. ]+?)\s*=')

    def __init__(self, text: str):
        self.lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        in_string = None
        for number, line in enumerate(text.splitlines(), start=1):
            if in_string:
                if line.count(in_string) % 2 == 1:
                    in_string = None
                continue
            header = self._HEADER.match(line)
            if header:
                table = self._split(header.group(1))
                self.lines.setdefault(table, number)
                continue
            key = self._KEY.match(line)
            if key:
                self.lines.setdefault(table + self._split(key.group(1)), number)
                for quote in ('"""', "'''"):
                    if line.count(quote) % 2 == 1:
                        in_string = quote

    @staticmethod
    def _split(dotted: str) -> tuple[str, ...]:
        return tuple(part.strip().strip('"\'') for part in dotted.split("."))

    def line(self, loc: tuple[str, ...]) -> int:
        """The key's own line, else its nearest enclosing table's, else 1."""
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return 1


def _field(root: type[BaseModel], loc: tuple[str, ...]):
    """(model class, field name) for a location in ``root``, or (model, None) for an unknown one."""
    model = root
    for part in loc[:-1]:
        info = model.model_fields.get(part)
        if info is None or not (isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)):
            return model, None
        model = info.annotation
    return model, (loc[-1] if loc and loc[-1] in model.model_fields else None)


def _bounds(model: type[BaseModel], name: str) -> str:
    low = high = None
    for item in model.model_fields[name].metadata:
        low = getattr(item, "ge", None) if getattr(item, "ge", None) is not None else low
        low = getattr(item, "gt", None) if getattr(item, "gt", None) is not None else low
        high = getattr(item, "le", None) if getattr(item, "le", None) is not None else high
    if low is not None and high is not None:
        return f"must be between {low:g} and {high:g}"
    return f"must be at least {low:g}" if low is not None else f"must be at most {high:g}"


_TYPE_WORDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "string": "text in quotes",
               "model": "a table", "dict": "a table", "path": "a path in quotes"}
_SECRET_WORDS = ("key", "password", "secret", "token", "passphrase")


def _toml_repr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _problem(root: type[BaseModel], error: dict) -> str:
    loc = _loc(error)
    kind = error["type"]
    model, field = _field(root, loc)
    given = error.get("input")
    got = f" (got {_toml_repr(given)})" if not isinstance(given, dict) else ""
    if kind == "extra_forbidden":
        known = list(model.model_fields)
        what = "section" if len(loc) == 1 else "key"
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        if any(word in loc[-1].lower() for word in _SECRET_WORDS) and len(loc) > 1:
            message = ("secrets do not belong in the config file: put the key in a file (storage.key_file) or a "
                       "systemd credential (storage.key_credential)")
        else:
            message = f"unknown {what} (known: {', '.join(known)}){hint}"
    elif kind == "literal_error":
        choices = [c.strip().strip("'") for c in re.split(r",| or ", error["ctx"]["expected"]) if c.strip()]
        message = f"must be one of {', '.join(choices)}{got}"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than") and field:
        message = f"{_bounds(model, field)}{got}"
    elif kind.endswith("_type") or kind.endswith("_parsing") or kind == "int_from_float":
        word = kind.split("_")[0]
        if kind == "int_from_float":
            word = "int"
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            word = "model"
        message = f"must be {_TYPE_WORDS.get(word, word)}{got}"
    elif kind == "string_pattern_mismatch":
        message = {"broker": "must be HOST:PORT", "key_credential": "must be a credential name (letters, digits, "
                   "_ . @ -)"}.get(field or "", "has the wrong form") + got
    elif kind in ("string_too_short", "string_too_long"):
        message = error["msg"].replace("String should", "must") + got
    elif kind == "value_error":
        message = str(error["ctx"]["error"])  # no "got": the value may be a password
    else:
        message = error["msg"] + got
    return f"{'.'.join(loc)}: {message}"
