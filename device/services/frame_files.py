"""How frames, crops and thumbnails are kept on disk (issue 15: storage growth), chosen by measurement.

- An upload that arrived as a compressed file (JPEG, PNG, TIFF, WebP) is kept **as received, bit-exact**: its
  SHA-256 is the capture's ``sha256`` and names the file (``images/ab/<sha256>.<ext>``). Decoding the kept file
  again gives the pixels the analysis saw (the same decoder, ``device.core.imageio``).
- A camera still (raw pixels) is encoded as ``storage.still_format``: by default ``jpeg90``, JPEG quality 90 with
  full chroma resolution (4:4:4), ~44 dB PSNR, 0.98 MB for a 2592x1944 frame, so that a still with its crops,
  thumbnail and rows stays within issue 15's 1.5 MB. Chosen by measurement (``python -m
  device.bench.still_formats``, README "Measured figures"): against the analysis of the camera's own pixels, the
  stored still's changes no more results at q90 than at q95 (flags of 0 of 105 frames against 2; labels of 8 of
  467 cells against 9, all of them within 0.2 of the threshold, inside the review band: any re-encoding moves the
  cells nearest it), and q95 costs 1.6 MB. ``jpeg95`` where a higher quality is wanted, ``webp-lossless`` (the
  smallest lossless, 4.7 MB) or ``png`` where lossless stills are required. An uncompressed upload (BMP) is
  always kept losslessly (``UPLOAD_REENCODE``): the user chose that file.
  The analysis always reads the stored file back, so what is stored is what was analysed.
- Cell crops are JPEG quality 95 with full chroma resolution (4:4:4): ~44 dB PSNR against the frame, a fifth of
  the lossless PNG (measured on 150 px crops: 6 kB against 30 kB PNG, 20 kB WebP lossless), so a pathologist's
  crop stays of diagnostic quality (q >= 90) at a size a thin link carries.
- A thumbnail of each analysed frame (:data:`THUMB_WIDTH` px wide, JPEG q85, no outlines burnt in: the pages and
  the report draw each cell's outline with its *current* label from the stored boxes) is written at analysis
  time; it is what the review page and the report show once the full frame is pruned (device/services/retention.py).

The duplicate check uses ``pixels_sha256``, the SHA-256 of the decoded pixels (shape and bytes), so the same image
as JPEG and as PNG is still one image.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np

from device.errors import AllscopeError

DEFAULT_STILL = "jpeg90"  # camera stills, see the module docstring; storage.still_format
UPLOAD_REENCODE = "webp-lossless"  # uncompressed uploads (BMP): kept losslessly whatever storage.still_format says
STILL_JPEG_QUALITY = {"jpeg90": 90, "jpeg95": 95}  # still_format -> JPEG quality (always 4:4:4)
CROP_QUALITY = 95
THUMB_WIDTH = 1024
THUMB_QUALITY = 85
# What a kept upload may be (magic bytes -> format and suffix). BMP is uncompressed: re-encoded as a still.
_KEPT = ((b"\xff\xd8\xff", "jpeg", ".jpg"), (b"\x89PNG\r\n\x1a\n", "png", ".png"), (b"II*\x00", "tiff", ".tif"),
         (b"MM\x00*", "tiff", ".tif"))
SUFFIXES = {"jpeg": ".jpg", "png": ".png", "tiff": ".tif", "webp": ".webp"}
MIMETYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".tif": "image/tiff",
             ".tiff": "image/tiff", ".webp": "image/webp", ".bmp": "image/bmp"}


def kept_format(content: bytes) -> str | None:
    """The format of a file kept as received ("jpeg", "png", "tiff", "webp"), None when it is re-encoded."""
    for magic, name, _suffix in _KEPT:
        if content.startswith(magic):
            return name
    if len(content) >= 12 and content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "webp"
    return None


def mimetype(relative: str) -> str:
    """The MIME type of a stored file by its suffix (the old frames and crops are .png)."""
    suffix = relative[relative.rfind("."):].lower() if "." in relative else ""
    return MIMETYPES.get(suffix, "application/octet-stream")


def pixels_sha256(rgb: np.ndarray) -> str:
    """SHA-256 of the decoded pixels and their shape: one image whatever file it came in."""
    height, width = rgb.shape[:2]
    digest = hashlib.sha256(f"{height}x{width}x{rgb.shape[2] if rgb.ndim == 3 else 1};".encode())
    digest.update(np.ascontiguousarray(rgb).data)
    return digest.hexdigest()


def pillow_bytes(rgb: np.ndarray, fmt: str, **options) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    try:
        Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, fmt, **options)
    except (OSError, ValueError) as error:
        raise AllscopeError(f"could not encode an image as {fmt}: {error}") from None
    return buffer.getvalue()


def encode_still(rgb: np.ndarray, choice: str = DEFAULT_STILL) -> tuple[bytes, str]:
    """(bytes, format) of raw pixels: WebP lossless (method 0, the fast one, measured), PNG, or JPEG q90 / q95 4:4:4."""
    if choice == "png":
        return pillow_bytes(rgb, "PNG", compress_level=1), "png"
    if choice in STILL_JPEG_QUALITY:
        return pillow_bytes(rgb, "JPEG", quality=STILL_JPEG_QUALITY[choice], subsampling=0), "jpeg"
    return pillow_bytes(rgb, "WEBP", lossless=True, quality=0, method=0), "webp"


def encode_crop(rgb: np.ndarray) -> bytes:
    """A cell crop as JPEG q95, 4:4:4."""
    return pillow_bytes(rgb, "JPEG", quality=CROP_QUALITY, subsampling=0)


def encode_thumbnail(rgb: np.ndarray, width: int = THUMB_WIDTH) -> bytes:
    """The frame scaled to ``width`` px wide (never enlarged) as JPEG q85."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb))
    if image.width > width:
        image = image.resize((width, max(1, round(image.height * width / image.width))), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=THUMB_QUALITY)
    return buffer.getvalue()
