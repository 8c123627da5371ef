"""Leave-one-source-out table of the REAL device network (int8 LiteRT), per training candidate.

    python -m model_conversion cnncross --candidate mnet-field --out runs/cnn   # resumes fold by fold
    python -m model_conversion cnncross --summary --out runs/cnn                # table + the rule's choice
    python -m model_conversion cnnfit --candidate mnet-field --out runs/final_mnet   # refit on every source

For each fold (a left-out source, and C-NMC's held-out subjects as in
``crosssource.leave_one_source_out``) a candidate network is trained on the
other sources, converted to full-integer int8 exactly as it would ship
(``convert.convert_keras_model``, calibrated on training cells), and the
int8 model's p_blast on the left-out cells gives the row (threshold 0.5).
A fold's result is written as soon as it is done, so an interrupted run
resumes at the next fold.

Training recipe shared by all candidates (fixed before any run, for the
budget of one thread): at most ``CAP`` cells per large collection (C-NMC,
PBC: seeded random), ``EPOCHS`` epochs, batch 32, Adam with cosine decay;
loss weights: every training source the same total weight except C-NMC at
``CNMC_WEIGHT`` (smear blasts are the main blast teacher), classes equal
within a source, then both classes equal overall.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

CAP = {"c-nmc-2019": 600, "pbc-normal": 600}
EPOCHS = 8
CNMC_WEIGHT = 0.5
SEED = 2025


@dataclass(frozen=True)
class Candidate:
    arch: str  # "anand" (model.build_model) | "mobilenet" (mobilenet.build_mobilenet)
    size: int
    preparation: str  # a views.PREPARATIONS name
    recipe: str  # augment.RECIPES name
    learning_rate: float = 1e-3
    width: float = 0.25
    pretrained: bool = False  # mobilenet: start from ../shared/pretrained/mobilenet_v1_0.25_128_quant.tflite


CANDIDATES = {
    # The shipped model's recipe (baseline the rule compares against).
    "anand-cellprep": Candidate("anand", 96, "cellprep", "colour-jitter"),
    "anand-field": Candidate("anand", 96, "field", "lab"),
    "mnet-field": Candidate("mobilenet", 128, "field", "lab", learning_rate=5e-4, pretrained=True),
    "mnet-field-light": Candidate("mobilenet", 128, "field", "lab-light", learning_rate=5e-4, pretrained=True),
}
PREPROCESSING_IDS = {"cellprep": "cellprep-v2", "field": "field-v1"}


def prepared_images(samples, preparation: str, size: int, cache_dir: Path, log=print) -> np.ndarray:
    """(N, size, size, 3) uint8 of every sample under ``preparation``, cached in one .npy per (prep, size, cells)."""
    import hashlib
    from collections import defaultdict

    from device.core.imageio import load_image
    from model_conversion.embed import VIEWS_VERSION, sample_key
    from model_conversion.views import prepare

    keys = [sample_key(s) for s in samples]
    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:12]
    path = Path(cache_dir) / "prepared" / f"{preparation}_{size}_{VIEWS_VERSION}_{digest}.npy"
    if path.is_file():
        return np.load(path)
    out = np.zeros((len(samples), size, size, 3), np.uint8)
    by_file = defaultdict(list)
    for i, s in enumerate(samples):
        by_file[s.path].append(i)
    started = time.perf_counter()
    for n, (file, idx) in enumerate(by_file.items()):
        rgb = load_image(file)
        for i in idx:
            out[i] = prepare(preparation, rgb, samples[i], size)
        if n % 1000 == 0:
            log(f"  preparing {preparation}@{size}: {n}/{len(by_file)} files, {time.perf_counter() - started:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path.with_suffix(".tmp.npy"), out)
    os.replace(path.with_suffix(".tmp.npy"), path)
    return out


def loss_weights(units: list[str], y: np.ndarray, cnmc_weight: float = CNMC_WEIGHT) -> np.ndarray:
    """Each source the same total weight (C-NMC ``cnmc_weight`` of it), classes equal within, then overall; mean 1."""
    units_arr = np.array(units)
    w = np.zeros(len(y), np.float64)
    for name in np.unique(units_arr):
        in_source = units_arr == name
        classes = np.unique(y[in_source])
        share = cnmc_weight if name == "c-nmc" else 1.0
        for k in classes:
            sel = in_source & (y == k)
            w[sel] = share / (len(classes) * sel.sum())
    for k in (0, 1):
        if (y == k).any():
            w[y == k] *= 0.5 / w[y == k].sum()
    return (w * len(y)).astype(np.float32)


def cap_indices(samples, indices: np.ndarray, seed: int = SEED) -> np.ndarray:
    """At most CAP[collection] cells of each capped collection (seeded), the rest untouched."""
    rng = np.random.default_rng(seed)
    keep = []
    for collection in sorted({samples[i].source for i in indices}):
        of = np.array([i for i in indices if samples[i].source == collection])
        cap = CAP.get(collection)
        if cap and len(of) > cap:
            of = np.sort(rng.choice(of, cap, replace=False))
        keep.append(of)
    return np.sort(np.concatenate(keep))


def build(candidate: Candidate):
    if candidate.arch == "anand":
        from model_conversion.model import build_model
        return build_model(candidate.size, candidate.width)
    from model_conversion.embed import find_pretrained
    from model_conversion.mobilenet import PRETRAINED_FILE, build_mobilenet, load_pretrained
    model = build_mobilenet(candidate.size, candidate.width)
    if candidate.pretrained:
        load_pretrained(model, find_pretrained() / PRETRAINED_FILE)
    return model


def fit(candidate: Candidate, x: np.ndarray, y: np.ndarray, w: np.ndarray, epochs: int = EPOCHS,
        seed: int = SEED, log_file: Path | None = None):
    """Train a fresh candidate network on uint8 images; returns the Keras model."""
    import keras

    from model_conversion.train import make_dataset

    keras.utils.set_random_seed(seed)
    model = build(candidate)
    steps = int(np.ceil(len(x) / 32)) * epochs
    schedule = keras.optimizers.schedules.CosineDecay(candidate.learning_rate, steps, alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    callbacks = [keras.callbacks.CSVLogger(str(log_file))] if log_file else []
    model.fit(make_dataset(x, y.astype(np.int32), w, 32, True, seed, candidate.recipe), epochs=epochs,
              callbacks=callbacks, verbose=2)
    return model


def calibration_images(x: np.ndarray, y: np.ndarray, count: int = 200, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = []
    for k in (0, 1):
        idx = np.flatnonzero(y == k)
        picks += list(rng.choice(idx, min(count // 2, len(idx)), replace=False))
    return x[np.sort(np.array(picks, int))]


def int8_predict(tflite: bytes, images: np.ndarray) -> np.ndarray:
    """p_blast of a uint8-in/uint8-out LiteRT model, one thread, one cell at a time."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite, num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = out["quantization"]
    p = np.empty(len(images), np.float32)
    for i, image in enumerate(images):
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        raw = interpreter.get_tensor(out["index"])[0].astype(np.float32)
        p[i] = (raw[1] - zero) * scale if scale else raw[1]
    return p


