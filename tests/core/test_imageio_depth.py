"""device.core.imageio: high bit depth (16-bit grey and colour, 12-bit in 16-bit containers, 32-bit TIFFs) is scaled, never clipped or crushed."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from image_samples import RNG, opened
from PIL import Image

from device.core.imageio import (
    load_image,
)

# --- high bit depth -----------------------------------------------------------------


def scaled(values: np.ndarray, full: int) -> np.ndarray:
    return np.rint(values.astype(np.float64) * 255.0 / full).astype(np.uint8)


def gray16_image(h: int = 16, w: int = 16, peak: int = 65535) -> np.ndarray:
    return np.linspace(0, peak, h * w).round().astype(np.uint16).reshape(h, w)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_gray_full_range_is_scaled_not_clipped(tmp_path, suffix):
    values = gray16_image()
    path = tmp_path / f"g16{suffix}"
    Image.fromarray(values).save(path)
    assert opened(path, "mode") == "I;16"
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded[..., 0], scaled(values, 65535))
    assert loaded.max() == 255 and loaded[..., 1].max() == 255
    assert len(np.unique(loaded[..., 0])) > 200  # a clip to 255 would leave few levels


def test_12bit_data_in_16bit_container_uses_its_real_depth(tmp_path):
    values = gray16_image(peak=4095)
    path = tmp_path / "g12.tif"
    Image.fromarray(values).save(path)
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded[..., 0], scaled(values, 4095))
    assert loaded.max() == 255


def test_big_endian_16bit_tiff(tmp_path):
    values = gray16_image()
    path = tmp_path / "g16b.tif"
    Image.frombytes("I;16B", (16, 16), values.astype(">u2").tobytes()).save(path)
    assert opened(path, "mode") == "I;16B"
    np.testing.assert_array_equal(load_image(path)[..., 2], scaled(values, 65535))


def test_32bit_integer_and_float_tiffs(tmp_path):
    values = gray16_image().astype(np.int32)
    Image.fromarray(values).save(tmp_path / "i32.tif")
    assert opened(tmp_path / "i32.tif", "mode") == "I"
    np.testing.assert_array_equal(load_image(tmp_path / "i32.tif")[..., 0], scaled(values, 65535))

    unit = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    Image.fromarray(unit).save(tmp_path / "f32.tif")
    assert opened(tmp_path / "f32.tif", "mode") == "F"
    np.testing.assert_array_equal(load_image(tmp_path / "f32.tif")[..., 0], np.rint(unit * 255).astype(np.uint8))


def write_rgb16_tiff(path: Path, rgb16: np.ndarray, orientation: int = 1) -> None:
    """A baseline uncompressed 16-bit RGB TIFF (Pillow cannot write one)."""
    h, w, _ = rgb16.shape
    data = rgb16.astype("<u2").tobytes()
    n_tags = 11
    bits_offset = 8 + 2 + n_tags * 12 + 4
    data_offset = bits_offset + 6
    tags = [  # (tag, type: 3 SHORT / 4 LONG, count, value)
        (256, 3, 1, w),
        (257, 3, 1, h),
        (258, 3, 3, bits_offset),
        (259, 3, 1, 1),  # no compression
        (262, 3, 1, 2),  # RGB
        (273, 4, 1, data_offset),
        (274, 3, 1, orientation),
        (277, 3, 1, 3),
        (278, 3, 1, h),
        (279, 4, 1, len(data)),
        (284, 3, 1, 1),  # chunky
    ]
    ifd = struct.pack("<H", n_tags)
    for tag, typ, count, value in tags:
        packed = struct.pack("<HH", value, 0) if (typ == 3 and count == 1) else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, typ, count) + packed
    ifd += struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<3H", 16, 16, 16) + data)


def rgb16_image(peak: int) -> np.ndarray:
    return RNG.integers(0, peak + 1, size=(12, 20, 3)).astype(np.uint16)


def test_16bit_rgb_tiff_full_range(tmp_path):
    pytest.importorskip("cv2")
    values = rgb16_image(65535)
    values[0, 0] = (65535, 32768, 0)
    write_rgb16_tiff(tmp_path / "rgb16.tif", values)
    loaded = load_image(tmp_path / "rgb16.tif")
    np.testing.assert_array_equal(loaded, scaled(values, 65535))


def test_12bit_rgb_tiff_is_not_crushed_to_black(tmp_path):
    pytest.importorskip("cv2")
    values = rgb16_image(4095)
    values[0, 0] = (4095, 2048, 0)
    write_rgb16_tiff(tmp_path / "rgb12.tif", values)
    loaded = load_image(tmp_path / "rgb12.tif")
    np.testing.assert_array_equal(loaded, scaled(values, 4095))
    assert tuple(loaded[0, 0]) == (255, 128, 0)


def test_16bit_rgb_png_and_its_exif_orientation(tmp_path):
    cv2 = pytest.importorskip("cv2")
    values = rgb16_image(4095)
    cv2.imwrite(str(tmp_path / "rgb12.png"), values[..., ::-1])
    np.testing.assert_array_equal(load_image(tmp_path / "rgb12.png"), scaled(values, 4095))

    write_rgb16_tiff(tmp_path / "rot.tif", values, orientation=6)
    np.testing.assert_array_equal(load_image(tmp_path / "rot.tif"), np.rot90(scaled(values, 4095), -1))


def test_16bit_rgb_without_opencv_falls_back_to_high_byte(tmp_path, monkeypatch):
    values = rgb16_image(65535)
    write_rgb16_tiff(tmp_path / "rgb16.tif", values)
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    loaded = load_image(tmp_path / "rgb16.tif")
    np.testing.assert_array_equal(loaded, (values >> 8).astype(np.uint8))


def test_multipage_tiff_gives_first_page(tmp_path):
    first = np.full((10, 10, 3), (255, 0, 0), np.uint8)
    second = np.full((20, 20, 3), (0, 0, 255), np.uint8)
    path = tmp_path / "stack.tif"
    Image.fromarray(first).save(path, save_all=True, append_images=[Image.fromarray(second)])
    assert opened(path, "n_frames") == 2
    np.testing.assert_array_equal(load_image(path), first)
