"""The white cell differential and the review record: what is counted, and who said what, defined once.

Pure functions over cell dicts (``reporting.cell_dict``: ``edge``, ``ai_label``, ``final_label``,
``reviewer_label``, ``reviewed_by``, ``label_source``); the review page, the report (HTML, PDF), the FHIR
export, the capture page's progress line and sign-off all read them.

**A counted white cell** is a cell not cut by the frame edge whose final label (the reviewer's, else the AI's)
is not ``unusable``. So the classes ``blast``, ``neutrophil``, ``lymphocyte``, ``monocyte``, ``eosinophil``,
``basophil``, ``other`` (a white cell of another type, e.g. a plasma cell) and ``normal`` (a normal white cell
whose class nobody gave: the AI's "not a blast", or a reviewer's "normal") are counted; ``unusable`` (smudged,
cut, an artefact: not countable) and edge cells never are. Every percentage is over the counted white cells,
as in a manual differential (n of 100 or 200 cells counted). The AI only answers blast or normal: the other
classes come from the reviewer.

**The review record** of the non-edge cells: each is either *labelled by a reviewer* (their own label),
*accepted as the AI labelled it* by a reviewer (``label_source == "ai_accepted"``: "accept the remaining AI
labels"), or *not reviewed* (the AI's label stands, unseen by anyone).
"""

from __future__ import annotations

from device.config.choices import CELL_LABELS

# The differential's rows, in the order a report prints them; "normal" last: a white cell without a class.
DIFFERENTIAL_CLASSES: tuple[str, ...] = ("blast", "neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil",
                                         "other", "normal")
NOT_COUNTED = "unusable"
CLASS_NAMES = {"blast": "Blasts", "neutrophil": "Neutrophils", "lymphocyte": "Lymphocytes", "monocyte": "Monocytes",
               "eosinophil": "Eosinophils", "basophil": "Basophils", "other": "Other white cells",
               "normal": "Normal, class not given"}
assert set(DIFFERENTIAL_CLASSES) | {NOT_COUNTED} == set(CELL_LABELS)


def is_counted(cell: dict) -> bool:
    """Whether ``cell`` is a counted white cell (see the module docstring)."""
    return not cell["edge"] and cell["final_label"] != NOT_COUNTED


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def differential(cells: list[dict]) -> dict:
    """Counts and percentages by class over the counted white cells.

    ``{"white_cells": n, "classified": n without "normal", "rows": [{"label", "name", "count", "percentage"}]}``;
    a percentage is None when no white cell is counted.
    """
    counted = [c["final_label"] for c in cells if is_counted(c)]
    total = len(counted)
    rows = []
    for label in DIFFERENTIAL_CLASSES:
        count = counted.count(label)
        rows.append({"label": label, "name": CLASS_NAMES[label], "count": count, "percentage": _pct(count, total)})
    return {"white_cells": total, "classified": total - counted.count("normal"), "rows": rows}


def count_progress(white_cells: int, target: int, minimum: int) -> dict:
    """How far the count is: "41 of 200 white cells counted", and whether it reaches the sign-off minimum."""
    return {"white_cells": white_cells, "target": target, "minimum": minimum,
            "reached_target": white_cells >= target, "enough_to_sign": white_cells >= minimum,
            "text": f"{white_cells} of {target} white cells counted"}


def below_minimum_reason(white_cells: int, minimum: int) -> str | None:
    """The one line that refuses sign-off below the minimum (None when enough cells are counted)."""
    if white_cells >= minimum:
        return None
    return (f"{white_cells} white cell{'s' if white_cells != 1 else ''} counted; at least {minimum} needed to sign, "
            "or give an override reason.")


def review_record(cells: list[dict]) -> dict:
    """Who reviewed what, over the non-edge cells.

    ``{"cells": n, "labelled": n, "accepted": n, "not_reviewed": n,
    "by_reviewer": [{"reviewer", "labelled", "accepted"}, ...], "statement": one line}``.
    """
    cells = [c for c in cells if not c["edge"]]
    people: dict[str, dict] = {}
    labelled = accepted = 0
    for cell in cells:
        if cell["reviewer_label"] is None:
            continue
        name = cell.get("reviewed_by") or "unknown"
        who = people.setdefault(name, {"reviewer": name, "labelled": 0, "accepted": 0})
        if cell.get("label_source") == "ai_accepted":
            who["accepted"] += 1
            accepted += 1
        else:
            who["labelled"] += 1
            labelled += 1
    record = {"cells": len(cells), "labelled": labelled, "accepted": accepted,
              "not_reviewed": len(cells) - labelled - accepted,
              "by_reviewer": sorted(people.values(), key=lambda p: p["reviewer"])}
    record["statement"] = review_statement(record)
    return record


def review_statement(record: dict) -> str:
    """"Of 48 cells: 17 labelled by the reviewer (path), 25 accepted as the AI labelled them (path), 6 not
    reviewed."" """
    parts = []
    for person in record["by_reviewer"]:
        if person["labelled"]:
            parts.append(f"{person['labelled']} labelled by {person['reviewer']}")
        if person["accepted"]:
            parts.append(f"{person['accepted']} accepted as the AI labelled them by {person['reviewer']}")
    parts.append(f"{record['not_reviewed']} not reviewed (AI label)")
    return f"Of {record['cells']} cells (edge cells excluded): " + ", ".join(parts) + "."


def summary_differential(summary: dict) -> dict:
    """The (frozen) summary's differential; computed from its cells for versions signed before it was frozen."""
    return summary.get("differential") or differential(summary.get("cells") or [])


def summary_review(summary: dict) -> dict:
    """The (frozen) summary's review record; from its cells for older versions (whose labels were all the
    reviewer's own: accepting the AI's labels came with schema v5)."""
    return summary.get("review") or review_record(summary.get("cells") or [])


def override_line(override_reason: str | None, summary: dict) -> str | None:
    """"Signed with 41 white cells counted (minimum 100, target 200). Override reason: ..." or None."""
    if not override_reason:
        return None
    policy = summary.get("count_policy") or {}
    counted = summary_differential(summary)["white_cells"]
    limits = (f" (minimum {policy['minimum']}, target {policy['target']})"
              if "minimum" in policy and "target" in policy else "")
    return f"Signed with {counted} white cells counted{limits}. Override reason: {override_reason}"
