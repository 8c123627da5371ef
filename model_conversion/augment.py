"""Training-time augmentation of canonical cell images (TensorFlow ops).

Cells have no orientation, microscopes differ in stain, focus, resolution
and magnification: flips, 90° rotations, small zoom, stain jitter,
blur/resolution loss and sensor noise. The black background outside the
cell mask stays black, as device.core.cellprep produces it.

Two named recipes (the run's ``augment_recipe``). "colour-jitter", the
shipped model's: RGB brightness/contrast/saturation/hue jitter and
per-channel RGB gains. "od-stain", tried next: stain variation simulated
where it arises: in optical density
(Beer-Lambert, OD = -log10(I / I0)), where a thicker or longer stain scales
each colour's absorbance. Per-channel OD gain and offset (after Tellez et
al., Med. Image Anal. 2019, "Quantifying the effects of data augmentation
and stain color normalization") model the residual differences that
Reinhard normalisation leaves between laboratories; a small share of
greyscale cells pushes the network towards chromatin texture and shape
rather than hue.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AugmentStrength:
    od_gain: float = 0.2  # per-channel optical-density gain in 1 ± od_gain
    od_offset: float = 0.05  # per-channel optical-density offset in ± od_offset
    greyscale_share: float = 0.15  # share of cells shown without colour


RECIPES = ("colour-jitter", "od-stain", "lab", "lab-light")
DEFAULT_RECIPE = "colour-jitter"  # the shipped model's; also what runs from before recipes had names used


def augment_batch(images, recipe: str = DEFAULT_RECIPE, strength: AugmentStrength = AugmentStrength()):
    """images: float32 (B, S, S, 3) in 0..255 → augmented batch, same shape.

    ``recipe`` "colour-jitter": RGB colour jitter and per-channel RGB gains;
    "od-stain": stain jitter in optical density, colour jitter and a
    greyscale share (``strength``).
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown augmentation recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    if recipe.startswith("lab"):
        return lab_batch(images, heavy=recipe == "lab")
    import tensorflow as tf

    shape = tf.shape(images)
    batch, size = shape[0], shape[1]
    x = images / 255.0

    # Orientation: flips and 90° rotations.
    x = tf.image.random_flip_left_right(x)
    x = tf.image.random_flip_up_down(x)
    k = tf.random.uniform([], 0, 4, dtype=tf.int32)
    x = tf.image.rot90(x, k)
    mask = tf.cast(tf.reduce_max(x, axis=-1, keepdims=True) > 0, tf.float32)

    # Scale: zoom in or out by up to ~15 % (cell-filling crop varies by segmentation).
    scale = tf.random.uniform([], 0.85, 1.15)
    new = tf.cast(tf.cast(size, tf.float32) * scale, tf.int32)
    x = tf.image.resize(x, [new, new])
    mask = tf.image.resize(mask, [new, new], method="nearest")
    x = tf.image.resize_with_crop_or_pad(x, size, size)
    mask = tf.image.resize_with_crop_or_pad(mask, size, size)

    # Resolution / focus: downsample then upsample a random half of the batch.
    low = tf.cast(tf.cast(size, tf.float32) * tf.random.uniform([], 0.45, 1.0), tf.int32)
    blurred = tf.image.resize(tf.image.resize(x, [low, low], antialias=True), [size, size])
    pick = tf.cast(tf.random.uniform([batch, 1, 1, 1]) < 0.5, tf.float32)
    x = pick * blurred + (1.0 - pick) * x

    if recipe == "od-stain":
        x = stain_jitter(x, strength)
        x = tf.map_fn(_colour_jitter, x)  # camera and display: brightness, contrast, saturation, hue
        x = _some_greyscale(x, strength.greyscale_share)
    else:
        x = tf.map_fn(_colour_jitter, x)
        x = x * tf.random.uniform([batch, 1, 1, 3], 0.88, 1.12)  # stain balance differs between labs
    x = x + tf.random.normal(tf.shape(x), stddev=tf.random.uniform([], 0.0, 0.02))
    x = tf.clip_by_value(x, 0.0, 1.0) * mask
    return x * 255.0


