"""Helpers of the image loader tests: random frames, what Pillow sees of a file, the checks every load makes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from device.core.imageio import load_image
from device.errors import ImageLoadError

RNG = np.random.default_rng(7)


def random_rgb(h: int = 24, w: int = 32) -> np.ndarray:
    return RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def opened(path: Path, attribute: str):
    """An attribute of the file as Pillow opens it, closing the file again."""
    with Image.open(path) as im:
        return getattr(im, attribute)


def assert_rgb8(a: np.ndarray, shape: tuple[int, int]) -> None:
    assert a.dtype == np.uint8
    assert a.shape == (*shape, 3)
    assert a.flags.c_contiguous and a.flags.writeable


def expect_error(path, fragment: str, **kwargs) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as info:
        load_image(path, **kwargs)
    message = str(info.value)
    assert fragment in message, message
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return info.value
