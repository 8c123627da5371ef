"""From a decoded Pillow image to H×W×3 uint8 RGB: bit depth, palette and alpha, EXIF orientation.

``device/core/imageio.py`` decodes (with its limits and one-line errors); this module only converts
pixels, the same way for every format a lab meets.
"""

from __future__ import annotations

import contextlib
import os
from typing import IO

import numpy as np
from PIL import Image, ImageOps

from device.errors import ImageLoadError

# Same table as PIL.ImageOps.exif_transpose, for the OpenCV 16-bit path.
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION_TAG = 0x0112


def is_16bit_colour(im: Image.Image) -> bool:
    """True for 16-bit-per-sample RGB(A), which Pillow reduces to its high byte.

    Read from the decoder's raw mode (e.g. "RGB;16B" for PNG, "RGB;16N" for
    TIFF) before load() clears the tile list.
    """
    if im.mode not in ("RGB", "RGBA") or not im.tile:
        return False
    try:
        args = im.tile[0][3]
        rawmode = args[0] if isinstance(args, tuple) else args
    except (IndexError, TypeError):
        return False
    return isinstance(rawmode, str) and ";16" in rawmode


def decode_16bit_colour(fh: IO[bytes], im: Image.Image) -> np.ndarray | None:
    """Full-precision 16-bit RGB(A) via OpenCV, or None to use Pillow's 8 bits.

    Called only after Pillow decoded the same file completely, so the file is
    known to be intact and of an accepted size.
    """
    try:
        import cv2
    except ImportError:
        return None
    fh.seek(0)
    buf = np.frombuffer(fh.read(), dtype=np.uint8)
    arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)  # first page; orientation not applied
    width, height = im.size
    if (
        arr is None
        or arr.dtype != np.uint16
        or arr.ndim != 3
        or arr.shape[2] not in (3, 4)
        or arr.shape[:2] != (height, width)
    ):
        return None
    rgb = _scale_to_uint8(arr[..., 2::-1])  # OpenCV gives BGR(A)
    if arr.shape[2] == 4:
        alpha = np.rint(arr[..., 3] / 257.0).astype(np.uint8)
        rgb = _composite_on_white(rgb, alpha)
    orientation = exif_orientation(im)
    if orientation in _EXIF_TRANSPOSE:
        rgb = np.asarray(Image.fromarray(rgb).transpose(_EXIF_TRANSPOSE[orientation]))
    return contiguous_writable(rgb)


def exif_orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION_TAG, 1)
        return int(value)
    except Exception:  # noqa: BLE001 - a damaged EXIF block must not reject the frame
        return 1


def exif_transposed(im: Image.Image) -> Image.Image:
    """Apply EXIF orientation in place (``im`` itself is returned: no copy of a frame that needs no turn, which
    Pillow would otherwise make); a damaged EXIF block leaves the image as stored."""
    with contextlib.suppress(Exception):  # orientation is cosmetic for cell finding
        ImageOps.exif_transpose(im, in_place=True)
    return im


_BAND_BYTES = 4 << 20  # Pillow pixels converted to numpy at a time (see to_rgb8)
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_rgb8(im: Image.Image, name: str | os.PathLike[str]) -> np.ndarray:
    """H×W×3 uint8 RGB of a loaded image. Releases ``im``'s pixels once it has taken them (the caller is done
    with it): Pillow holds RGB at 4 bytes a pixel, and a 2592×1944 frame's copies add up (issue 15, memory)."""
    mode = im.mode
    if mode in _HIGH_DEPTH_MODES:
        gray = _scale_to_uint8(np.asarray(im))
        return contiguous_writable(np.repeat(gray[:, :, None], 3, axis=2))
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    try:
        if has_alpha:
            rgba = np.asarray(im.convert("RGBA"))
            return contiguous_writable(_composite_on_white(rgba[..., :3], rgba[..., 3]))
        rgb = im if mode == "RGB" else im.convert("RGB")
    except ValueError:
        raise ImageLoadError(name, f"unsupported pixel format {mode}") from None
    if rgb is not im:
        im.close()
    out = np.empty((rgb.height, rgb.width, 3), np.uint8)
    # In bands: ``np.asarray`` of the whole image would first make Pillow's bytes of it (joined from chunks:
    # twice the frame) beside Pillow's own 4 bytes a pixel and our array.
    band = max(1, _BAND_BYTES // max(1, rgb.width * 4))
    for top in range(0, rgb.height, band):
        out[top:top + band] = np.asarray(rgb.crop((0, top, rgb.width, min(rgb.height, top + band))))
    rgb.close()
    return out


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale high-bit-depth samples to 0..255 by their effective bit depth (see module doc)."""
    a = np.asarray(values)
    if a.dtype.kind == "f":
        a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        a = np.clip(a, 0.0, None)
        peak = float(a.max()) if a.size else 0.0
        full = 1.0 if peak <= 1.0 else _container_max(int(np.ceil(peak)))
    else:
        a = np.clip(a.astype(np.float32), 0.0, None)  # signed "I" images: negatives are black
        full = _container_max(int(a.max()) if a.size else 0)
    return np.rint(a * np.float32(255.0 / full)).clip(0, 255).astype(np.uint8)


def _container_max(peak: int) -> float:
    for bits in (8, 10, 12, 14, 16):
        if peak < 1 << bits:
            return float((1 << bits) - 1)
    return float(peak)  # deeper than 16 bits: scale by the actual range


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.uint32)[..., None]
    out = (rgb.astype(np.uint32) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def contiguous_writable(a: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(a, dtype=np.uint8)
    if not out.flags.writeable:
        out = out.copy()
    return out
