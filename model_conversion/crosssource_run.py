"""``python -m model_conversion crosssource``: embed, run the protocol per preparation, write the tables.

    python -m model_conversion crosssource --preparation cellprep --preparation field \\
        --exclude-variant c-nmc --out runs/crosssource

For every preparation and every training variant (all sources; and, per
``--exclude-variant``, without that source) it writes ``results.json`` and
``results.md`` in ``--out`` and applies the selection rule of
model_conversion/CROSS_SOURCE.md.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from model_conversion.crosssource import CNMC_HOLDOUT, LEARNERS, leave_one_source_out, markdown_table, rows_to_json

NORMAL_ONLY_SOURCES = ("pbc", "bccd", "tecom", "cellavision-blog")
MAX_NORMAL_CALLED_BLAST = 0.03


def rule_score(rows: list[dict]) -> dict:
    """The selection rule of CROSS_SOURCE.md applied to one configuration's rows."""
    by_name = {r["left_out"]: r for r in rows}
    fp = {s: by_name[s]["normal_called_blast"] for s in NORMAL_ONLY_SOURCES if s in by_name}
    violations = [s for s, v in fp.items() if v is not None and v > MAX_NORMAL_CALLED_BLAST]
    cnmc = by_name.get(CNMC_HOLDOUT) or by_name.get("c-nmc")
    aucs = [r["blast_auc"] for r in (by_name.get("all-idb"), cnmc) if r and r["blast_auc"] is not None]
    idb = by_name.get("all-idb")
    return {"admissible": not violations, "violations": violations,
            # Reported beside the rule, not part of it: a model can meet the false-blast limit by
            # calling no smear cell blast at all.
            "all_idb_blasts_called_blast": idb.get("blast_called_blast") if idb else None,
            "worst_normal_called_blast": max(fp.values()) if fp else None,
            "mean_blast_auc": float(np.mean(aucs)) if aucs else None}


def choose(results: dict[str, dict]) -> str:
    """Admissible configurations by mean blast AUC; if none is admissible, fewest violations, then lowest worst FP."""
    def key(name: str):
        s = results[name]["rule"]
        return (not s["admissible"], len(s["violations"]),
                -(s["mean_blast_auc"] or 0.0) if s["admissible"] else s["worst_normal_called_blast"])
    return min(results, key=key)


