"""Frozen ImageNet feature extractors small enough for the device, as uint8 LiteRT files.

``../shared/pretrained/`` holds an embedding extractor only at width 1.0 /
224 px, ~10 ms per cell on one core here (the device budget is 2 ms), and
two small classifiers: MobileNet v1 0.25 at 128 px and 0.5 at 160 px. Their
pooled features are used as they are, cut out of Google's file
(``surgery.cut_at_pool``): Google trained them quantisation-aware, and a
Keras rebuild re-quantised after the fact differs from them by ~12 %
(median relative error of the pooled features on prepared cells).

The result is an ordinary ``Embedder`` network (``model_conversion.embed``),
so the cross-source protocol compares these backbones with the probe's
1.0/224 extractor under the same rule. Files are cached as
``<cache>/extractors/<name>.tflite`` (git-ignored, rebuilt on demand).
"""

from __future__ import annotations

import re
from pathlib import Path

# name -> the pretrained classifier (native input size) whose pooled features it returns
EXTRACTORS: dict[str, str] = {
    "mnet025-128": "mobilenet_v1_0.25_128_quant.tflite",
    "mnet05-160": "mobilenet_v1_0.5_160_quant.tflite",
}


def extractor_name(network: str) -> str | None:
    """'mnet05-160' (or 'extractor:mnet05-160') -> 'mnet05-160'; None if it is not one of ours."""
    name = re.sub(r"^extractor:", "", network)
    return name if name in EXTRACTORS else None


def classifier_bytes(name: str) -> bytes:
    from model_conversion.embed import find_pretrained

    return (find_pretrained() / EXTRACTORS[name]).read_bytes()


def extractor_path(name: str, cache_dir: Path) -> Path:
    """The uint8 extractor file, cut (and cached) on first use."""
    from device.store.atomic import write_atomic
    from model_conversion.surgery import cut_at_pool

    path = Path(cache_dir) / "extractors" / f"{name}.tflite"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, cut_at_pool(classifier_bytes(name)))
    return path
