"""Is a frame good enough to analyse? Judged on the cells, not on the background.

A well-exposed thin smear photographed at low magnification is mostly glass,
and that glass may clip to white: normal, as long as the cells keep their
stain and contrast. What makes a frame unusable is what happens to the
*objects* (red cells, nuclei, cytoplasm): too little light, light so strong
that the red cells wash out into the white, colours pushed past what the
stain can produce, no stained objects at all, or blurred object edges.

All measurements are made on a working copy whose longer side is at most
WORKING_SIZE (640) pixels (area averaging; smaller frames are used as they
are, never upscaled, since upscaling would invent blur), so a 2592×1944 frame
costs a few milliseconds.

* background (glass): per-channel median of the brightest fifth of the lit
  pixels (``stain.glass_colour``); ``background`` is its grey level.
* white-balanced copy: every channel divided by the glass colour
  (``stain.white_balanced``), so a green, blue or yellow light or a brighter
  lamp changes nothing below.
* stained objects: ``cellprep.nucleus_score`` (blue minus green) of the
  white-balanced copy above its Otsu threshold (floor 18), as cell finding
  uses; objects: stained pixels, or pixels at least OBJECT_CONTRAST darker
  than the glass (red cells, cytoplasm). Black surround pixels (gray <
  DARK_LEVEL, an eyepiece camera's round field of view) are neither.
* focus: variance of the 4-neighbour Laplacian of the grey copy
  over a band of FOCUS_MARGIN px around the objects (scaled with the copy's
  size), leaving out clipped pixels and that band around them, and objects
  within BLACK_MARGIN px of the black surround (the edge of a black surround
  or of a clipped region is sharp whatever the focus). Raw grey levels: a
  very dim frame reads soft, but it is refused as too dark first.
* clipped_fraction: share of the lit field clipped white (every channel >=
  CLIP_LEVEL); unstained_share: share of the objects that are not stained
  (red cells, cytoplasm): when too much light washes out the red cells only
  the darkest nuclei are left, and this share collapses.
* colour_clipped_fraction: share of the objects with a channel clipped white
  although the glass has headroom in that channel (GLASS_HEADROOM: colour
  pushed past the sensor), or crushed to 0 while another channel is lit.

* content_fraction: share of the lit field that is objects measured against
  the *local* glass level (a grey closing with a disc of CONTENT_RADIUS px,
  wider than any white cell), so the darker rim of an unevenly lit blank field
  (vignetting) is not taken for objects; stained and coloured pixels count as
  ever. A blank field reads as "empty field" on this measure, not as
  "blurred" (its soft vignette has no sharp edges) or as usable.

Problems, in this order (only exposure problems are reported when the
exposure is wrong, since contrast and focus then say little: fix the light
first, then the focus): "too dark", "overexposed", "colour saturated",
"empty field", "blurred".
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from device.core.cellprep import nucleus_score, stain_threshold
from device.core.morphology import Halvings, halved_below
from device.core.stain import GLASS_LEVEL, glass_colour, white_balanced

WORKING_SIZE = 640
DARK_LEVEL = 16
CLIP_LEVEL = 250
# Band around the objects where focus is measured (and margin kept from
# black or clipped pixels), in pixels of a 640-px copy.
FOCUS_MARGIN = 6
# An object pixel is at least this much darker than the glass (share of it),
# or at least OBJECT_CHROMA grey levels from neutral once the glass is made
# neutral (a pale pink red cell under a bright lamp).
OBJECT_CONTRAST = 0.12
OBJECT_CHROMA = 18
# A channel clipped white where the glass's own level of that channel is
# below GLASS_HEADROOM is colour pushed past the sensor (cameras boost
# saturation, so stained pixels a little brighter than the glass are normal).
GLASS_HEADROOM = 235
# Far from the black surround: its soft edge is a sharp, dark ring (px at 640).
BLACK_MARGIN = 12
# Below this share of measurable pixels there is nothing to judge focus on.
MIN_FOCUS_AREA = 0.01

# The radius (px of a 640-px copy) over which the local glass level is taken: wider than a white cell
# (25-40 px across), far narrower than the lamp's falloff.
CONTENT_RADIUS = 48

PROBLEMS = ("too dark", "overexposed", "colour saturated", "empty field", "blurred")

# What each problem means at the microscope and what to do about it: one line each, shown on the capture page
# to the technician and to the pathologist with the frame (the only place this wording lives).
ADVICE = {
    "too dark": "Too dark: turn the lamp up or open the condenser diaphragm, then capture again.",
    "overexposed": "Too bright: the cells wash out; turn the lamp down or shorten the exposure, then capture again.",
    "colour saturated": "Colours clipped: lower the lamp or the camera gain, or check the white balance.",
    "empty field": "No cells in view: move the slide to a field with cells, then capture again.",
    "blurred": "Out of focus: turn the fine focus until the cell edges are sharp, then capture again.",
}
assert set(ADVICE) == set(PROBLEMS)


def advice(problems) -> list[str]:
    """One line of advice per known problem, in PROBLEMS order (an unknown one is named as it is)."""
    problems = list(problems or [])
    known = [ADVICE[p] for p in PROBLEMS if p in problems]
    return known + [f"{p}: capture the field again." for p in problems if p not in ADVICE]


@dataclass(frozen=True)
class QualityThresholds:
    """Limits a usable frame must meet (figures below: ``python -m model_conversion.detection_conditions``).

    Measured on the real frames (ALL-IDB1: 45 frames at 2592×1944 /
    1712×1368; BCCD: 364 frames at 640×480) and frames derived from them
    (``model_conversion.frame_variants``): white clipped background, green /
    blue / yellow light, cells 25-40 px across, and bad ones.

    * min_focus (Laplacian variance near the objects, grey levels²): real
      frames 5.4 (BCCD, soft by nature) .. 170 (ALL-IDB1); white-background
      and low-resolution copies score higher (sharper per pixel), casts about
      the same; BCCD frames resampled to 2592×1944 >= 3.6. Gaussian defocus
      of sigma 4 px at 640 px: at most 3.0 (ALL-IDB1), 2.2 (BCCD).
    * min_background: grey level of the glass; real frames 127 .. 210; at 15 %
      exposure at most 31.
    * max_dark_fraction: black pixels; 0 on every real frame. Up to half of a
      frame may be black: an eyepiece camera's round field of view leaves
      black corners (about 40 % of a 4:3 frame when the circle touches its top
      and bottom).
    * max_clipped_fraction: white-clipped share of the lit field; 0 on the
      real frames, 0.28 .. 0.67 with a white, clipped background (another
      laboratory's thin smears: ~0.30); with the glass at 2× the clipping
      level (blown out) at least 0.85.
    * min_unstained_share, applied once at least min_clipped_for_washout of
      the field clips: real frames keep >= 0.59 of their objects unstained
      (red cells, cytoplasm), white-background copies >= 0.23; blown out, the
      red cells are gone: <= 0.14.
    * max_colour_clipped: share of object pixels with a channel clipped
      where the glass is not, or crushed to 0: real frames <= 0.0006, casts
      <= 0.002, white backgrounds 0; colour pushed 4× away from grey: BCCD
      >= 0.05, ALL-IDB1 0.002 .. 0.24 (its palest frames barely clip even
      then and about half of them pass: their colour is still measurable).
    * max_glass_chroma_clip: the glass itself clips in one channel while
      another stays below this grey level (white balance so far off that one
      channel saturates while another is underexposed).
    * min_object_fraction: share of the lit field covered by objects; real
      frames >= 0.07; a blank field 0.
    """

    min_focus: float = 3.3
    min_background: float = 60.0
    max_dark_fraction: float = 0.5
    max_clipped_fraction: float = 0.8
    min_clipped_for_washout: float = 0.25
    min_unstained_share: float = 0.15
    max_colour_clipped: float = 0.01
    max_glass_chroma_clip: float = 190.0
    min_object_fraction: float = 0.01  # applies to content_fraction (against the local glass level)


@dataclass(frozen=True)
class QualityReport:
    focus: float
    brightness: float  # mean grey level of the frame, 0..255 (for the record)
    dark_fraction: float
    bright_fraction: float  # share of the frame clipped white (every channel >= CLIP_LEVEL)
    usable: bool
    problems: tuple[str, ...]  # subset of PROBLEMS, in that order
    background: float = 0.0  # grey level of the glass
    object_fraction: float = 0.0
    stained_fraction: float = 0.0
    unstained_share: float = 0.0
    colour_clipped_fraction: float = 0.0
    content_fraction: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """JSON-safe summary, rounded to what is meaningful."""
        return {
            "focus": round(float(self.focus), 2),
            "brightness": round(float(self.brightness), 1),
            "dark_fraction": round(float(self.dark_fraction), 4),
            "bright_fraction": round(float(self.bright_fraction), 4),
            "background": round(float(self.background), 1),
            "object_fraction": round(float(self.object_fraction), 4),
            "stained_fraction": round(float(self.stained_fraction), 4),
            "unstained_share": round(float(self.unstained_share), 4),
            "colour_clipped_fraction": round(float(self.colour_clipped_fraction), 4),
            "content_fraction": round(float(self.content_fraction), 4),
            "usable": bool(self.usable),
            "problems": list(self.problems),
        }


def working_copy(rgb: np.ndarray, halvings: Halvings | None = None) -> np.ndarray:
    """RGB uint8 copy with the longer side at most WORKING_SIZE pixels (a gray frame is made RGB).

    ``halvings``: the RGB frame's halvings when cell finding shares them."""
    if not (rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[2] == 3)):
        raise ValueError(f"expected an H×W×3 RGB or H×W gray image, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {rgb.dtype}")
    if rgb.ndim == 2 and min(rgb.shape) >= 1:
        rgb = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_GRAY2RGB)
    h, w = rgb.shape[:2]
    if min(h, w) < 1:
        raise ValueError(f"empty image of shape {rgb.shape}")
    if halvings is None or halvings.levels[0] is not rgb:
        halvings = Halvings(np.ascontiguousarray(rgb))
    out = halved_below(rgb, WORKING_SIZE, halvings)  # halving with INTER_AREA is fast
    scale = WORKING_SIZE / max(out.shape[:2])
    if scale < 1.0:
        size = (max(1, round(out.shape[1] * scale)), max(1, round(out.shape[0] * scale)))
        out = cv2.resize(out, size, interpolation=cv2.INTER_AREA)
    return out


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _near(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius < 1 or not mask.any():
        return mask
    return cv2.dilate(mask.view(np.uint8), _disc(radius)).view(bool)


def local_glass(gray: np.ndarray, radius: int) -> np.ndarray:
    """The glass level around each pixel: a grey closing with a disc of ``radius`` px fills in every darker
    object narrower than the disc and leaves a lamp's smooth falloff as it is (a closing keeps a ramp or a
    dome unchanged). Computed on a quarter-size copy (cheap at any radius)."""
    small = cv2.resize(gray, (max(1, gray.shape[1] // 4), max(1, gray.shape[0] // 4)), interpolation=cv2.INTER_AREA)
    r = max(1, radius // 4)
    # Odd reflection continues the falloff past the border (a plain copy of the border would make the
    # border pixels look darker than their surround on a sloping field).
    padded = np.pad(small.astype(np.float32), 2 * r, mode="reflect", reflect_type="odd")
    top = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, _disc(r))[2 * r:-2 * r, 2 * r:-2 * r]
    return cv2.resize(top, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_LINEAR)


def focus_score(gray: np.ndarray, objects: np.ndarray, excluded: np.ndarray, margin: int) -> float:
    """Variance of the Laplacian of ``gray`` near ``objects``, away from ``excluded`` pixels (see module doc)."""
    lap = cv2.Laplacian(gray.astype(np.float32), cv2.CV_32F, ksize=1)
    near = _near(objects, margin) & ~_near(excluded, margin)
    if near.mean() < MIN_FOCUS_AREA:
        return 0.0
    return float(lap[near].var())


def assess_quality(rgb: np.ndarray, thresholds: QualityThresholds = QualityThresholds(),
                   halvings: Halvings | None = None) -> QualityReport:
    """Measure exposure, colour, content and focus of an H×W×3 uint8 RGB frame and say whether it is usable.

    ``halvings``: the frame's halvings (``morphology.Halvings``) when cell finding shares them."""
    work = working_copy(rgb, halvings)
    gray = cv2.cvtColor(work, cv2.COLOR_RGB2GRAY)
    n = gray.size
    channels = cv2.split(work)
    lowest = cv2.min(cv2.min(channels[0], channels[1]), channels[2])
    highest = cv2.max(cv2.max(channels[0], channels[1]), channels[2])
    black = gray < DARK_LEVEL
    white = lowest >= CLIP_LEVEL
    lit = ~black
    n_lit = max(1, int(np.count_nonzero(lit)))
    brightness = float(gray.mean())
    dark_fraction = float(np.count_nonzero(black)) / n
    bright_fraction = float(np.count_nonzero(white)) / n
    clipped_fraction = float(np.count_nonzero(white)) / n_lit

    glass = glass_colour(work, gray)
    background = float(glass @ np.array([0.299, 0.587, 0.114]))
    balanced = white_balanced(work, glass)
    balanced_gray = cv2.cvtColor(balanced, cv2.COLOR_RGB2GRAY)
    score = cv2.GaussianBlur(nucleus_score(balanced), (0, 0), 1.0)
    stained = (score > stain_threshold(score)) & lit
    bal = cv2.split(balanced)
    chroma = cv2.subtract(cv2.max(cv2.max(bal[0], bal[1]), bal[2]), cv2.min(cv2.min(bal[0], bal[1]), bal[2]))
    objects = (stained | (balanced_gray < (1.0 - OBJECT_CONTRAST) * GLASS_LEVEL) | (chroma >= OBJECT_CHROMA)) & lit
    n_objects = int(np.count_nonzero(objects))
    object_fraction = n_objects / n_lit
    unit = max(gray.shape) / WORKING_SIZE
    local = local_glass(balanced_gray, round(CONTENT_RADIUS * unit))
    content = (stained | (balanced_gray < (1.0 - OBJECT_CONTRAST) * local) | (chroma >= OBJECT_CHROMA)) & lit
    content_fraction = float(np.count_nonzero(content)) / n_lit
    stained_fraction = float(np.count_nonzero(stained)) / n_lit
    unstained_share = float(np.count_nonzero(objects & ~stained)) / max(1, n_objects)
    clipped_colour = (lowest <= 4) & (highest >= 64)  # a channel crushed to 0 in a lit pixel
    for channel, level in zip(channels, glass):
        if level < GLASS_HEADROOM:
            clipped_colour |= channel >= CLIP_LEVEL
    colour_clipped = float(np.count_nonzero(clipped_colour & objects)) / max(1, n_objects)

    focus = focus_score(gray, objects & ~_near(black, round(BLACK_MARGIN * unit)), white,
                        max(1, round(FOCUS_MARGIN * unit)))

    t = thresholds
    problems: list[str] = []
    if background < t.min_background or dark_fraction > t.max_dark_fraction:
        problems.append("too dark")
    if clipped_fraction > t.max_clipped_fraction or (
            clipped_fraction >= t.min_clipped_for_washout and unstained_share < t.min_unstained_share):
        problems.append("overexposed")
    glass_channel_clipped = glass.max() >= CLIP_LEVEL and glass.min() < t.max_glass_chroma_clip
    if not problems and (colour_clipped > t.max_colour_clipped or glass_channel_clipped):
        problems.append("colour saturated")
    if not problems and content_fraction < t.min_object_fraction:
        problems.append("empty field")
    if not problems and focus < t.min_focus:
        problems.append("blurred")
    return QualityReport(
        focus=focus, brightness=brightness, dark_fraction=dark_fraction, bright_fraction=bright_fraction,
        usable=not problems, problems=tuple(problems), background=background, object_fraction=object_fraction,
        stained_fraction=stained_fraction, unstained_share=unstained_share,
        colour_clipped_fraction=colour_clipped, content_fraction=content_fraction,
    )
