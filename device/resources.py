"""What ships with the appliance: the model, its card, the demo frames and the broker templates.

Found with :mod:`importlib.resources`, so they are the same files in a source
checkout (``pip install -e``) and in an installed wheel (``pip install .``):
the wheel carries ``models/`` as ``device/shipped/models`` and
``firmware_config/mosquitto`` as ``device/shipped/mosquitto`` (see ``setup.py``);
a checkout reads them from the top-level folders.
"""

from __future__ import annotations

import os
from importlib.resources import as_file, files
from pathlib import Path

MODEL_NAME = "allscope_blast"
SHIPPED_VARIANT = "int8"

_CHECKOUT = Path(__file__).resolve().parents[1]


def _shipped(packaged: str, checkout: str) -> Path:
    resource = files("device") / "shipped" / packaged
    if resource.is_dir():
        with as_file(resource) as path:  # a real folder for a wheel installed unzipped (always, with pip)
            return Path(path)
    return _CHECKOUT / checkout


MODELS_DIR = _shipped("models", "models")
DEFAULT_MODEL = MODELS_DIR / f"{MODEL_NAME}_{SHIPPED_VARIANT}.tflite"
MODEL_CARD = MODELS_DIR / "model_card.json"
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
