"""device.core.imageio: every format a lab meets loads as H×W×3 uint8 RGB; every bad file is one clear error."""

from __future__ import annotations

import io
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from image_samples import RNG, assert_rgb8, expect_error, random_rgb
from PIL import Image

from device.core.imageio import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_SUFFIXES,
    iter_image_files,
    load_image,
    load_image_bytes,
)
from device.errors import ImageLoadError

# --- ordinary 8-bit files -------------------------------------------------------------


@pytest.mark.parametrize(
    "suffix, save_kwargs",
    [(".png", {}), (".bmp", {}), (".tif", {}), (".tiff", {"compression": "tiff_lzw"}), (".webp", {"lossless": True})],
)
def test_lossless_formats_round_trip_exactly(tmp_path, suffix, save_kwargs):
    rgb = random_rgb()
    path = tmp_path / f"frame{suffix}"
    Image.fromarray(rgb).save(path, **save_kwargs)
    loaded = load_image(path)
    assert_rgb8(loaded, rgb.shape[:2])
    np.testing.assert_array_equal(loaded, rgb)


def test_jpeg_loads_close_to_original(tmp_path):
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :24] = (200, 40, 90)
    rgb[:, 24:] = (30, 180, 220)
    path = tmp_path / "frame.JPG"
    Image.fromarray(rgb).save(path, quality=95)
    loaded = load_image(path)
    assert_rgb8(loaded, (32, 48))
    assert np.abs(loaded[4:-4, 4:20].astype(int) - (200, 40, 90)).max() <= 6
    assert np.abs(loaded[4:-4, 28:-4].astype(int) - (30, 180, 220)).max() <= 6


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = RNG.integers(0, 256, size=(20, 30), dtype=np.uint8)
    path = tmp_path / "gray.png"
    Image.fromarray(gray).save(path)
    loaded = load_image(path)
    assert_rgb8(loaded, (20, 30))
    for c in range(3):
        np.testing.assert_array_equal(loaded[..., c], gray)


def test_palette_image_is_expanded_to_its_colours(tmp_path):
    im = Image.new("P", (16, 12))
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    pixels = np.zeros((12, 16), np.uint8)
    pixels[:, 8:] = 1
    pixels[6:, :] = 2
    im.frombytes(pixels.tobytes())
    path = tmp_path / "palette.png"
    im.save(path)
    loaded = load_image(path)
    assert tuple(loaded[0, 0]) == (255, 0, 0)
    assert tuple(loaded[0, 15]) == (0, 255, 0)
    assert tuple(loaded[11, 3]) == (0, 0, 255)


def test_cmyk_is_converted_to_rgb(tmp_path):
    cmyk = np.zeros((10, 12, 4), np.uint8)
    cmyk[:, 4:8, 0] = 255  # pure cyan
    cmyk[:, 8:, 3] = 255  # pure black
    path = tmp_path / "cmyk.tif"
    Image.frombytes("CMYK", (12, 10), cmyk.tobytes()).save(path)
    loaded = load_image(path)
    assert tuple(loaded[5, 0]) == (255, 255, 255)
    assert tuple(loaded[5, 5]) == (0, 255, 255)
    assert tuple(loaded[5, 10]) == (0, 0, 0)


# --- transparency: composited onto white ---------------------------------------------


def test_rgba_alpha_is_composited_onto_white(tmp_path):
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 0] = 200  # red-ish everywhere
    rgba[:, :4, 3] = 0  # transparent
    rgba[:, 4:8, 3] = 255  # opaque
    rgba[:, 8:, 3] = 128  # half
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba).save(path)
    loaded = load_image(path)
    assert_rgb8(loaded, (10, 12))
    assert tuple(loaded[0, 0]) == (255, 255, 255)  # not black
    assert tuple(loaded[0, 5]) == (200, 0, 0)
    expected_half = [round(v * 128 / 255 + 255 * 127 / 255) for v in (200, 0, 0)]
    assert np.abs(loaded[0, 9].astype(int) - expected_half).max() <= 1


