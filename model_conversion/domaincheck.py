"""Can a small classifier tell the source from a prepared cell? (It should not, after a good preparation.)

Logistic regression on the frozen embeddings of ``model_conversion.embed``,
5-fold cross-validation with folds split by group (frame, subject or file),
at most ``per_source`` cells per source (seeded), normal cells only so that
the share of blasts cannot reveal the source. Reports balanced accuracy
over the sources (chance = 1 / number of sources) and, separately, C-NMC vs
the smear sources (chance 0.5).

    python -m model_conversion domaincheck --preparation cellprep --preparation field-masked-grey
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model_conversion.sources import SOURCE_OF


def grouped_cv_balanced_accuracy(x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    predicted = np.empty_like(y)
    for train, test in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(x, y, groups):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced"))
        model.fit(x[train], y[train])
        predicted[test] = model.predict(x[test])
    return float(balanced_accuracy_score(y, predicted))


def domain_check(samples, x: np.ndarray, per_source: int = 300, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    units = np.array([SOURCE_OF.get(s.source, s.source) for s in samples])
    normal = np.array([s.label == 0 for s in samples])
    chosen = []
    for unit in sorted(set(units)):
        idx = np.flatnonzero((units == unit) & normal)
        chosen.extend(rng.choice(idx, min(per_source, len(idx)), replace=False))
    chosen = np.array(sorted(chosen))
    groups = np.array([samples[i].group for i in chosen])
    y_source = units[chosen]
    y_cnmc = (y_source == "c-nmc").astype(int)
    return {"cells": len(chosen), "sources": sorted(set(y_source)),
            "source_balanced_accuracy": grouped_cv_balanced_accuracy(x[chosen], y_source, groups, seed),
            "source_chance": 1.0 / len(set(y_source)),
            "cnmc_vs_smear_balanced_accuracy": grouped_cv_balanced_accuracy(x[chosen], y_cnmc, groups, seed)}


def run(data: Path, preparations: list[str], network: str, threads: int, log=print) -> dict:
    from model_conversion.embed import embed_samples
    from model_conversion.prepare import default_cache_dir
    from model_conversion.sources import load_all_sources

    samples = load_all_sources(data)
    results = {}
    for preparation in preparations:
        x = embed_samples(samples, preparation, default_cache_dir(), network, threads, log)
        r = domain_check(samples, x)
        results[preparation] = r
        log(f"{preparation:18} source from cell: balanced accuracy {r['source_balanced_accuracy']:.3f} "
            f"(chance {r['source_chance']:.3f}, {len(r['sources'])} sources, {r['cells']} normal cells); "
            f"C-NMC vs smear {r['cnmc_vs_smear_balanced_accuracy']:.3f} (chance 0.5)")
    return results
