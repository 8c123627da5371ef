"""Run every training/validation image through device.core.cellprep once, with a cache.

The cache file is keyed by the images' paths, the input size and the
preprocessing version, so a change to any of them rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from device.core.cellprep import PREPROCESSING_ID, prepare_cell
from device.core.imageio import load_image
from model_conversion.data import Sample


def default_cache_dir() -> Path:
    """$ALLSCOPE_CACHE, else cache/ in the repository (git-ignored)."""
    return Path(os.environ.get("ALLSCOPE_CACHE", Path(__file__).resolve().parent.parent / "cache"))


def _prepare_one(args: tuple[str, int]) -> np.ndarray:
    path, size = args
    return prepare_cell(load_image(path), size).image


def cache_key(samples: list[Sample], size: int) -> str:
    digest = hashlib.sha256()
    digest.update(f"{PREPROCESSING_ID}|{size}|".encode())
    for sample in samples:
        digest.update(str(sample.path).encode() + b"\n")
    return digest.hexdigest()[:16]


def prepare_images(samples: list[Sample], size: int, cache_dir: Path | None = None,
                   workers: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(N, size, size, 3) uint8 canonical cell images, in the order of ``samples``."""
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"prepared_{size}_{cache_key(samples, size)}.npy"
        if cache_file.is_file():
            return np.load(cache_file)
    jobs = [(str(s.path), size) for s in samples]
    out = np.zeros((len(samples), size, size, 3), np.uint8)
    workers = workers or min(2, os.cpu_count() or 1)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, image in enumerate(pool.map(_prepare_one, jobs, chunksize=32)):
            out[i] = image
            if progress and (i + 1) % 250 == 0:
                progress(i + 1, len(samples))
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npy")
        np.save(tmp, out)
        os.replace(tmp, cache_file)
        (cache_file.with_suffix(".json")).write_text(json.dumps(
            {"preprocessing": PREPROCESSING_ID, "size": size, "count": len(samples)}))
    return out
