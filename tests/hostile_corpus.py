"""A corpus of hostile and odd image files, built in a directory by the tests that use it.

Every specimen is derived from one real demo frame (device/demo), so that the
valid ones carry real white cells to analyse. Two kinds:

* refused (``reason`` set): truncated and corrupted JPEG/PNG/TIFF, zero-byte,
  decompression bombs (headers claiming 60 000 × 60 000 pixels, a few hundred
  bytes on disk, in PNG, TIFF, JPEG and BMP; a WebP claiming 16 383²), text,
  HTML, SVG, PDF and random bytes named as images, a real GIF, a too small
  image. ``reason`` is a regular expression the one-line error must match.
* accepted (``expected`` set): palette (with and without transparency), CMYK
  (JPEG and TIFF), 16-bit grayscale holding 12-bit data, 16-bit RGB (PNG and
  TIFF), float TIFF, RGBA and gray+alpha, grayscale JPEG, bilevel, WebP, BMP,
  and images under a wrong extension (the loader goes by content, never by
  name). ``expected`` is the RGB array the loader must produce, within
  ``tolerance`` (mean absolute difference; 0 = exact); ``same_as_base`` marks
  those that decode to exactly the demo frame, whose analysis must then equal
  the frame's own.

``TRAVERSAL_NAMES`` are hostile upload file names (path traversal, absolute
paths, NUL bytes, very long names, markup), used only with a valid image.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

DEMO = Path(__file__).resolve().parent.parent / "device" / "demo"
BASE_FILE = DEMO / "BloodImage_00000.jpg"

TRUNCATED = r"image truncated or corrupt"
UNREADABLE = r"not a readable image"
TOO_LARGE = r"image too large: .*exceeds the limit of [0-9,]+"  # 60 Mpx for the loader, the upload budget on the web


@dataclass(frozen=True)
class Specimen:
    name: str                          # file name in the corpus directory (the suffix is part of the test)
    data: bytes
    what: str                          # one phrase for assertion messages
    reason: str | None = None          # refused: regex of the one-line reason
    expected: np.ndarray | None = None  # accepted: the RGB the loader must give
    tolerance: float = 0.0             # mean absolute difference allowed against ``expected``
    same_as_base: bool = False         # decodes to exactly the demo frame

    @property
    def refused(self) -> bool:
        return self.reason is not None


def base_rgb() -> np.ndarray:
    with Image.open(BASE_FILE) as im:
        return np.asarray(im.convert("RGB")).copy()


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _cv2_encode(suffix: str, array: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(suffix, array)
    assert ok, suffix
    return buf.tobytes()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG header (valid CRCs) claiming width×height RGB, with a tiny IDAT: ~80 bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _png_chunk(b"IEND", b""))


def tiff_claiming(width: int, height: int) -> bytes:
    """An uncompressed 8-bit grayscale TIFF header claiming width×height, with 16 bytes of pixel data."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 16)]
    data_offset = 8 + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        value = data_offset if tag == 273 else value
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\x80" * 16


def jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """A real JPEG whose SOF0 header is rewritten to claim width×height."""
    sof = jpeg.find(b"\xff\xc0")
    assert sof > 0
    return jpeg[: sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9:]


def bmp_claiming(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 64, 0, 0, 54) + info + b"\x00" * 64


def webp_claiming(width: int, height: int) -> bytes:
    """A lossless (VP8L) WebP header claiming width×height (at most 16 383 each)."""
    bits = (width - 1) | (height - 1) << 14
    body = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 32
    chunk = b"VP8L" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def _flipped(data: bytes, start: int, count: int = 64) -> bytes:
    out = bytearray(data)
    for i in range(start, min(start + count, len(out))):
        out[i] ^= 0xA5
    return bytes(out)


