"""Frozen ImageNet embeddings of prepared cells (LiteRT, one thread), cached on disk.

The cache holds one file per (network, preparation, preparation version):
``<cache>/embeddings/<network>__<preparation>__<version>.npz``, mapping a
sample key (file and cell centre) to its vector. It is saved every few
hundred new cells, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from model_conversion.data import Sample

DEFAULT_NETWORK = "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
# Bump when a preparation in views.py changes what it outputs.
VIEWS_VERSION = "v1"


def find_pretrained() -> Path:
    """../shared/pretrained beside the clone, else /work/shared/pretrained ($ALLSCOPE_PRETRAINED first)."""
    candidates = [Path(os.environ["ALLSCOPE_PRETRAINED"])] if os.environ.get("ALLSCOPE_PRETRAINED") else []
    candidates += [Path(__file__).resolve().parent.parent.parent / "shared" / "pretrained",
                   Path("/work/shared/pretrained")]
    for candidate in candidates:
        if (candidate / "README.md").is_file():
            return candidate
    raise FileNotFoundError("pretrained networks not found: set ALLSCOPE_PRETRAINED or place them at ../shared/pretrained")


class Embedder:
    """A uint8 LiteRT network's output (dequantised) for one image at a time."""

    def __init__(self, model_path: Path, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(model_path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.size = int(self.input["shape"][1])
        self.name = Path(model_path).stem

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if image.shape != (self.size, self.size, 3):
            raise ValueError(f"embedder expects {self.size}x{self.size}x3 images, got {image.shape}")
        self.interpreter.set_tensor(self.input["index"], image[None].astype(np.uint8))
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self.output["index"]).reshape(-1).astype(np.float32)
        scale, zero = self.output["quantization"]
        return (raw - zero) * scale if scale else raw


def sample_key(sample: Sample) -> str:
    """File, cell centre and scale: a changed red-cell radius must not reuse an old embedding."""
    centre = "" if sample.centre is None else f"@{sample.centre[0]:.1f},{sample.centre[1]:.1f}"
    scale = "" if sample.rbc_radius is None else f"#r{sample.rbc_radius:.2f}"
    return f"{sample.path}{centre}{scale}"


def _load_cache(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    with np.load(path) as data:
        return dict(zip(data["keys"].tolist(), data["vectors"]))


def _save_cache(path: Path, cache: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    keys = sorted(cache)
    np.savez(tmp, keys=np.array(keys), vectors=np.stack([cache[k] for k in keys]))
    os.replace(tmp, path)


AUGMENT_BATCH = 64


def augment_copies(images: np.ndarray, key: str) -> np.ndarray:
    """The ``lab`` augmentation (``augment.lab_batch``) of a uint8 batch, seeded by ``key`` (reproducible)."""
    import hashlib

    import tensorflow as tf

    from model_conversion.augment import lab_batch

    tf.random.set_seed(int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little"))
    out = lab_batch(tf.constant(images.astype(np.float32)), heavy=True)
    return np.clip(np.rint(out.numpy()), 0, 255).astype(np.uint8)


def embed_samples(samples: list[Sample], preparation: str, cache_dir: Path,
                  network: str = DEFAULT_NETWORK, threads: int = 1, log=print) -> np.ndarray:
    """(N, D) float32 embeddings of the samples under ``preparation``, in the samples' order.

    ``"<preparation>+lab#K"``: copy K of every cell under the ``lab``
    augmentation, made in batches of ``AUGMENT_BATCH`` (the scale jitter,
    the quarter turn and the resolution loss are drawn per batch, the rest
    per cell), seeded by the batch's first cell and K.
    """
    from device.core.imageio import load_image
    from model_conversion.views import prepare

    model = Path(network) if Path(network).is_file() else find_pretrained() / network
    embedder = Embedder(model, threads)
    path = Path(cache_dir) / "embeddings" / f"{embedder.name}__{preparation}__{VIEWS_VERSION}.npz"
    cache = _load_cache(path)
    todo: dict[Path, list[Sample]] = defaultdict(list)  # one image load per file (frames hold many cells)
    for sample in samples:
        if sample_key(sample) not in cache:
            todo[sample.path].append(sample)
    missing = sum(len(v) for v in todo.values())
    if missing:
        log(f"embedding {missing} of {len(samples)} cells ({preparation}, {embedder.name})")
    started, done, unsaved = time.perf_counter(), 0, 0
    base, copies = (preparation.split("+lab#", 1) + [None])[:2]
    pending: list[tuple[str, np.ndarray]] = []  # augmented copies are made in batches (TensorFlow ops)

    def flush() -> None:
        if not pending:
            return
        images = augment_copies(np.stack([image for _, image in pending]), f"{preparation}|{pending[0][0]}")
        for (key, _), image in zip(pending, images):
            cache[key] = embedder(image)
        pending.clear()

    for file, cells in todo.items():
        rgb = load_image(file)
        for sample in cells:
            if copies is None:
                cache[sample_key(sample)] = embedder(prepare(preparation, rgb, sample, embedder.size))
            else:
                pending.append((sample_key(sample), prepare(base, rgb, sample, embedder.size)))
                if len(pending) >= AUGMENT_BATCH:
                    flush()
            done += 1
            unsaved += 1
        if unsaved >= 500:
            flush()
            _save_cache(path, cache)
            unsaved = 0
            rate = done / (time.perf_counter() - started)
            log(f"  {done}/{missing} cells, {rate:.1f} cells/s")
    flush()
    if unsaved:
        _save_cache(path, cache)
    return np.stack([cache[sample_key(s)] for s in samples]).astype(np.float32)
