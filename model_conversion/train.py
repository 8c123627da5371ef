"""Train the Anand et al. CNN on canonical cell images, resumably.

A run directory holds everything: ``config.json`` (the recipe), the split
(``split.json``: which files and subjects are on which side), the Keras
model after every epoch (``last.keras``), a BackupAndRestore folder so an
interrupted run resumes at the epoch it reached, and ``history.csv``.
The shipped model is the one after the last epoch: the validation side is
watched, never used to pick an epoch or a threshold.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from model_conversion.augment import DEFAULT_RECIPE
from model_conversion.data import LABEL_NAMES, Sample, load_shared_data, split_by_group


@dataclass
class TrainConfig:
    data: str
    input_size: int = 96
    width: float = 0.25
    epochs: int = 30
    batch_size: int = 32
    optimizer: str = "adam"  # or "adamax"
    learning_rate: float = 1e-3
    val_fraction: float = 0.2
    seed: int = 2025
    augment: bool = True
    limit: int | None = None  # per-class cap, for smoke runs and tests
    holdout: bool = True  # False: final refit on every cell with the recipe validated on a held-out run
    augment_recipe: str = DEFAULT_RECIPE  # one of augment.RECIPES


def save_split(run_dir: Path, train: list[Sample], val: list[Sample]) -> None:
    def describe(samples: list[Sample]) -> dict:
        return {
            "count": len(samples),
            "subjects": sorted({s.subject for s in samples if s.subject}),
            "files": [[str(s.path), s.label, s.source, s.subject, s.cell_type] for s in samples],
        }
    _write_json(run_dir / "split.json", {"train": describe(train), "val": describe(val)})


def load_split(run_dir: Path) -> tuple[list[Sample], list[Sample]]:
    data = json.loads((run_dir / "split.json").read_text())

    def rebuild(part: dict) -> list[Sample]:
        return [Sample(Path(p), int(label), source, subject, cell_type, "")
                for p, label, source, subject, cell_type in part["files"]]
    return rebuild(data["train"]), rebuild(data["val"])


def _write_json(path: Path, payload: dict) -> None:
    from model_conversion.convert import write_atomic

    write_atomic(path, json.dumps(payload, indent=1).encode())


def _limit(samples: list[Sample], per_class: int | None, seed: int) -> list[Sample]:
    if not per_class:
        return samples
    rng = np.random.default_rng(seed)
    out = []
    for label in (0, 1):
        of_label = [s for s in samples if s.label == label]
        picks = rng.permutation(len(of_label))[:per_class]
        out += [of_label[i] for i in sorted(picks)]
    return out


def source_balanced_weights(samples: list[Sample], single_class_weight: float = 0.5) -> np.ndarray:
    """Per-cell loss weights that make the source useless as a cue.

    Within every source that has both classes, blasts and normal cells get
    equal total weight (C-NMC is ~70 % blasts here: unweighted, "looks like
    C-NMC" alone would predict "blast", and an early run called the held-out
    healthy donor's cells blasts for that reason). Sources with one class
    only (PBC: all normal) get ``single_class_weight`` per cell. Weights are
    scaled to a mean of 1.
    """
    counts: dict[tuple[str, int], int] = {}
    for s in samples:
        counts[(s.source, s.label)] = counts.get((s.source, s.label), 0) + 1
    weights = np.empty(len(samples), np.float32)
    for i, s in enumerate(samples):
        n_source = counts.get((s.source, 0), 0) + counts.get((s.source, 1), 0)
        if counts.get((s.source, 1 - s.label), 0) == 0:
            weights[i] = single_class_weight
        else:
            weights[i] = n_source / (2.0 * counts[(s.source, s.label)])
    return weights / weights.mean()


def make_dataset(images: np.ndarray, labels: np.ndarray, weights: np.ndarray, batch_size: int, augment: bool,
                 seed: int, recipe: str = DEFAULT_RECIPE):
    import tensorflow as tf

    from model_conversion.augment import augment_batch

    ds = tf.data.Dataset.from_tensor_slices((images, labels, weights))
    ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    ds = ds.map(lambda x, y, w: (tf.cast(x, tf.float32), y, w))
    if augment:
        ds = ds.map(lambda x, y, w: (augment_batch(x, recipe), y, w), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def train(config: TrainConfig, run_dir: Path, log=print, threads: int | None = None) -> Path:
    """Train (or resume) a run; returns the path of the final Keras model.

    ``threads`` caps TensorFlow's CPU threads (two runs side by side on a
    small machine); it changes speed, not the recipe, so it is not saved.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)

    from model_conversion.model import build_model
    from model_conversion.prepare import default_cache_dir, prepare_images

    run_dir.mkdir(parents=True, exist_ok=True)
    config_file = run_dir / "config.json"
    if config_file.is_file():
        saved = json.loads(config_file.read_text())
        if saved != asdict(config):
            raise SystemExit(f"{run_dir} holds a run with another recipe; use a new --out folder")
    else:
        _write_json(config_file, asdict(config))

    samples = load_shared_data(Path(config.data))
    if config.holdout:
        train_samples, val_samples = split_by_group(samples, config.val_fraction, config.seed)
    else:
        train_samples, val_samples = samples, []
    train_samples = _limit(train_samples, config.limit, config.seed)
    val_samples = _limit(val_samples, config.limit, config.seed + 1)
    save_split(run_dir, train_samples, val_samples)
    log(f"train {len(train_samples)} cells, validation {len(val_samples)} cells "
        f"(validation subjects: {sorted({s.subject for s in val_samples if s.subject})})")

    cache = default_cache_dir()
    started = time.perf_counter()
    x_train = prepare_images(train_samples, config.input_size, cache,
                             progress=lambda i, n: log(f"  preparing training cells {i}/{n}"))
    x_val = prepare_images(val_samples, config.input_size, cache,
                           progress=lambda i, n: log(f"  preparing validation cells {i}/{n}")) \
        if val_samples else np.zeros((0, config.input_size, config.input_size, 3), np.uint8)
    log(f"cells prepared in {time.perf_counter() - started:.0f} s")
    y_train = np.array([s.label for s in train_samples], np.int32)
    y_val = np.array([s.label for s in val_samples], np.int32)

    keras.utils.set_random_seed(config.seed)
    model = build_model(config.input_size, config.width)
    steps = int(np.ceil(len(x_train) / config.batch_size)) * config.epochs
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, steps, alpha=0.02)
    optimizer_cls = {"adam": keras.optimizers.Adam, "adamax": keras.optimizers.Adamax}[config.optimizer]
    model.compile(optimizer=optimizer_cls(schedule), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    weights = source_balanced_weights(train_samples)
    log("loss weight per cell: " + ", ".join(
        f"{src}/{LABEL_NAMES[label]} {weights[i]:.2f}" for (src, label), i in
        sorted({(s.source, s.label): i for i, s in enumerate(train_samples)}.items())))

    final = run_dir / "last.keras"
    callbacks = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        keras.callbacks.ModelCheckpoint(str(final)),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
    ]
    model.fit(make_dataset(x_train, y_train, weights, config.batch_size, config.augment, config.seed,
                           config.augment_recipe),
              validation_data=(tf.data.Dataset.from_tensor_slices((x_val.astype(np.float32), y_val)).batch(64)
                               if len(x_val) else None),
              epochs=config.epochs, callbacks=callbacks, verbose=2)
    model.save(final)
    _write_json(run_dir / "done.json", {"epochs": config.epochs, "finished": time.time()})
    log(f"trained model saved to {final}")
    return final