def _composite(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.uint32)[..., None]
    return ((rgb.astype(np.uint32) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def _gray3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def refused_specimens(base: np.ndarray) -> list[Specimen]:
    frame = Image.fromarray(base)
    jpeg = BASE_FILE.read_bytes()
    png = encode(frame, "PNG")
    tiff = encode(frame, "TIFF")
    tiff_deflate = encode(frame, "TIFF", compression="tiff_deflate")
    noise = random.Random(6).randbytes(4096)
    dht = jpeg.find(b"\xff\xc4")
    idat = png.find(b"IDAT")
    html = b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>\n"
    svg = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="640" height="480">'
           b'<circle cx="320" cy="240" r="100" fill="purple"/></svg>\n')
    big_chunk = png[:33] + struct.pack(">I", 0x7FFFFFF0) + b"IDAT" + b"\x00" * 32
    return [
        Specimen("truncated.jpg", jpeg[: len(jpeg) // 2], "JPEG cut in half", TRUNCATED),
        Specimen("truncated.png", png[: len(png) // 2], "PNG cut in half", TRUNCATED),
        Specimen("truncated.tif", tiff[: len(tiff) // 2], "uncompressed TIFF cut in half", TRUNCATED),
        Specimen("truncated-deflate.tiff", tiff_deflate[: len(tiff_deflate) // 2],
                 "deflate TIFF cut in half (its directory is at the end)", UNREADABLE),
        Specimen("corrupt-huffman.jpg", _flipped(jpeg, dht + 4, 16), "JPEG with a damaged Huffman table", TRUNCATED),
        Specimen("corrupt-sof.jpg", _flipped(jpeg, jpeg.find(b"\xff\xc0") + 2, 8), "JPEG with a damaged frame header",
                 TRUNCATED),
        Specimen("corrupt-idat.png", _flipped(png, idat + 100), "PNG with damaged pixel data", TRUNCATED),
        Specimen("corrupt-ihdr-crc.png", _flipped(png, 29, 2), "PNG whose header CRC is wrong", UNREADABLE),
        Specimen("corrupt-ifd.tif", _flipped(tiff, 4, 4), "TIFF whose directory offset is wrong", UNREADABLE),
        Specimen("corrupt-deflate.tif", _flipped(tiff_deflate, len(tiff_deflate) // 3),
                 "deflate TIFF with damaged strips", TRUNCATED),
        Specimen("png-chunk-claims-2gb.png", big_chunk, "PNG chunk whose length claims 2 GB", TRUNCATED),
        Specimen("png-signature-only.png", png[:8], "nothing but the PNG signature", UNREADABLE + "$"),
        Specimen("jpeg-soi-only.jpg", b"\xff\xd8\xff", "nothing but a JPEG start marker (binary, not text)",
                 UNREADABLE + "$"),
        Specimen("empty.png", b"", "zero-byte file", r"file is empty"),
        Specimen("empty.jpg", b"", "zero-byte file", r"file is empty"),
        Specimen("bomb-60000.png", png_claiming(60_000, 60_000), "PNG header claiming 60 000 × 60 000", TOO_LARGE),
        Specimen("bomb-8000.png", png_claiming(8_000, 8_000), "PNG header claiming 64 MP, just over the limit",
                 TOO_LARGE),
        Specimen("bomb-60000.tif", tiff_claiming(60_000, 60_000), "TIFF header claiming 60 000 × 60 000", TOO_LARGE),
        Specimen("bomb-60000.jpg", jpeg_claiming(jpeg, 60_000, 60_000), "JPEG frame header claiming 60 000 × 60 000",
                 TOO_LARGE),
        Specimen("bomb-60000.bmp", bmp_claiming(60_000, 60_000), "BMP header claiming 60 000 × 60 000", TOO_LARGE),
        Specimen("bomb-16383.webp", webp_claiming(16_383, 16_383), "WebP header claiming 16 383 × 16 383", TOO_LARGE),
        Specimen("notes.jpg", b"Patient list\nH-100 Ada Example\nH-101 Bob Example\n", "text renamed .jpg",
                 r"not a readable image \(the file contains text\)"),
        Specimen("error-page.png", html, "HTML page renamed .png", r"the file is an HTML page"),
        Specimen("drawing.svg", svg, "an SVG drawing", r"the file is XML/SVG"),
        Specimen("drawing-svg.png", svg, "an SVG renamed .png", r"the file is XML/SVG"),
        Specimen("animation.gif", encode(frame.resize((160, 120)), "GIF"), "a GIF",
                 r"unsupported image format GIF \(use PNG, JPEG, TIFF, BMP or WebP\)"),
        Specimen("report.tif", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "PDF renamed .tif",
                 r"unsupported image format PDF"),
        Specimen("noise.png", noise, "4 KB of random bytes", UNREADABLE),
        Specimen("tiny.png", encode(frame.resize((4, 4)), "PNG"), "4 × 4 pixel PNG", r"image too small: 4×4 pixels"),
    ]


def accepted_specimens(base: np.ndarray) -> list[Specimen]:
    frame = Image.fromarray(base)
    gray = np.asarray(frame.convert("L"))
    height, width = gray.shape

    palette = frame.quantize(256)
    palette_rgb = np.asarray(palette.convert("RGB"))
    transparent = palette.copy()
    index = int(np.asarray(palette)[0, 0])
    transparent.info["transparency"] = index
    transparent_rgb = palette_rgb.copy()
    transparent_rgb[np.asarray(palette) == index] = 255

    alpha = np.zeros((height, width), np.uint8)
    alpha[:, width // 3: 2 * width // 3] = 128
    alpha[:, 2 * width // 3:] = 255
    rgba = Image.fromarray(np.dstack([base, alpha]), "RGBA")
    gray_alpha = Image.fromarray(np.dstack([gray, alpha]), "LA")

    twelve_bit = gray.astype(np.uint16) * 16  # 12-bit camera data in a 16-bit container
    twelve_expected = _gray3(np.rint(twelve_bit.astype(np.float32) * np.float32(255.0 / 4095)).astype(np.uint8))
    rgb16_bgr = (base[..., ::-1].astype(np.uint16) * 257)
    unit_float = Image.fromarray(gray.astype(np.float32) / 255.0, "F")
    bilevel = frame.convert("1")
    png = encode(frame, "PNG")
    jpeg = BASE_FILE.read_bytes()

    return [
        Specimen("palette.png", encode(palette, "PNG"), "palette PNG", expected=palette_rgb),
        Specimen("palette-transparent.png", encode(transparent, "PNG"), "palette PNG with a transparent colour",
                 expected=transparent_rgb),
        Specimen("cmyk.jpg", encode(frame.convert("CMYK"), "JPEG", quality=95), "CMYK JPEG", expected=base,
                 tolerance=4.0),
        Specimen("cmyk.tif", encode(frame.convert("CMYK"), "TIFF"), "CMYK TIFF", expected=base, same_as_base=True),
        Specimen("gray12in16.png", encode(Image.fromarray(twelve_bit), "PNG"), "16-bit gray PNG holding 12-bit data",
                 expected=twelve_expected),
        Specimen("gray16.tif", encode(Image.fromarray(gray.astype(np.uint16) * 257), "TIFF"), "16-bit gray TIFF",
                 expected=_gray3(gray)),
        Specimen("rgb16.png", _cv2_encode(".png", rgb16_bgr), "16-bit RGB PNG", expected=base, same_as_base=True),
        Specimen("rgb16.tif", _cv2_encode(".tiff", rgb16_bgr), "16-bit RGB TIFF", expected=base, same_as_base=True),
        Specimen("float.tif", encode(unit_float, "TIFF"), "32-bit float TIFF in 0..1", expected=_gray3(gray)),
        Specimen("rgba.png", encode(rgba, "PNG"), "RGBA PNG (transparent, half, opaque)",
                 expected=_composite(base, alpha)),
        Specimen("gray-alpha.png", encode(gray_alpha, "PNG"), "gray + alpha PNG",
                 expected=_gray3(_composite(_gray3(gray), alpha)[..., 0])),
        Specimen("gray.jpg", encode(frame.convert("L"), "JPEG", quality=95), "grayscale JPEG", expected=_gray3(gray),
                 tolerance=3.0),
        Specimen("bilevel.png", encode(bilevel, "PNG"), "1-bit PNG", expected=np.asarray(bilevel.convert("RGB"))),
        Specimen("lossless.webp", encode(frame, "WEBP", lossless=True), "lossless WebP", expected=base,
                 same_as_base=True),
        Specimen("frame.bmp", encode(frame, "BMP"), "BMP", expected=base, same_as_base=True),
        Specimen("png-named.jpg", png, "PNG under a .jpg name", expected=base, same_as_base=True),
        Specimen("jpeg-named.png", jpeg, "JPEG under a .png name", expected=base, same_as_base=True),
        Specimen("png-named.txt", png, "PNG under a .txt name", expected=base, same_as_base=True),
    ]


def build_corpus(directory: Path) -> list[Specimen]:
    """Write every specimen into ``directory`` (created) and return them, refused ones first."""
    directory.mkdir(parents=True, exist_ok=True)
    base = base_rgb()
    specimens = refused_specimens(base) + accepted_specimens(base)
    names = [s.name for s in specimens]
    assert len(names) == len(set(names)), "specimen names must be unique"
    for specimen in specimens:
        (directory / specimen.name).write_bytes(specimen.data)
    return specimens


def distinct_variant(base: np.ndarray, number: int) -> bytes:
    """A PNG of the demo frame with one pixel changed, so each upload has its own content hash."""
    frame = base.copy()
    frame[number // base.shape[1] % base.shape[0], number % base.shape[1]] ^= 0x5A
    return encode(Image.fromarray(frame), "PNG")


# Hostile names for a valid upload. None of them may name a path anywhere: the upload is stored by content hash
# inside the data directory, and the name is only shown (sanitised) to users.
TRAVERSAL_NAMES = [
    "../../etc/passwd.png",
    "../../../../../../tmp/allscope-escape.png",
    "..\\..\\windows\\escape.png",
    "/etc/absolute.png",
    "/tmp/allscope-absolute.png",
    "C:\\Windows\\System32\\escape.png",
    "....//....//nested-escape.png",
    "%2e%2e%2fencoded-escape.png",
    "images/ab/forged.png",
    "..",
    ".",
    "nul\x00byte.png",
    "control\tchars\x1b[31m\x7f.png",
    "x" * 5000 + ".png",
    "<script>alert(1)</script>.png",
    "\u202egnp.exe",
    "ünïcødé frame ✓.png",
    "CON",
]
