"""Load microscope images of the formats a lab meets as H×W×3 uint8 RGB arrays.

Every failure becomes one :class:`~device.errors.ImageLoadError` with a short
reason a user can act on; no Pillow exception, warning or traceback escapes.

Decoding is done by Pillow, restricted to PNG, JPEG, TIFF, BMP and WebP so
that no other (less exercised) decoder ever sees an uploaded file. The pixel
count is checked from the header before any pixel is decoded, and the whole
image is then decoded at once so that truncated files are detected here
rather than yielding grey stripes later (``ImageFile.LOAD_TRUNCATED_IMAGES``
is deliberately left False).

How pixel formats are normalised:

* EXIF orientation is applied, so a frame looks the way the camera showed it.
* Multi-page TIFF: the first page.
* 16-bit and 32-bit integer images are scaled by their effective bit depth:
  the smallest of 8, 10, 12, 14 and 16 bits that holds the brightest sample,
  because microscope cameras (and ImageJ) store 10-, 12- and 14-bit data in
  16-bit containers; dividing a 12-bit frame by 65535 would leave it almost
  black. Samples are scaled, never clipped. Float images are taken as 0..1.
  16-bit colour is decoded with OpenCV when it is installed (Pillow keeps
  only the high byte of 16-bit RGB); without OpenCV the high byte is used.
* Grayscale, palette, CMYK, YCbCr → RGB; transparency is composited onto
  white (the colour of an empty slide), not dropped to black.
"""

from __future__ import annotations

import io
import os
import re
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, UnidentifiedImageError

from device.core.pixels import decode_16bit_colour, exif_transposed, is_16bit_colour, to_rgb8
from device.errors import ImageLoadError

# 60 MP. Our own frames are at most 5 MP (ALL-IDB1: 2592×1944), so this
# leaves room for big sensors and stitched fields, while a hostile file
# claiming e.g. 60000×60000 (3.6 GP, ~11 GB of RGB) is refused before a
# single pixel is allocated. Whole-slide tiles larger than this need an
# explicit, deliberate max_pixels.
DEFAULT_MAX_PIXELS = 60_000_000

# Below this on either side a file cannot be a microscope frame or cell crop
# (it is an icon, a thumbnail or a damaged header).
MIN_SIDE = 8

SUPPORTED_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")

# The Pillow decoders we allow (Image.open's `formats`). A JPEG with
# multi-picture data, as some cameras write, opens through "JPEG" as MPO.
_PILLOW_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP")
_SUPPORTED_NAMES = "PNG, JPEG, TIFF, BMP or WebP"

# Everything Pillow and its C decoders are known to raise on bad input.
# MemoryError is handled separately.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    EOFError,
    ZeroDivisionError,
    OverflowError,
    RuntimeError,
    AssertionError,
    Image.DecompressionBombError,
)

_PILLOW_GUARD_LOCK = threading.Lock()


def load_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as a C-contiguous H×W×3 uint8 RGB array.

    Raises ImageLoadError (one line: "path: reason") for anything that is not
    a readable, complete, reasonably sized image of a supported format.
    """
    _check_limit(max_pixels)
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ImageLoadError(p, "file not found") from None
    except PermissionError:
        raise ImageLoadError(p, "permission denied") from None
    except OSError as e:
        raise ImageLoadError(p, f"cannot read file ({e.strerror or type(e).__name__})") from None
    if p.is_dir():
        raise ImageLoadError(p, "is a directory, not an image file")
    if not p.is_file():
        raise ImageLoadError(p, "not a regular file")
    if st.st_size == 0:
        raise ImageLoadError(p, "file is empty")
    try:
        fh = open(p, "rb")
    except PermissionError:
        raise ImageLoadError(p, "permission denied") from None
    except OSError as e:
        raise ImageLoadError(p, f"cannot read file ({e.strerror or type(e).__name__})") from None
    with fh:
        return _decode(fh, p, max_pixels)


def load_image_bytes(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Like load_image, for an upload held in memory; `name` is used in error messages."""
    _check_limit(max_pixels)
    if not data:
        raise ImageLoadError(name, "file is empty")
    return _decode(io.BytesIO(data), name, max_pixels)