def folds(samples) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, train indices, test indices): every source left out, then C-NMC's held-out subjects."""
    from model_conversion.crosssource import CNMC_HOLDOUT
    from model_conversion.data import split_by_group
    from model_conversion.sources import SOURCE_OF

    units = np.array([SOURCE_OF.get(s.source, s.source) for s in samples])
    out = []
    for source in ("all-idb", "pbc", "bccd", "tecom", "cellavision-blog"):
        out.append((source, np.flatnonzero(units != source), np.flatnonzero(units == source)))
    cnmc = [i for i in range(len(samples)) if units[i] == "c-nmc"]
    _, held = split_by_group([samples[i] for i in cnmc], 0.3, SEED)
    held_paths = {s.path for s in held}
    test = np.array([i for i in cnmc if samples[i].path in held_paths])
    out.append((CNMC_HOLDOUT, np.setdiff1d(np.arange(len(samples)), test), test))
    return out


def run_candidate(name: str, data: Path, out: Path, only: list[str] | None = None, log=print,
                  reverse: bool = False) -> dict:
    """Every fold of one candidate (skipping folds on disk or being run by another process); {fold: row}.

    ``reverse`` takes the folds last to first, so two processes can share a candidate's folds."""
    import keras  # noqa: F401  (import TF before threads are set)
    import tensorflow as tf

    from model_conversion.convert import convert_keras_model
    from model_conversion.crosssource import Row, _format_row, _scores
    from model_conversion.prepare import default_cache_dir
    from model_conversion.sources import SOURCE_OF, load_all_sources

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    candidate = CANDIDATES[name]
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "candidate.json").write_text(json.dumps({**asdict(candidate), "cap": CAP, "epochs": EPOCHS,
                                                       "cnmc_weight": CNMC_WEIGHT, "seed": SEED}, indent=1))
    samples = load_all_sources(data)
    x_all = prepared_images(samples, candidate.preparation, candidate.size, default_cache_dir(), log)
    y_all = np.array([s.label for s in samples])
    units = [SOURCE_OF.get(s.source, s.source) for s in samples]
    plan = folds(samples)
    for fold, train, test in (plan[::-1] if reverse else plan):
        if only and fold not in only:
            continue
        target = folder / f"{fold.split(' ')[0]}.json"
        lock = target.with_suffix(".running")
        if target.is_file() or (lock.is_file() and time.time() - lock.stat().st_mtime < 3 * 3600):
            continue
        lock.write_text(str(os.getpid()))
        started = time.perf_counter()
        train = cap_indices(samples, train)
        w = loss_weights([units[i] for i in train], y_all[train])
        log(f"== {name} / {fold}: train {len(train)} cells ({', '.join(sorted({units[i] for i in train}))}), "
            f"test {len(test)}")
        model = fit(candidate, x_all[train], y_all[train], w, log_file=folder / f"{fold.split(' ')[0]}.csv")
        tflite = convert_keras_model(model, calibration_images(x_all[train], y_all[train]), quantize=True)
        p = int8_predict(tflite, x_all[test])
        p_float = model.predict(x_all[test].astype(np.float32), batch_size=64, verbose=0)[:, 1]
        y = y_all[test]
        row = Row(left_out=fold, trained_on=sorted({units[i] for i in train}), **_scores(y, p))
        collections = [samples[i].source for i in test]
        if len(set(collections)) > 1:
            for c in sorted(set(collections)):
                sel = np.array([k == c for k in collections])
                row.by_collection[c] = _scores(y[sel], p[sel])
        result = {"row": asdict(row), "agreement_int8_float": float(np.mean((p >= 0.5) == (p_float >= 0.5))),
                  "train_cells": int(len(train)), "seconds": round(time.perf_counter() - started),
                  "p_int8": p.round(4).tolist(), "p_float": p_float.round(4).tolist(), "label": y.tolist()}
        target.write_text(json.dumps(result))
        lock.unlink(missing_ok=True)
        log(_format_row(row) + f"  (int8/float agreement {result['agreement_int8_float']:.3f}, "
            f"{result['seconds']} s)")
        keras.backend.clear_session()
    return load_results(folder)