def test_gray_alpha_and_palette_transparency_become_white(tmp_path):
    la = np.zeros((10, 10, 2), np.uint8)
    la[..., 0] = 50
    la[:5, :, 1] = 0
    la[5:, :, 1] = 255
    Image.frombytes("LA", (10, 10), la.tobytes()).save(tmp_path / "la.png")
    loaded = load_image(tmp_path / "la.png")
    assert tuple(loaded[0, 0]) == (255, 255, 255)
    assert tuple(loaded[9, 0]) == (50, 50, 50)

    im = Image.new("P", (10, 10), 0)
    im.putpalette([0, 0, 0, 10, 200, 30] + [0] * (256 * 3 - 6))
    im.paste(1, (0, 5, 10, 10))
    im.save(tmp_path / "ptrans.png", transparency=0)
    loaded = load_image(tmp_path / "ptrans.png")
    assert tuple(loaded[0, 0]) == (255, 255, 255)  # palette index 0 is transparent, not black
    assert tuple(loaded[9, 9]) == (10, 200, 30)


# --- EXIF orientation ----------------------------------------------------------------

# What the viewer must show for each EXIF orientation, from the EXIF
# definition of where the stored 0th row and 0th column belong.
DISPLAYED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # row 0 top, column 0 right
    3: lambda a: a[::-1, ::-1],  # row 0 bottom, column 0 right
    4: lambda a: a[::-1, :],  # row 0 bottom, column 0 left
    5: lambda a: a.transpose(1, 0, 2),  # row 0 left, column 0 top
    6: lambda a: np.rot90(a, -1),  # row 0 right, column 0 top
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # row 0 right, column 0 bottom
    8: lambda a: np.rot90(a, 1),  # row 0 left, column 0 bottom
}


@pytest.mark.parametrize("orientation", sorted(DISPLAYED))
def test_exif_orientation_is_applied(tmp_path, orientation):
    stored = random_rgb(12, 20)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "oriented.png"
    Image.fromarray(stored).save(path, exif=exif)
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded, DISPLAYED[orientation](stored))


def test_exif_rotation_on_camera_jpeg(tmp_path):
    stored = np.full((40, 60, 3), 255, np.uint8)
    stored[:16, :16] = (220, 0, 0)  # red block top-left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # camera held rotated: display turned 90° clockwise
    path = tmp_path / "camera.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    loaded = load_image(path)
    assert loaded.shape == (60, 40, 3)
    assert loaded[5, 34, 0] > 180 and loaded[5, 34, 1] < 60  # red is now top-right
    assert loaded[5, 5].min() > 200  # top-left is white


# --- failures: one line, a human reason -----------------------------------------------


def noise_bytes(fmt: str, size: int = 256) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(random_rgb(size, size)).save(buf, format=fmt)
    return buf.getvalue()


def test_missing_file_and_directory(tmp_path):
    error = expect_error(tmp_path / "nope.jpg", "file not found")
    assert error.path == str(tmp_path / "nope.jpg")
    expect_error(tmp_path, "is a directory")


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    expect_error(tmp_path / "empty.png", "file is empty")


@pytest.mark.parametrize("fmt, suffix", [("JPEG", ".jpg"), ("PNG", ".png"), ("TIFF", ".tif"), ("WEBP", ".webp")])
def test_truncated_files_are_rejected(tmp_path, fmt, suffix):
    data = noise_bytes(fmt)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) * 6 // 10])
    expect_error(path, "image truncated or corrupt")


def test_png_with_damaged_pixel_data(tmp_path):
    data = bytearray(noise_bytes("PNG"))
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(16)
    (tmp_path / "damaged.png").write_bytes(bytes(data))
    expect_error(tmp_path / "damaged.png", "image truncated or corrupt")


def test_html_and_text_renamed_as_images(tmp_path):
    (tmp_path / "page.png").write_text("<!DOCTYPE html>\n<html><body>403 Forbidden</body></html>\n")
    expect_error(tmp_path / "page.png", "not a readable image (the file is an HTML page")
    (tmp_path / "notes.jpg").write_text("patient 12, slide 3: good smear\n")
    expect_error(tmp_path / "notes.jpg", "not a readable image")
    (tmp_path / "noise.jpg").write_bytes(RNG.integers(0, 256, 500, dtype=np.uint8).tobytes())
    expect_error(tmp_path / "noise.jpg", "not a readable image")


def test_unsupported_format_is_named(tmp_path):
    path = tmp_path / "animation.jpg"
    Image.fromarray(random_rgb()).save(path, format="GIF")
    expect_error(path, "unsupported image format GIF")


def test_too_small_image(tmp_path):
    Image.fromarray(random_rgb(4, 40)).save(tmp_path / "tiny.png")
    expect_error(tmp_path / "tiny.png", "image too small: 40×4 pixels")


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims width×height (8-bit RGB) and whose IDAT holds almost nothing."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")