def iter_image_files(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]) -> Iterator[Path]:
    """Expand the paths a user gave into the image files to analyse.

    Folders are walked recursively in sorted order and contribute only files
    with a supported suffix (case-insensitive); hidden files and folders
    (".DS_Store", macOS "._name.jpg" resource forks, ".git") are skipped and
    symlinked folders are not followed. Anything else — a file with another
    suffix, or a path that does not exist — is yielded as given, so that
    load_image reports it to the user instead of it vanishing silently.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    for given in paths:
        p = Path(given)
        if not p.is_dir():
            yield p
            continue
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not name.startswith(".") and name.lower().endswith(SUPPORTED_SUFFIXES):
                    yield Path(root) / name


def _check_limit(max_pixels: int) -> None:
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")


@contextmanager
def _pillow_pixel_guard(max_pixels: int) -> Iterator[None]:
    """Run Pillow with its decompression-bomb limit set to ours, silently.

    Pillow warns (DecompressionBombWarning) above Image.MAX_IMAGE_PIXELS and
    raises DecompressionBombError above twice that; the warning would leak to
    the user and the process-wide limit does not follow our per-call one.
    Inside this guard Pillow's limit equals max_pixels and its warning is
    ignored: our own header check, right after Image.open, rejects everything
    between max_pixels and 2×max_pixels with a clear message, and Pillow's
    error (converted by the caller) stops anything larger early — it also
    fires inside Image.open for WebP, whose decoder allocates its canvas
    before our check could run. Both settings are process-wide, hence the
    lock; it is held while Pillow parses a header and while it decodes, so
    image decoding is serialised across threads (tens of milliseconds a frame).
    """
    with _PILLOW_GUARD_LOCK, warnings.catch_warnings():
        # Every warning, not only the bomb's: header parsers also warn about damaged files
        # (TIFF: "Corrupt EXIF data"), and the file is refused or read with one line anyway.
        warnings.simplefilter("ignore")
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _decode(fh: IO[bytes], name: str | os.PathLike[str], max_pixels: int) -> np.ndarray:
    try:
        with _pillow_pixel_guard(max_pixels):
            im = Image.open(fh, formats=_PILLOW_FORMATS)
    except UnidentifiedImageError:
        raise ImageLoadError(name, _unidentified_reason(fh)) from None
    except Image.DecompressionBombError as e:
        raise ImageLoadError(name, _too_large_reason(str(e), max_pixels)) from None
    except MemoryError:
        raise ImageLoadError(name, "not enough memory to read the image") from None
    except _DECODE_ERRORS:
        raise ImageLoadError(name, "image truncated or corrupt") from None

    with im:
        width, height = im.size
        if width * height > max_pixels:
            raise ImageLoadError(
                name, f"image too large: {width}×{height} pixels exceeds the limit of {max_pixels:,}"
            )
        if min(width, height) < MIN_SIDE:
            raise ImageLoadError(
                name, f"image too small: {width}×{height} pixels (need at least {MIN_SIDE} on each side)"
            )
        colour16 = is_16bit_colour(im)
        # Guarded too: Pillow checks the limit again while decoding TIFF, and warns about
        # damaged tags it meets while decoding (TIFF's EXIF is read in load()).
        try:
            with _pillow_pixel_guard(max_pixels):
                im.load()  # full decode: truncation and corruption surface here
                if colour16:
                    rgb = decode_16bit_colour(fh, im)
                    if rgb is not None:
                        return rgb
                im = exif_transposed(im)
                return to_rgb8(im, name)
        except ImageLoadError:
            raise
        except MemoryError:
            raise ImageLoadError(name, "not enough memory to decode the image") from None
        except _DECODE_ERRORS:
            raise ImageLoadError(name, "image truncated or corrupt") from None


def _too_large_reason(pillow_message: str, max_pixels: int) -> str:
    match = re.search(r"\((\d+) pixels\)", pillow_message)
    size = f"{int(match.group(1)):,} pixels" if match else "the image"
    return f"image too large: {size} exceeds the limit of {max_pixels:,}"


# Formats people try to load that we do not decode, by their magic bytes.
_KNOWN_OTHER_FORMATS = (
    (0, b"GIF8", "GIF"),
    (0, b"%PDF", "PDF"),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (128, b"DICM", "DICOM"),
    (0, b"8BPS", "Photoshop PSD"),
    (0, b"PK\x03\x04", "ZIP archive"),
)


def _unidentified_reason(fh: IO[bytes]) -> str:
    """Why Pillow could not identify the file, as specifically as is cheap."""
    try:
        fh.seek(0)
        head = fh.read(256)
    except (OSError, ValueError):
        return "not a readable image"
    for offset, magic, fmt in _KNOWN_OTHER_FORMATS:
        if head[offset : offset + len(magic)] == magic:
            return f"unsupported image format {fmt} (use {_SUPPORTED_NAMES})"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "not a readable image (the file is an HTML page, e.g. a saved error page)"
    if text.startswith((b"<?xml", b"<svg")):
        return f"not a readable image (the file is XML/SVG; use {_SUPPORTED_NAMES})"
    if head and _looks_like_text(head):
        return "not a readable image (the file contains text)"
    return "not a readable image"


def _looks_like_text(head: bytes) -> bool:
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character may be cut at the end of the sample.
        try:
            decoded = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
        if not decoded:  # a few binary bytes (b"\xff\xd8\xff") are not text
            return False
    return all(c.isprintable() or c in "\r\n\t" for c in decoded)
