"""Figures that the hardening and fault tests report at the end of the run (files tried, iterations,
kills survived, records checked), printed by ``pytest_terminal_summary`` in conftest.py.

    from figures import report
    report("hostile files tried through the upload page", 31)
"""

from __future__ import annotations

import collections

FIGURES: "collections.OrderedDict[str, float]" = collections.OrderedDict()


def report(name: str, value: float) -> None:
    """Add ``value`` to the figure ``name`` (figures of parametrized tests add up)."""
    FIGURES[name] = FIGURES.get(name, 0) + value


def terminal_summary(terminalreporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("hardening and fault figures")
    width = max(len(name) for name in FIGURES)
    for name, value in FIGURES.items():
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        terminalreporter.write_line(f"{name.ljust(width)}  {shown}")