def load_results(folder: Path) -> dict:
    rows = {}
    for f in sorted(folder.glob("*.json")):
        if f.name != "candidate.json":
            result = json.loads(f.read_text())
            rows[result["row"]["left_out"]] = result
    return rows


def shipped_reference(model: Path, data: Path, out: Path, log=print) -> dict:
    """The shipped (cellprep) model as is, per source: a reference, held out only where it never trained."""
    from model_conversion.crosssource import _scores
    from model_conversion.prepare import default_cache_dir
    from model_conversion.sources import SOURCE_OF, load_all_sources

    samples = load_all_sources(data)
    images = prepared_images(samples, "cellprep", 96, default_cache_dir(), log)
    p = int8_predict(Path(model).read_bytes(), images)
    y = np.array([s.label for s in samples])
    units = np.array([SOURCE_OF.get(s.source, s.source) for s in samples])
    rows = {u: _scores(y[units == u], p[units == u]) for u in sorted(set(units))}
    result = {"model": str(model), "never_trained_on": ["bccd", "tecom", "cellavision-blog"], "rows": rows}
    (out / "shipped_reference.json").write_text(json.dumps(result, indent=1))
    return result


FOLD_FILES = ("all-idb", "pbc", "bccd", "tecom", "cellavision-blog", "c-nmc")


