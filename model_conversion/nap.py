"""Nuisance attribute projection: take the laboratory's look out of frozen features before the head.

A head fitted on pooled sources learns each blast source's *look* (stain,
light, background) as "blast", because blasts come from two laboratories
only (CROSS_SOURCE.md, fourth step). NAP (Solomonoff et al., channel
compensation in speaker verification) removes the directions along which
the laboratories differ, estimated from normal cells only so that no blast
cue is learnt or removed on purpose:

* each (source, cell type) group's mean minus the mean of that cell type
  over the sources that have it (a type's own look is kept, the lab's shift
  is not), and
* each source's mean minus the mean of the sources (sources weigh the same);

the leading ``k`` eigenvectors of the scatter of those deviations span the
nuisance subspace, and ``P = I - V V^T`` is applied to the standardised
features. P is linear, so the fitted head folds back into raw features
(``w_raw = (P w) / scale``): the shipped file and its cost do not change.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def nuisance_directions(z: np.ndarray, y: np.ndarray, sources: list[str], types: list[str], k: int) -> np.ndarray:
    """(D, k') orthonormal directions (k' ≤ k) of the laboratories' shifts among normal cells of ``z``."""
    if k <= 0:
        return np.zeros((z.shape[1], 0))
    normal = np.flatnonzero(y == 0)
    src = np.array(sources)[normal]
    typ = np.array(types)[normal]
    zn = z[normal]
    deviations = []
    source_means = {s: zn[src == s].mean(0) for s in np.unique(src)}
    grand = np.mean(list(source_means.values()), axis=0)
    deviations += [m - grand for m in source_means.values()]
    by_type: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for s in np.unique(src):
        for t in np.unique(typ[src == s]):
            by_type[t][s] = zn[(src == s) & (typ == t)].mean(0)
    for means in by_type.values():
        if len(means) >= 2:
            centre = np.mean(list(means.values()), axis=0)
            deviations += [m - centre for m in means.values()]
    d = np.array(deviations)
    _, singular, vt = np.linalg.svd(d, full_matrices=False)
    keep = min(k, int(np.sum(singular > 1e-6 * singular[0])))
    return vt[:keep].T


def project_out(z: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """z with its components along the (orthonormal) ``directions`` removed."""
    if directions.shape[1] == 0:
        return z
    return z - (z @ directions) @ directions.T
