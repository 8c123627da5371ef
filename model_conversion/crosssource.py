"""Leave-one-source-out evaluation: train without source S, test on S, for every source.

Works on any per-cell feature matrix (e.g. frozen embeddings from
``model_conversion.embed``) and any learner: ``LEARNERS`` maps a name to a
function ``fit(X, y, weights) -> predict`` with ``predict(X) -> p_blast``.
Sources are the units of ``sources.SOURCE_GROUPS`` (ALL-IDB1 frame cells and
ALL-IDB2 crops are one source). Besides one row per left-out source, C-NMC
gets its subject-disjoint row: training holds every other source and the
C-NMC subjects not held out.

Training weights: every training source weighs the same, blasts and normal
cells of a source weigh the same, and then both classes weigh the same overall.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

from model_conversion.data import Sample, split_by_group
from model_conversion.sources import SOURCE_OF

THRESHOLD = 0.5  # fixed before any run: p_blast >= 0.5 is "called blast"
CNMC_HOLDOUT = "c-nmc (held-out subjects)"

Predict = Callable[[np.ndarray], np.ndarray]
Learner = Callable[[np.ndarray, np.ndarray, np.ndarray], Predict]


def logreg_learner(x: np.ndarray, y: np.ndarray, w: np.ndarray, c: float = 0.1) -> Predict:
    """Standardised features + L2 logistic regression (C fixed, not tuned on the table)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
    model.fit(x, y, logisticregression__sample_weight=w)
    return lambda features: model.predict_proba(features)[:, 1]


STD_FLOOR = 0.25  # x the median channel std: see floored_scaler


def floored_scaler(x: np.ndarray, floor: float = STD_FLOOR) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) with scale = max(std, floor x median std).

    Pooled ReLU6 features have nearly dead channels (std down to 0.001): plain standardising gives
    them weights of ~40 in raw units, which a per-tensor uint8 kernel cannot hold beside weights of
    ~0.3 (the shipped head would disagree with its float self on 9 % of cells). The floor
    regularises those channels like the others.
    """
    std = x.std(0)
    return x.mean(0), np.maximum(std, floor * float(np.median(std)))


def floored_logreg_learner(x: np.ndarray, y: np.ndarray, w: np.ndarray, c: float = 0.1) -> Predict:
    """As ``logreg_learner``, standardised with ``floored_scaler`` (the frozen-backbone head)."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = floored_scaler(x)
    model = LogisticRegression(C=c, max_iter=3000).fit((x - mean) / scale, y, sample_weight=w)
    return lambda features: model.predict_proba((features - mean) / scale)[:, 1]


