"""Training-time augmentation of canonical cell images (TensorFlow ops).

Cells have no orientation, microscopes differ in stain, focus, resolution
and magnification: flips, 90° rotations, small zoom, colour/stain jitter,
blur/resolution loss and sensor noise. The black background outside the
cell mask stays black, as device.cellprep produces it.
"""

from __future__ import annotations


def augment_batch(images):
    """images: float32 (B, S, S, 3) in 0..255 → augmented batch, same shape."""
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

    # Stain/colour: per-image brightness, contrast, saturation, hue and a
    # per-channel gain (stain balance differs between labs).
    x = tf.map_fn(_colour_jitter, x)
    gains = tf.random.uniform([batch, 1, 1, 3], 0.88, 1.12)
    x = x * gains
    x = x + tf.random.normal(tf.shape(x), stddev=tf.random.uniform([], 0.0, 0.02))
    x = tf.clip_by_value(x, 0.0, 1.0) * mask
    return x * 255.0


def _colour_jitter(image):
    import tensorflow as tf

    image = tf.image.random_brightness(image, 0.08)
    image = tf.image.random_contrast(image, 0.8, 1.2)
    image = tf.image.random_saturation(image, 0.75, 1.25)
    image = tf.image.random_hue(image, 0.04)
    return image