def stain_jitter(x, strength: AugmentStrength = AugmentStrength()):
    """Per-cell, per-channel gain and offset in optical density (x in 0..1)."""
    import tensorflow as tf

    batch = tf.shape(x)[0]
    floor = 1.0 / 255.0
    density = -tf.math.log(tf.maximum(x, floor))
    gain = tf.random.uniform([batch, 1, 1, 3], 1.0 - strength.od_gain, 1.0 + strength.od_gain)
    offset = tf.random.uniform([batch, 1, 1, 3], -strength.od_offset, strength.od_offset)
    return tf.clip_by_value(tf.exp(-tf.maximum(density * gain + offset, 0.0)), 0.0, 1.0)


def _some_greyscale(x, share: float):
    import tensorflow as tf

    grey = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(x))
    pick = tf.cast(tf.random.uniform([tf.shape(x)[0], 1, 1, 1]) < share, tf.float32)
    return pick * grey + (1.0 - pick) * x


def _colour_jitter(image):
    import tensorflow as tf

    image = tf.image.random_brightness(image, 0.08)
    image = tf.image.random_contrast(image, 0.8, 1.2)
    image = tf.image.random_saturation(image, 0.75, 1.25)
    image = tf.image.random_hue(image, 0.04)
    return image


def lab_batch(images, heavy: bool = True, strength: AugmentStrength = AugmentStrength()):
    """Laboratory augmentation of unmasked fixed-field cells (``device.core.fieldprep``), 0..255 floats.

    Orientation (flips, 90° turns) and a scale jitter of ±10 % only (the
    field keeps true size: a larger jitter would erase the size cue; ±10 %
    is about the spread of the red-cell estimate), then, with ``heavy``:
    stain jitter in optical density, brightness/contrast/saturation/hue,
    a 15 % greyscale share, blur or resolution loss on half the cells
    (defocus, lower magnification, smaller sensors), JPEG recompression at
    quality 30-95 on a third, and sensor noise. ``heavy=False`` ("lab-light")
    keeps orientation, scale jitter and the old colour jitter only, so the
    cross-source table can say whether the laboratory part earns its keep.
    No mask: the background is part of the field.
    """
    import tensorflow as tf

    shape = tf.shape(images)
    batch, size = shape[0], shape[1]
    x = images / 255.0
    x = tf.image.random_flip_left_right(x)
    x = tf.image.random_flip_up_down(x)
    x = tf.image.rot90(x, tf.random.uniform([], 0, 4, dtype=tf.int32))
    scale = tf.random.uniform([], 0.9, 1.1)
    new = tf.cast(tf.cast(size, tf.float32) * scale, tf.int32)
    x = tf.image.resize(x, [new, new])
    # Zooming out leaves a margin: fill it by reflection rather than black.
    pad = tf.maximum(size - new, 0)
    x = tf.pad(x, [[0, 0], [pad // 2, pad - pad // 2], [pad // 2, pad - pad // 2], [0, 0]], mode="SYMMETRIC")
    x = tf.image.resize_with_crop_or_pad(x, size, size)
    if not heavy:
        x = tf.map_fn(_colour_jitter, x)
        x = x * tf.random.uniform([batch, 1, 1, 3], 0.88, 1.12)
        return tf.clip_by_value(x, 0.0, 1.0) * 255.0
    x = stain_jitter(x, strength)
    x = tf.map_fn(_colour_jitter, x)
    x = _some_greyscale(x, strength.greyscale_share)
    low = tf.cast(tf.cast(size, tf.float32) * tf.random.uniform([], 0.35, 1.0), tf.int32)
    blurred = tf.image.resize(tf.image.resize(x, [low, low], antialias=True), [size, size])
    pick = tf.cast(tf.random.uniform([batch, 1, 1, 1]) < 0.5, tf.float32)
    x = tf.clip_by_value(pick * blurred + (1.0 - pick) * x, 0.0, 1.0)
    jpeg = tf.map_fn(lambda im: tf.image.random_jpeg_quality(im, 30, 95), x)
    pick = tf.cast(tf.random.uniform([batch, 1, 1, 1]) < 0.33, tf.float32)
    x = pick * jpeg + (1.0 - pick) * x
    x = x + tf.random.normal(tf.shape(x), stddev=tf.random.uniform([], 0.0, 0.02))
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0