def test_decompression_bomb_header_is_rejected_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(60000, 60000))  # 3.6 GP, ~10.8 GB as RGB
    assert path.stat().st_size < 200
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        expect_error(path, "image too large")
        elapsed = time.perf_counter() - start
    assert elapsed < 0.5  # decoding 10.8 GB would take minutes or die
    assert not caught, [str(w.message) for w in caught]
    expect_error(path, f"exceeds the limit of {DEFAULT_MAX_PIXELS:,}")


def test_pixel_limit_from_header_names_the_size(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_claiming(9000, 8000))  # 72 MP: above our limit, below twice it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        expect_error(path, "image too large: 9000×8000 pixels exceeds the limit of 60,000,000")
    assert not caught, [str(w.message) for w in caught]


def test_pixel_limit_is_per_call_and_leaves_pillow_setting_alone(tmp_path):
    path = tmp_path / "frame.tif"
    Image.fromarray(random_rgb(100, 100)).save(path)
    before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        expect_error(path, "image too large: 100×100 pixels exceeds the limit of 6,000", max_pixels=6000)
        expect_error(path, "image too large", max_pixels=1000)  # beyond 2× the limit: Pillow's own error
    assert not caught
    assert Image.MAX_IMAGE_PIXELS == before
    assert load_image(path, max_pixels=10_000).shape == (100, 100, 3)


def test_raised_limit_above_pillow_default_works_without_warnings(tmp_path, monkeypatch):
    # Stand-in for a whole-slide tile above Pillow's own limit: shrink Pillow's limit instead.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "tile.tif"
    Image.fromarray(random_rgb(100, 100)).save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_image(path, max_pixels=20_000).shape == (100, 100, 3)
    assert not caught
    assert Image.MAX_IMAGE_PIXELS == 1000


# --- bytes -----------------------------------------------------------------------------


def test_load_image_bytes_matches_file_loading(tmp_path):
    rgb = random_rgb()
    path = tmp_path / "up.png"
    Image.fromarray(rgb).save(path)
    np.testing.assert_array_equal(load_image_bytes(path.read_bytes(), "up.png"), rgb)
    with pytest.raises(ImageLoadError, match=r"^upload\.jpg: file is empty$"):
        load_image_bytes(b"", "upload.jpg")
    with pytest.raises(ImageLoadError, match=r"^bomb\.png: image too large"):
        load_image_bytes(png_claiming(60000, 60000), "bomb.png")
    with pytest.raises(ImageLoadError, match=r"^x\.png: not a readable image"):
        load_image_bytes(b"<html>oops</html>", "x.png")


# --- finding files ---------------------------------------------------------------------


def test_iter_image_files_expands_folders_sorted_and_filtered(tmp_path):
    for rel in ["b.jpg", "a.PNG", "notes.txt", "sub/c.TiF", "sub/deeper/d.jpeg", "sub/e.bmp",
                ".hidden.jpg", "._a.jpg", ".git/f.png", "w.webp", "x.tiff", "y.gif"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_image_files([tmp_path])]
    assert found == ["a.PNG", "b.jpg", "w.webp", "x.tiff", "sub/c.TiF", "sub/e.bmp", "sub/deeper/d.jpeg"]


def test_iter_image_files_yields_explicit_files_as_given(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "z.jpg").write_bytes(b"x")
    given = [tmp_path / "notes.txt", tmp_path / "missing.jpg", str(tmp_path / "dir")]
    assert list(iter_image_files(given)) == [tmp_path / "notes.txt", tmp_path / "missing.jpg", tmp_path / "dir" / "z.jpg"]
    assert list(iter_image_files(str(tmp_path / "dir"))) == [tmp_path / "dir" / "z.jpg"]  # one path, not its characters
    expect_error(tmp_path / "notes.txt", "not a readable image")


def test_supported_suffixes():
    assert set(SUPPORTED_SUFFIXES) == {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


# --- the real data set -------------------------------------------------------------------


def test_real_frames_and_crops_load(shared_data):
    frame = sorted((shared_data / "all-idb1").glob("*.jpg"))[0]
    rgb = load_image(frame)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.shape[:2] in [(1944, 2592), (1368, 1712), (652, 1226)]
    crop = sorted((shared_data / "all-idb2").glob("*.tif"))[0]
    assert load_image(crop).shape[2] == 3
    bccd = sorted((shared_data / "bccd" / "JPEGImages").glob("*.jpg"))[0]
    assert load_image(bccd).shape == (480, 640, 3)