def run(data: Path, preparations: list[str], learner: str, exclude_variants: list[str], out: Path,
        network: str, threads: int, cache_dir: Path | None = None, log=print, augment_copies: int = 0,
        weighting: str = "classes", look_copies: bool = False, look_shift: bool = False,
        res_copies: tuple[float, ...] = ()) -> dict:
    from model_conversion.embed import embed_samples
    from model_conversion.prepare import default_cache_dir
    from model_conversion.sources import load_all_sources

    if learner not in LEARNERS:
        raise SystemExit(f"unknown learner {learner!r}; choose one of {', '.join(LEARNERS)}")
    out.mkdir(parents=True, exist_ok=True)
    samples = load_all_sources(data)
    from model_conversion.extractor import extractor_name, extractor_path
    if extractor_name(network):
        network = str(extractor_path(extractor_name(network), cache_dir or default_cache_dir()))
    log(f"{len(samples)} cells from {len({s.source for s in samples})} collections")
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for preparation in preparations:
        started = time.perf_counter()
        x = embed_samples(samples, preparation, cache_dir or default_cache_dir(), network, threads, log)
        augmented = tuple(embed_samples(samples, f"{preparation}+lab#{k}", cache_dir or default_cache_dir(), network,
                                        threads, log) for k in range(augment_copies))
        looks = {}
        if look_copies or look_shift:
            from model_conversion.looks import source_looks
            from model_conversion.views import physical_field
            for unit in source_looks(samples, cache_dir or default_cache_dir(), physical_field, log=log):
                looks[unit] = embed_samples(samples, f"{preparation}>look:{unit}", cache_dir or default_cache_dir(),
                                            network, threads, log)
        radii = sorted(set(res_copies) | ({5.0, 8.0} if look_shift else set()))
        at_res = {r: embed_samples(samples, f"{preparation}>res:{r:g}", cache_dir or default_cache_dir(), network,
                                   threads, log) for r in radii}
        augmented = augmented + tuple(at_res[r] for r in res_copies)
        log(f"{preparation}: features {x.shape} (+{augment_copies} augmented copies) in "
            f"{time.perf_counter() - started:.0f} s")
        shown = (preparation + (f"+lab×{augment_copies}" if augment_copies else "") + ("+looks" if look_copies else "")
                 + ("+res " + "/".join(f"{r:g}" for r in res_copies) if res_copies else "")
                 + (f" (weights: {weighting})" if weighting != "classes" else ""))
        for variant in [()] + [(v,) for v in exclude_variants]:
            name = f"{shown} | {learner} | " + ("all sources" if not variant else f"without {variant[0]}")
            log(f"== {name}")
            rows = rows_to_json(leave_one_source_out(samples, x, LEARNERS[learner], variant, log=log,
                                                     augmented=augmented, weighting=weighting,
                                                     looks=looks if look_copies else None))
            results[name] = {"preparation": preparation, "augment_copies": augment_copies, "weighting": weighting,
                             "look_copies": sorted(looks) if look_copies else [], "res_copies": list(res_copies),
                             "learner": learner,
                             "network": network,
                             "excluded_from_training": list(variant), "rows": rows, "rule": rule_score(rows)}
            if look_shift and not variant:
                from model_conversion.look_shift import look_shift_rows, res_shift_rows
                coarse = tuple(at_res[r] for r in res_copies)
                results[name]["look_shift"] = look_shift_rows(samples, x, looks, LEARNERS[learner], weighting,
                                                              look_copies, res_copies=coarse)
                results[name]["res_shift"] = res_shift_rows(samples, x, {r: at_res[r] for r in (5.0, 8.0)},
                                                            LEARNERS[learner], weighting,
                                                            (tuple(looks.values()) if look_copies else ()) + coarse)
            _write(out, results)
    if results:
        chosen = choose(results)
        log(f"chosen by the rule: {chosen}")
        (out / "chosen.txt").write_text(chosen + "\n")
    return results


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _write(out: Path, results: dict) -> None:
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, out / "results.json")
    from model_conversion.crosssource import Row

    parts = ["# Cross-source table (leave one source out)", ""]
    parts.append("| configuration | admissible | violations | worst normal called blast | mean blast AUC "
                 "| ALL-IDB blasts called blast (not in the rule) |")
    parts.append("|---|---|---|---|---|---|")
    for name, r in results.items():
        s = r["rule"]
        auc = "–" if s["mean_blast_auc"] is None else f"{s['mean_blast_auc']:.3f}"
        worst = "–" if s["worst_normal_called_blast"] is None else f"{100 * s['worst_normal_called_blast']:.1f} %"
        parts.append(f"| {name.replace(' | ', ' / ')} | {'yes' if s['admissible'] else 'no'} | "
                     f"{', '.join(s['violations']) or '–'} | {worst} | {auc} | {_percent(s.get('all_idb_blasts_called_blast'))} |")
    parts.append("")
    for name, r in results.items():
        parts.append(markdown_table([Row(**row) for row in r["rows"]], name.replace(" | ", " / ")))
        if r.get("look_shift"):
            from model_conversion.look_shift import look_shift_markdown
            parts += ["", f"Held-out ALL-IDB cells in a left-out laboratory's look ({name.replace(' | ', ' / ')}):", "",
                      look_shift_markdown(r["look_shift"]), ""]
        if r.get("res_shift"):
            from model_conversion.look_shift import res_shift_markdown
            parts += ["", f"Held-out ALL-IDB cells at a lower resolution ({name.replace(' | ', ' / ')}):", "",
                      res_shift_markdown(r["res_shift"]), ""]
    (out / "results.md").write_text("\n".join(parts))
