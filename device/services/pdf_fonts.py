"""Fonts for the PDF report: which files, where they are looked for, which are loaded.

Faces, in fallback order (the first one found is the main font; a character it lacks is taken from the
first later face that has it, fpdf2's font fallback):

- DejaVu Sans (Debian ``fonts-dejavu-core``, 3 MB): Latin, Greek, Cyrillic, Armenian, Georgian, Hebrew,
  Arabic, symbols;
- Noto Sans and its script faces (``fonts-noto-core``, 43 MB): Latin/Greek/Cyrillic when DejaVu is absent,
  Arabic, Hebrew, Devanagari and the other Indic scripts, Thai, Lao, Khmer, Myanmar, Ethiopic, ...;
- WenQuanYi Micro Hei (``fonts-wqy-microhei``, 5 MB): Chinese, Japanese kana, Korean Hangul.

Files are looked for by name in each folder of the search list, first hit wins: the folders in
``$ALLSCOPE_FONT_DIRS`` (separated by ":"), then Debian's (Raspberry Pi OS and JetPack's Ubuntu install the
same packages to the same places), then Arch's and Fedora's. Nothing is read at import: a report reads the
character maps it needs (cached) and loads only the main face plus the faces that hold characters of that
report, so a Latin-only report loads DejaVu alone. Arabic, Hebrew, the Indic scripts and Thai are shaped
with HarfBuzz (``uharfbuzz``) when it is installed; without it they print unshaped but complete.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True)
class Face:
    family: str
    regular: str
    bold: str | None
    package: str
    scripts: str


def _noto(script: str, bold: bool = True) -> Face:
    return Face(f"Noto{script}", f"NotoSans{script}-Regular.ttf", f"NotoSans{script}-Bold.ttf" if bold else None,
                "fonts-noto-core", script)


FACES: tuple[Face, ...] = (
    Face("DejaVu", "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "fonts-dejavu-core",
         "Latin, Greek, Cyrillic, Armenian, Georgian, Hebrew, Arabic"),
    Face("NotoSans", "NotoSans-Regular.ttf", "NotoSans-Bold.ttf", "fonts-noto-core", "Latin, Greek, Cyrillic"),
    *(_noto(script) for script in ("Arabic", "Hebrew", "Devanagari", "Bengali", "Gurmukhi", "Gujarati", "Oriya",
                                   "Tamil", "Telugu", "Kannada", "Malayalam", "Sinhala", "Thai", "Lao", "Khmer",
                                   "Myanmar", "Ethiopic", "Armenian", "Georgian", "Thaana")),
    _noto("Syriac", bold=False),
    Face("WenQuanYi", "wqy-microhei.ttc", None, "fonts-wqy-microhei", "Chinese, Japanese, Korean"),
)
FONT_PACKAGES = tuple(dict.fromkeys(face.package for face in FACES))  # what Makefile and install.sh install

DEFAULT_FONT_DIRS: tuple[Path, ...] = tuple(Path(p) for p in (
    "/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/noto", "/usr/share/fonts/truetype/wqy",
    "/usr/share/fonts/TTF", "/usr/share/fonts/noto", "/usr/share/fonts/wenquanyi/wqy-microhei",  # Arch
    "/usr/share/fonts/dejavu-sans-fonts", "/usr/share/fonts/google-noto", "/usr/share/fonts/wqy-microhei",  # Fedora
    "/usr/share/fonts/dejavu",
))
REPLACEMENT = "\ufffd"  # the visible marker for a character no font can show


@dataclass(frozen=True)
class FontFile:
    """A face found on disk."""

    family: str
    regular: Path
    bold: Path | None = None


def font_dirs() -> tuple[Path, ...]:
    extra = tuple(Path(p) for p in os.environ.get("ALLSCOPE_FONT_DIRS", "").split(os.pathsep) if p)
    return extra + DEFAULT_FONT_DIRS


def _locate(name: str, dirs) -> Path | None:
    return next((folder / name for folder in dirs if (folder / name).is_file()), None)


def find_fonts(dirs=None) -> list[FontFile]:
    """The faces of ``FACES`` present in the search list, in fallback order (file checks only)."""
    dirs = font_dirs() if dirs is None else tuple(Path(d) for d in dirs)
    found = []
    for face in FACES:
        regular = _locate(face.regular, dirs)
        if regular is not None:
            found.append(FontFile(face.family, regular, _locate(face.bold, dirs) if face.bold else None))
    return found


@lru_cache(maxsize=128)
def _cmap(path: str, mtime: float) -> frozenset[int]:
    from fontTools.ttLib import TTFont  # fpdf2's own dependency

    with TTFont(path, lazy=True, fontNumber=0) as font:
        return frozenset(font.getBestCmap() or ())


def coverage(font: FontFile) -> frozenset[int]:
    """The code points the face (regular or bold) has a glyph for."""
    cmaps = [_cmap(str(p), p.stat().st_mtime) for p in (font.regular, font.bold) if p is not None]
    return frozenset().union(*cmaps)


def needs_glyph(char: str) -> bool:
    """Controls and format characters (bidi marks, joiners) print as nothing and need no glyph."""
    return not char.isspace() and unicodedata.category(char) not in ("Cc", "Cf", "Zl", "Zp")


# Scripts HarfBuzz must shape (joining, reordering, stacked marks) or lay out right to left.
_COMPLEX = ((0x0590, 0x08FF), (0x0900, 0x0DFF), (0x0E00, 0x0FFF), (0x1000, 0x109F), (0x1780, 0x17FF),
            (0xFB1D, 0xFDFF), (0xFE70, 0xFEFF))


def needs_shaping(text: str) -> bool:
    return any(lo <= ord(c) <= hi for c in set(text) for lo, hi in _COMPLEX)


def shaping_available() -> bool:
    try:
        import uharfbuzz  # noqa: F401  (fpdf2's text shaping engine)
    except ImportError:
        return False
    return True


def choose(fonts: list[FontFile], text: str) -> tuple[list[FontFile], frozenset[int], set[str]]:
    """The faces a text needs: the main face always, a later face only for characters no earlier one has.
    Returns (faces to load, what they cover together, characters none of them can show)."""
    if not fonts:
        return [], frozenset(), {c for c in set(text) if needs_glyph(c)}
    chosen, covered = [fonts[0]], set(coverage(fonts[0]))
    wanted = {c for c in set(text) if needs_glyph(c) and ord(c) not in covered}
    for font in fonts[1:]:
        if not wanted:
            break
        has = coverage(font)
        if any(ord(c) in has for c in wanted):
            chosen.append(font)
            covered |= has
            wanted = {c for c in wanted if ord(c) not in has}
    return chosen, frozenset(covered), wanted