def centroid_learner(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> Predict:
    """Weighted class means on standardised features; p from the difference of distances (very cheap)."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    mu = [np.average(z[y == k], axis=0, weights=w[y == k]) for k in (0, 1)]

    def predict(features: np.ndarray) -> np.ndarray:
        f = (features - mean) / std
        d0, d1 = (np.linalg.norm(f - m, axis=1) for m in mu)
        return 1.0 / (1.0 + np.exp(-(d0 - d1) / np.sqrt(f.shape[1])))
    return predict


def nap_learner(k: int) -> Learner:
    """``logreg-floor`` after projecting out ``k`` laboratory directions (``model_conversion.nap``).

    Needs each training cell's source and cell type: ``_evaluate`` passes them as ``groups``.
    """
    def fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, c: float = 0.1, groups=None) -> Predict:
        from sklearn.linear_model import LogisticRegression

        from model_conversion.nap import nuisance_directions, project_out

        mean, scale = floored_scaler(x)
        z = (x - mean) / scale
        directions = nuisance_directions(z, y, *groups, k)
        model = LogisticRegression(C=c, max_iter=3000).fit(project_out(z, directions), y, sample_weight=w)
        return lambda features: model.predict_proba(project_out((features - mean) / scale, directions))[:, 1]
    fit.needs_groups = True
    return fit


LEARNERS: dict[str, Learner] = {"logreg": logreg_learner, "logreg-floor": floored_logreg_learner,
                                 "centroid": centroid_learner,
                                 **{f"logreg-floor-nap{k}": nap_learner(k) for k in (4, 8, 16, 32)}}


WEIGHTINGS = ("classes", "sources")


def training_weights(sources: list[str], y: np.ndarray, weighting: str = "classes") -> np.ndarray:
    """Each source the same total weight, its classes equal within it, then ("classes") both classes equal overall.

    ``"sources"`` leaves out the last step: with blasts in only two sources, making the classes
    equal overall weighs those sources' blasts ~5x their own normal cells, so a source's look
    becomes a blast cue; without it each source's look is neutral and the prior leans to normal.
    """
    w = np.zeros(len(y), np.float64)
    src = np.array(sources)
    for name in np.unique(src):
        in_source = src == name
        classes = np.unique(y[in_source])
        for k in classes:
            sel = in_source & (y == k)
            w[sel] = 1.0 / (len(classes) * sel.sum())
    if weighting == "classes":
        for k in (0, 1):
            if (y == k).any():
                w[y == k] *= 0.5 / w[y == k].sum()
    elif weighting != "sources":
        raise ValueError(f"unknown weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
    return w * len(y) / w.sum()


@dataclass
class Row:
    left_out: str
    trained_on: list[str]
    blasts: int
    normals: int
    blast_auc: float | None  # None where the left-out cells are of one class
    normal_called_blast: float | None
    blast_called_blast: float | None
    weighted_f1: float | None
    by_collection: dict = field(default_factory=dict)  # collection -> {blasts, normals, blast_auc}


def _scores(y: np.ndarray, p: np.ndarray) -> dict:
    both = len(np.unique(y)) == 2
    return {"blasts": int((y == 1).sum()), "normals": int((y == 0).sum()),
            "blast_auc": float(roc_auc_score(y, p)) if both else None,
            "normal_called_blast": float(np.mean(p[y == 0] >= THRESHOLD)) if (y == 0).any() else None,
            "blast_called_blast": float(np.mean(p[y == 1] >= THRESHOLD)) if (y == 1).any() else None,
            "weighted_f1": float(f1_score(y, p >= THRESHOLD, average="weighted")) if both else None}


def _evaluate(name: str, samples: list[Sample], x: np.ndarray, y: np.ndarray, train: np.ndarray,
              test: np.ndarray, learner: Learner, augmented: tuple[np.ndarray, ...] = (),
              weighting: str = "classes") -> Row:
    units = [SOURCE_OF.get(s.source, s.source) for s in samples]
    trained_on = sorted({units[i] for i in np.flatnonzero(train)})
    if len(np.unique(y[train])) < 2:
        raise ValueError(f"row {name!r}: training side without both classes (trained on {', '.join(trained_on)})")
    w = training_weights([units[i] for i in np.flatnonzero(train)], y[train], weighting)
    # Augmented copies of the training cells (never of the tested ones) share their cell's weight, so the
    # total weight, and with it the regularisation's relative strength, is the same with or without them.
    copies = 1 + len(augmented)
    x_train = np.concatenate([x[train]] + [a[train] for a in augmented])
    extra = {}
    if getattr(learner, "needs_groups", False):
        chosen = np.flatnonzero(train)
        extra["groups"] = ([units[i] for i in chosen] * copies, [samples[i].cell_type for i in chosen] * copies)
    predict = learner(x_train, np.tile(y[train], copies), np.tile(w / copies, copies), **extra)
    p = predict(x[test])
    row = Row(left_out=name, trained_on=trained_on, **_scores(y[test], p))
    collections = [samples[i].source for i in np.flatnonzero(test)]
    if len(set(collections)) > 1:
        for c in sorted(set(collections)):
            sel = np.array([k == c for k in collections])
            row.by_collection[c] = _scores(y[test][sel], p[sel])
    return row


def leave_one_source_out(samples: list[Sample], x: np.ndarray, learner: Learner,
                         exclude_from_training: tuple[str, ...] = (), seed: int = 2025,
                         cnmc_holdout_fraction: float = 0.3, log=print,
                         augmented: tuple[np.ndarray, ...] = (), weighting: str = "classes",
                         looks: dict[str, np.ndarray] | None = None) -> list[Row]:
    """One Row per left-out source (plus C-NMC's subject-disjoint row when C-NMC may be trained on).

    ``exclude_from_training`` names sources never trained on (they are still
    tested as left-out sources). A left-out source whose remaining training
    side lacks blasts cannot be evaluated without C-NMC and is trained with
    C-NMC anyway; its row says so in ``trained_on``. ``augmented``: feature
    matrices of augmented copies of every sample (same order), added to the
    training side only. ``looks``: {source: features of every sample rendered in
    that source's look} (``model_conversion.looks``), added like ``augmented``
    except the left-out source's look, whose statistics a fold must not use.
    """
    looks = looks or {}
    y = np.array([s.label for s in samples])
    units = np.array([SOURCE_OF.get(s.source, s.source) for s in samples])
    excluded = np.isin(units, list(exclude_from_training))
    rows = []
    for source in sorted(set(units)):
        test = units == source
        train = ~test & ~excluded
        if len(np.unique(y[train])) < 2:
            train = ~test
            log(f"{source}: no blasts to learn from without {', '.join(exclude_from_training)}; trained with them")
        copies = augmented + tuple(m for target, m in looks.items() if target != source)
        rows.append(_evaluate(source, samples, x, y, train, test, learner, copies, weighting))
        log(_format_row(rows[-1]))
    cnmc = [i for i, u in enumerate(units) if u == "c-nmc"]
    if cnmc and "c-nmc" not in exclude_from_training:
        _, held = split_by_group([samples[i] for i in cnmc], cnmc_holdout_fraction, seed)
        held_paths = {s.path for s in held}
        test = np.array([u == "c-nmc" and s.path in held_paths for u, s in zip(units, samples)])
        train = ~test & ~excluded
        row = _evaluate(CNMC_HOLDOUT, samples, x, y, train, test, learner, augmented + tuple(looks.values()),
                        weighting)
        row.by_collection["held-out subjects"] = sorted({s.subject for s in held})
        rows.append(row)
        log(_format_row(row))
    return rows


def _fmt(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f} %" if percent else f"{value:.3f}"


def _format_row(row: Row) -> str:
    return (f"{row.left_out:28} blasts {row.blasts:5} normals {row.normals:5}  AUC {_fmt(row.blast_auc):>6}  "
            f"normal→blast {_fmt(row.normal_called_blast, True):>7}  blast→blast {_fmt(row.blast_called_blast, True):>7}")


def markdown_table(rows: list[Row], title: str) -> str:
    lines = [f"### {title}", "",
             "| left-out source | blasts | normals | blast AUC | normal called blast | blasts called blast | weighted F1 | trained on |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.left_out} | {row.blasts} | {row.normals} | {_fmt(row.blast_auc)} | "
                     f"{_fmt(row.normal_called_blast, True)} | {_fmt(row.blast_called_blast, True)} | "
                     f"{_fmt(row.weighted_f1)} | {', '.join(row.trained_on)} |")
        for name, sub in row.by_collection.items():
            if isinstance(sub, dict):
                lines.append(f"| ↳ {name} | {sub['blasts']} | {sub['normals']} | {_fmt(sub['blast_auc'])} | "
                             f"{_fmt(sub['normal_called_blast'], True)} | {_fmt(sub['blast_called_blast'], True)} | "
                             f"{_fmt(sub['weighted_f1'])} | |")
            else:
                lines.append(f"| ↳ {name}: {', '.join(sub)} | | | | | | | |")
    return "\n".join(lines) + "\n"


def rows_to_json(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]
