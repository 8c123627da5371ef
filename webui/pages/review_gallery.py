"""The review page's gallery: a sample's cells in groups (by flag, by the AI's label, by class), each group a
collapsible section (all open for a small sample; for a large one, those to act on), and for each cell the next flagged cell still to review (the "Next flagged" link that
works without JavaScript; review.js recomputes it as labels change).

Plain functions over the cell dicts of ``device.services.reporting``: cells keep their hardest-first order
inside each group.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GROUPINGS = {"flag": "Flag", "ai": "AI label", "class": "Class"}  # ?group= value -> button text
DEFAULT_GROUPING = "flag"
OPEN_ALL_UP_TO = 48  # a sample with at most this many cells shows every group open; a larger one only those to act on


@dataclass
class Group:
    key: str
    title: str
    open: bool
    cells: list[dict] = field(default_factory=list)


def is_open_flag(cell: dict) -> bool:
    """Flagged by the AI, counted, and not yet labelled by the reviewer: what "Next flagged" visits."""
    return bool(cell["needs_review"]) and not cell["edge"] and cell["reviewer_label"] is None


def grouping(value: str | None) -> str:
    return value if value in GROUPINGS else DEFAULT_GROUPING


def _by_flag(cells: list[dict]) -> list[Group]:
    small = len(cells) <= OPEN_ALL_UP_TO
    groups = [Group("to-review", "Flagged, still to review", True), Group("reviewed", "Labelled by you", small),
              Group("not-flagged", "Not flagged by the AI", small),
              Group("edge", "At the frame edge (not counted)", small)]
    for cell in cells:
        if cell["edge"]:
            groups[3].cells.append(cell)
        elif is_open_flag(cell):
            groups[0].cells.append(cell)
        elif cell["reviewer_label"] is not None:
            groups[1].cells.append(cell)
        else:
            groups[2].cells.append(cell)
    return groups


def _by_label(cells: list[dict], labels: list[str], key: str, title: str) -> list[Group]:
    groups: dict[str, Group] = {label: Group(label, f"{title} {label}", True) for label in labels}
    edge = Group("edge", "At the frame edge (not counted)", len(cells) <= OPEN_ALL_UP_TO)
    for cell in cells:
        if cell["edge"]:
            edge.cells.append(cell)
            continue
        label = cell[key]
        groups.setdefault(label, Group(label, f"{title} {label}", True)).cells.append(cell)
    return [*groups.values(), edge]


def group_cells(cells: list[dict], by: str, labels: list[str], shown: int | None = None) -> list[Group]:
    """The non-empty groups of ``cells`` (in the order given) for the grouping ``by``; the group holding the cell
    ``shown`` (the one just labelled without JavaScript) is open."""
    if by == "ai":
        groups = _by_label(cells, labels, "ai_label", "AI:")
    elif by == "class":
        groups = _by_label(cells, labels, "final_label", "Class:")
    else:
        groups = _by_flag(cells)
    for group in groups:
        group.open = group.open or any(cell["id"] == shown for cell in group.cells)
    return [group for group in groups if group.cells]


def next_flagged(groups: list[Group]) -> tuple[int | None, dict[int, int | None]]:
    """(the first cell to review, {cell id: the next cell to review after it on the page, wrapping round})."""
    order = [cell for group in groups for cell in group.cells]
    targets = [cell["id"] for cell in order if is_open_flag(cell)]
    if not targets:
        return None, {cell["id"]: None for cell in order}
    after: dict[int, int | None] = {}
    upcoming = None
    for cell in reversed(order):
        after[cell["id"]] = upcoming if upcoming is not None else (targets[0] if targets[0] != cell["id"] else None)
        if is_open_flag(cell):
            upcoming = cell["id"]
    return targets[0], after
