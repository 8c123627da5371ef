"""Smear blasts of held-out ALL-IDB frames shown in a left-out laboratory's look.

ALL-IDB is the only laboratory with blasts in a smear, so "trained without
ALL-IDB" measures only what C-NMC teaches. This row asks the other question
a new laboratory raises: is a blast recognised when it *looks* like another
laboratory's cells? ALL-IDB's frames/crops are split by group (30 % held
out, seed 2025); for every normal-only laboratory L, the head is fitted
without L and without the held-out ALL-IDB groups (look copies, when used,
never in L's look), and scored on the held-out ALL-IDB cells rendered in L's
look (``model_conversion.looks``) and, for reference, as they are.
"""

from __future__ import annotations

import numpy as np

from model_conversion.crosssource import THRESHOLD, Learner, _evaluate
from model_conversion.data import Sample, split_by_group
from model_conversion.sources import SOURCE_OF

LOOK_LABS = ("bccd", "cellavision-blog", "pbc", "tecom")


def _held_out_all_idb(samples: list[Sample], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(source unit per sample, mask of the held-out 30 % of ALL-IDB's groups)."""
    units = np.array([SOURCE_OF.get(s.source, s.source) for s in samples])
    idb = [i for i, u in enumerate(units) if u == "all-idb"]
    _, held = split_by_group([samples[i] for i in idb], 0.3, seed)
    held_paths = {(s.path, s.centre) for s in held}
    return units, np.array([u == "all-idb" and (s.path, s.centre) in held_paths for u, s in zip(units, samples)])


def look_shift_rows(samples: list[Sample], x: np.ndarray, looks: dict[str, np.ndarray], learner: Learner,
                    weighting: str, look_copies: bool, seed: int = 2025,
                    res_copies: tuple[np.ndarray, ...] = ()) -> list[dict]:
    """One dict per laboratory L: held-out ALL-IDB blast AUC / called blast, as they are and in L's look."""
    units, test = _held_out_all_idb(samples, seed)
    rows = []
    for lab in LOOK_LABS:
        if lab not in looks:
            continue
        train = ~test & (units != lab)
        copies = (tuple(m for target, m in looks.items() if target != lab) if look_copies else ()) + res_copies
        as_is = _evaluate("all-idb held out", samples, x, _labels(samples), train, test, learner, copies, weighting)
        shifted = _evaluate(f"all-idb held out, {lab} look", samples, _swap(x, looks[lab], test),
                            _labels(samples), train, test, learner, copies, weighting)
        rows.append({"look": lab, "blasts": as_is.blasts, "normals": as_is.normals,
                     "auc_as_is": as_is.blast_auc, "called_as_is": as_is.blast_called_blast,
                     "auc_in_look": shifted.blast_auc, "called_in_look": shifted.blast_called_blast,
                     "normals_called_in_look": shifted.normal_called_blast, "threshold": THRESHOLD})
    return rows


def res_shift_rows(samples: list[Sample], x: np.ndarray, at_radius: dict[float, np.ndarray], learner: Learner,
                   weighting: str, copies: tuple[np.ndarray, ...], seed: int = 2025) -> list[dict]:
    """One dict per red-cell radius R: the held-out ALL-IDB cells as they are and as seen at R px."""
    _, test = _held_out_all_idb(samples, seed)
    train = ~test
    y = _labels(samples)
    as_is = _evaluate("all-idb held out", samples, x, y, train, test, learner, copies, weighting)
    rows = []
    for radius, features in sorted(at_radius.items()):
        low = _evaluate(f"all-idb held out at r={radius:g}", samples, _swap(x, features, test), y, train, test,
                        learner, copies, weighting)
        rows.append({"radius_px": radius, "blasts": as_is.blasts, "normals": as_is.normals,
                     "auc_as_is": as_is.blast_auc, "called_as_is": as_is.blast_called_blast,
                     "auc_low": low.blast_auc, "called_low": low.blast_called_blast,
                     "normals_called_low": low.normal_called_blast})
    return rows


def res_shift_markdown(rows: list[dict]) -> str:
    lines = ["| red-cell radius | held-out ALL-IDB blasts / normals | AUC as they are → at that radius | blasts called "
             "blast as they are → at that radius | normals called blast at that radius |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['radius_px']:g} px | {r['blasts']} / {r['normals']} | {r['auc_as_is']:.3f} → "
                     f"{r['auc_low']:.3f} | {100 * r['called_as_is']:.1f} % → {100 * r['called_low']:.1f} % "
                     f"| {100 * r['normals_called_low']:.1f} % |")
    return "\n".join(lines)


def _labels(samples: list[Sample]) -> np.ndarray:
    return np.array([s.label for s in samples])


def _swap(x: np.ndarray, other: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = x.copy()
    out[rows] = other[rows]
    return out


def look_shift_markdown(rows: list[dict]) -> str:
    lines = ["| look of | held-out ALL-IDB blasts / normals | AUC as they are | AUC in the look | blasts called blast "
             "as they are → in the look | ALL-IDB normals called blast in the look |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['look']} | {r['blasts']} / {r['normals']} | {r['auc_as_is']:.3f} | {r['auc_in_look']:.3f} "
                     f"| {100 * r['called_as_is']:.1f} % → {100 * r['called_in_look']:.1f} % "
                     f"| {100 * r['normals_called_in_look']:.1f} % |")
    return "\n".join(lines)
