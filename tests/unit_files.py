"""Reading systemd unit files in tests: sections, repeated keys, time spans."""

from __future__ import annotations

import re
from pathlib import Path


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values in order]}} (keys repeat; no continuation lines are used)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def values(unit: dict, section: str, key: str) -> list[str]:
    return unit.get(section, {}).get(key, [])


def one(unit: dict, section: str, key: str) -> str | None:
    found = values(unit, section, key)
    return found[-1] if found else None


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min|h)?", text.strip())
    assert match, f"unexpected time span {text!r}"
    return int(match.group(1)) * {"s": 1, None: 1, "min": 60, "h": 3600}[match.group(2)]
