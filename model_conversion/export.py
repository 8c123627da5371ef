"""Convert a finished training run to the shipped float32 and int8 models.

The raw (metadata-free) conversions are kept in the run folder, so the
evaluation can embed its metrics into the metadata afterwards without
converting again: the graph, and so every prediction, stays the same.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np

from device.core.cellprep import PREPROCESSING_ID
from device.core.decision import DecisionSettings
from device.core.fieldprep import FIELD_ID, FIELD_RADII
from model_conversion.augment import DEFAULT_RECIPE
from model_conversion.convert import convert_keras_model, write_atomic
from model_conversion.data import LABEL_NAMES
from model_conversion.metadata import embed_metadata
from model_conversion.mobilenet import PRETRAINED_FILE
from model_conversion.train import load_split

AUTHOR = "allscope project"
LICENSE = "Apache-2.0 (model weights); trained on ALL-IDB (research use), C-NMC 2019 (CC BY 3.0), PBC (CC BY 4.0)"
LICENSE_CROSS_SOURCE = ("Apache-2.0 (model weights; MobileNet initialised from Google's Apache-2.0 "
                        "mobilenet_v1_0.25_128_quant, coral test_data 104342d); trained on ALL-IDB (research use), "
                        "C-NMC 2019 (CC BY 3.0), PBC (CC BY 4.0), BCCD (MIT), Jiangxi Tecom and CellaVision blog "
                        "white cells (Zheng et al., Micron 2018)")
INPUTS = {
    "cellprep-v2": "uint8 RGB 0..255 of device.core.cellprep.prepare_cell output (cell masked on black, "
                   "Reinhard-normalised)",
    "field-v1": "uint8 RGB 0..255 of device.core.fieldprep.prepare_field output: a square of field_radii red-cell "
                "radii centred on the cell, unmasked, original colours (true size kept)",
}
MODELS = {
    "anand": "Anand et al. 2025 CNN (5 blocks, 13 conv 3x3, 5 max-pool, dense head)",
    "mobilenet": "MobileNet v1 (Howard et al. 2017), ImageNet-initialised from mobilenet_v1_0.25_128_quant.tflite",
}
MODEL_VERSION = "1.0.0"


def representative_cells(run: Path, size: int, count: int, seed: int = 7) -> np.ndarray:
    """Calibration cells from the TRAINING side, both classes, prepared as on the device.

    A cross-source refit (``cnnfit``) stores its own (``calibration.npy``, prepared with the run's
    preparation); older runs are cellprep runs.
    """
    from model_conversion.prepare import default_cache_dir, prepare_images

    if (run / "calibration.npy").is_file():
        return np.load(run / "calibration.npy")[:count]

    train, _ = load_split(run)
    images = prepare_images(train, size, default_cache_dir())
    labels = np.array([s.label for s in train])
    rng = np.random.default_rng(seed)
    picks = []
    for label in (0, 1):
        idx = np.flatnonzero(labels == label)
        picks += list(rng.choice(idx, size=min(count // 2, len(idx)), replace=False))
    return images[np.sort(np.array(picks, dtype=int))]


def base_provenance(run: Path) -> dict:
    config = json.loads((run / "config.json").read_text())
    split = json.loads((run / "split.json").read_text())
    decision = DecisionSettings()
    sources: dict[str, dict[str, int]] = {}
    for _path, label, source, _subject, _cell_type in split["train"]["files"]:
        sources.setdefault(source, {"blast": 0, "normal": 0})[LABEL_NAMES[label]] += 1
    preprocessing = config.get("preprocessing", PREPROCESSING_ID)
    extra = {}
    if preprocessing == FIELD_ID:
        extra = {"field_radii": FIELD_RADII, "candidate": config.get("candidate"),
                 "pretrained": (f"../shared/pretrained/{PRETRAINED_FILE} (ImageNet, Apache-2.0, Google coral "
                                "test_data 104342d)") if config.get("pretrained") else None}
    return {
        "model": MODELS[config.get("arch", "anand")],
        "input_size": config["input_size"],
        "width": config["width"],
        "labels": list(LABEL_NAMES),
        "preprocessing": preprocessing,
        "input": INPUTS[preprocessing],
        **extra,
        "decision": {"threshold": decision.threshold, "review_low": decision.review_low,
                     "review_high": decision.review_high},
        "training": {"epochs": config["epochs"], "batch_size": config["batch_size"],
                     "optimizer": config["optimizer"], "learning_rate": config["learning_rate"],
                     "augment": config["augment"],
                     "augment_recipe": config.get("augment_recipe", DEFAULT_RECIPE), "seed": config["seed"],
                     **({"cap": config["cap"], "cnmc_weight": config["cnmc_weight"]} if "cap" in config else {}),
                     "cells_by_source": sources,
                     "train_subjects": split["train"]["subjects"],
                     "validation_subjects": split["val"]["subjects"]},
        "intended_use": "Decision support for trained professionals reviewing blood smears; not a diagnosis.",
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def write_models(run: Path, out: Path, name: str, provenance: dict) -> dict[str, Path]:
    """Embed metadata into the run's raw conversions and write them atomically to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for kind in ("float32", "int8"):
        raw = (run / f"raw_{kind}.tflite").read_bytes()
        data = embed_metadata(raw, name=f"{name}_{kind}", version=MODEL_VERSION,
                              description=("ALL blast vs normal white-cell classifier for allscope "
                                           f"({kind}); decision support only."),
                              author=AUTHOR, labels=LABEL_NAMES,
                              license=LICENSE_CROSS_SOURCE if provenance.get("preprocessing") == FIELD_ID else LICENSE,
                              provenance={**provenance, "quantization": kind})
        target = out / f"{name}_{kind}.tflite"
        write_atomic(target, data)
        written[kind] = target
    return written


def export_run(run: Path, out: Path, name: str = "allscope_blast", calibration: int = 300, log=print) -> dict:
    import keras

    model = keras.models.load_model(run / "last.keras")
    size = int(model.inputs[0].shape[1])
    cells = representative_cells(run, size, calibration)
    log(f"converting {run / 'last.keras'}: float32, then int8 calibrated on {len(cells)} training cells")
    write_atomic(run / "raw_float32.tflite", convert_keras_model(model, cells, quantize=False))
    write_atomic(run / "raw_int8.tflite", convert_keras_model(model, cells, quantize=True))
    written = write_models(run, out, name, base_provenance(run))
    for kind, path in written.items():
        log(f"  {kind}: {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return written