def _float_cell(path: Path) -> str:
    """AUC (two classes) or normal-called-blast of the float32 network in one fold file."""
    from sklearn.metrics import roc_auc_score

    if not path.is_file():
        return "–"
    result = json.loads(path.read_text())
    y, p = np.array(result["label"]), np.array(result["p_float"])
    if len(set(y.tolist())) == 2:
        return f"AUC {roc_auc_score(y, p):.3f}"
    return f"{100 * float(np.mean(p >= 0.5)):.1f} %"


def summary(out: Path, log=print) -> dict:
    """results.md / results.json over every candidate folder in ``out``; the rule's choice among complete ones."""
    from model_conversion.crosssource import Row, markdown_table
    from model_conversion.crosssource_run import choose, rule_score

    results = {}
    for folder in sorted(p for p in out.iterdir() if (p / "candidate.json").is_file()):
        rows = load_results(folder)
        row_list = [r["row"] for r in rows.values()]
        results[folder.name] = {"rows": row_list, "complete": len(row_list) == 6, "rule": rule_score(row_list),
                                "agreement_int8_float": min((r["agreement_int8_float"] for r in rows.values()),
                                                            default=None)}
    parts = ["# Cross-source table of the int8 device network (leave one source out)", "",
             "| candidate | folds | admissible | violations | worst normal called blast | mean blast AUC (rule) "
             "| ALL-IDB AUC | C-NMC held-out AUC | C-NMC weighted F1 | ALL-IDB blasts called blast | min int8/float agreement |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        s, by = r["rule"], {row["left_out"]: row for row in r["rows"]}
        idb, cn = by.get("all-idb", {}), by.get("c-nmc (held-out subjects)", {})

        def f(v, pct=False):
            return "–" if v is None else (f"{100 * v:.1f} %" if pct else f"{v:.3f}")
        parts.append(f"| {name} | {len(r['rows'])}/6 | {'yes' if s['admissible'] else 'no'} | "
                     f"{', '.join(s['violations']) or '–'} | {f(s['worst_normal_called_blast'], True)} | "
                     f"{f(s['mean_blast_auc'])} | {f(idb.get('blast_auc'))} | {f(cn.get('blast_auc'))} | "
                     f"{f(cn.get('weighted_f1'))} | {f(idb.get('blast_called_blast'), True)} | "
                     f"{f(r['agreement_int8_float'])} |")
    parts.append("")
    for name, r in results.items():
        parts.append(markdown_table([Row(**row) for row in r["rows"]], name))
    parts += ["### Same folds, float32 Keras network (diagnostic, not in the rule)", "",
              "| candidate | " + " | ".join(FOLD_FILES) + " |", "|---" * (len(FOLD_FILES) + 1) + "|"]
    for folder in sorted(p for p in out.iterdir() if (p / "candidate.json").is_file()):
        parts.append(f"| {folder.name} | " + " | ".join(_float_cell(folder / f"{f}.json") for f in FOLD_FILES) + " |")
    parts.append("")
    ref_file = out / "shipped_reference.json"
    if ref_file.is_file():
        ref = json.loads(ref_file.read_text())
        parts += ["### Reference: the shipped model (cellprep, Anand, 30 epochs) as is", "",
                  f"Held out only for {', '.join(ref['never_trained_on'])}; the other rows are its training sources.",
                  "", "| source | blasts | normals | blast AUC | normal called blast | blasts called blast |",
                  "|---|---|---|---|---|---|"]
        for unit, r in ref["rows"].items():
            auc = "–" if r["blast_auc"] is None else f"{r['blast_auc']:.3f}"
            ncb = "–" if r["normal_called_blast"] is None else f"{100 * r['normal_called_blast']:.1f} %"
            bcb = "–" if r["blast_called_blast"] is None else f"{100 * r['blast_called_blast']:.1f} %"
            held = "" if unit in ref["never_trained_on"] else " (trained on)"
            parts.append(f"| {unit}{held} | {r['blasts']} | {r['normals']} | {auc} | {ncb} | {bcb} |")
        parts.append("")
    complete = {k: v for k, v in results.items() if v["complete"]}
    chosen = choose(complete) if complete else None
    parts.append(f"Chosen by the rule among complete candidates: **{chosen}**")
    (out / "results.md").write_text("\n".join(parts) + "\n")
    (out / "results.json").write_text(json.dumps({"results": results, "chosen": chosen}, indent=1))
    log("\n".join(parts))
    return {"results": results, "chosen": chosen}


def refit(name: str, data: Path, out: Path, log=print) -> Path:
    """Train the candidate on every source (same caps, epochs and weights) as a run folder ``convert`` takes."""
    import keras  # noqa: F401
    import tensorflow as tf

    from model_conversion.convert import write_atomic
    from model_conversion.prepare import default_cache_dir
    from model_conversion.sources import SOURCE_OF, load_all_sources

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    candidate = CANDIDATES[name]
    out.mkdir(parents=True, exist_ok=True)
    if (out / "last.keras").is_file():
        log(f"{out / 'last.keras'} exists: refit already done")
        return out / "last.keras"
    samples = load_all_sources(data)
    x_all = prepared_images(samples, candidate.preparation, candidate.size, default_cache_dir(), log)
    y_all = np.array([s.label for s in samples])
    train = cap_indices(samples, np.arange(len(samples)))
    units = [SOURCE_OF.get(samples[i].source, samples[i].source) for i in train]
    config = {"data": str(Path(data).resolve()), "candidate": name, **asdict(candidate),
              "input_size": candidate.size, "epochs": EPOCHS, "batch_size": 32, "optimizer": "adam",
              "augment": True, "augment_recipe": candidate.recipe, "seed": SEED, "holdout": False,
              "cap": CAP, "cnmc_weight": CNMC_WEIGHT,
              "preprocessing": PREPROCESSING_IDS[candidate.preparation]}
    write_atomic(out / "config.json", json.dumps(config, indent=1).encode())
    files = [[str(samples[i].path), int(samples[i].label), samples[i].source, samples[i].subject,
              samples[i].cell_type] for i in train]
    split = {"train": {"count": len(train), "subjects": sorted({samples[i].subject for i in train
                                                                if samples[i].subject}), "files": files},
             "val": {"count": 0, "subjects": [], "files": []}}
    write_atomic(out / "split.json", json.dumps(split).encode())
    np.save(out / "calibration.npy", calibration_images(x_all[train], y_all[train], 300))
    log(f"refit {name} on {len(train)} cells of {', '.join(sorted(set(units)))}")
    model = fit(candidate, x_all[train], y_all[train], loss_weights(units, y_all[train]),
                log_file=out / "history.csv")
    model.save(out / "last.keras")
    return out / "last.keras"
