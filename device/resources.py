"""What ships with the appliance: the model, its card, the demo frames and the broker templates.

The demo frames are package data (:mod:`importlib.resources`). The model, its card and the
mosquitto templates live in the top-level ``models/`` and ``firmware_config/mosquitto/`` folders,
outside every package: an installed wheel carries them as data files in ``<prefix>/share/allscope/``
(``pyproject.toml``, ``[tool.setuptools.data-files]``); a source checkout (``pip install -e``, tests,
training) reads its own folders, so a newly trained model is used at once.
"""

from __future__ import annotations

import os
import sysconfig
from importlib.resources import as_file, files
from pathlib import Path

MODEL_NAME = "allscope_blast"
SHIPPED_VARIANT = "int8"

_CHECKOUT = Path(__file__).resolve().parents[1]
_INSTALLED = Path(sysconfig.get_path("data")) / "share" / "allscope"


def _shipped(installed: str, checkout: str) -> Path:
    source = _CHECKOUT / checkout
    if (_CHECKOUT / "pyproject.toml").is_file() and source.is_dir():
        return source
    return _INSTALLED / installed


MODELS_DIR = _shipped("models", "models")
DEFAULT_MODEL = MODELS_DIR / f"{MODEL_NAME}_{SHIPPED_VARIANT}.tflite"
MODEL_CARD = MODELS_DIR / "model_card.json"
# The paper's network (Anand et al. 2025; the default until v2.0.0), still selectable with --model or
# inference.model; it keeps its own card.
PAPER_MODELS_DIR = MODELS_DIR / "paper"
PAPER_MODEL = PAPER_MODELS_DIR / f"{MODEL_NAME}_{SHIPPED_VARIANT}.tflite"
PAPER_MODEL_CARD = PAPER_MODELS_DIR / "model_card.json"
MODEL_CARDS = (MODEL_CARD, PAPER_MODEL_CARD)
MOSQUITTO_DIR = _shipped("mosquitto", "firmware_config/mosquitto")


def _demo_frames() -> Path:
    with as_file(files("device") / "demo") as path:
        return Path(path)


DEMO_FRAMES = _demo_frames()


def model_in_force(flag: str | os.PathLike | None = None, setting: str | os.PathLike | None = None,
                   configured: str | os.PathLike | None = None) -> Path:
    """The model file in force, by the one precedence of every setting.

    A command-line flag, else the setting an admin saved in the device database,
    else the configuration file's ``inference.model``, else ``$ALLSCOPE_MODEL``,
    else the shipped int8 model.
    """
    for candidate in (flag, setting, configured, os.environ.get("ALLSCOPE_MODEL")):
        if candidate:
            return Path(candidate).expanduser()
    return DEFAULT_MODEL


def find_shared_data() -> Path | None:
    """The labelled data set beside a clone, for training, benchmarks and tests; never needed at run time.

    $ALLSCOPE_DATA, else ../shared/data beside the clone, else /work/shared/data.
    """
    candidates = [Path(os.environ["ALLSCOPE_DATA"])] if os.environ.get("ALLSCOPE_DATA") else []
    candidates += [_CHECKOUT.parent / "shared" / "data", Path("/work/shared/data")]
    for candidate in candidates:
        if (candidate / "README.md").is_file():
            return candidate
    return None
