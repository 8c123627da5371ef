"""Training augmentation: stain jitter in optical density, greyscale share, black background kept."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="tensorflow-cpu (the train extra) is not installed")

from model_conversion.augment import AugmentStrength, _some_greyscale, augment_batch, stain_jitter  # noqa: E402


def _cells(count: int = 16, size: int = 48, seed: int = 0) -> np.ndarray:
    """Float 0..255 cells: a coloured disc on a black background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    cells = np.zeros((count, size, size, 3), np.float32)
    cells[:, disc] = rng.uniform(40, 220, (count, int(disc.sum()), 3))
    return cells


def test_no_jitter_strength_is_identity():
    x = _cells() / 255.0
    x = np.clip(x, 1 / 255.0, 1.0)  # black would sit at the floor of the density scale
    out = stain_jitter(tf.constant(x), AugmentStrength(od_gain=0.0, od_offset=0.0)).numpy()
    np.testing.assert_allclose(out, x, atol=1e-5)


def test_stain_jitter_scales_optical_density_within_its_bounds():
    x = np.clip(_cells(count=64) / 255.0, 1 / 255.0, 0.99)
    gain = 0.2
    out = stain_jitter(tf.constant(x), AugmentStrength(od_gain=gain, od_offset=0.0)).numpy()
    ratio = np.log(out) / np.log(x)  # OD' / OD, one constant per cell and channel
    per_cell = ratio.reshape(64, -1, 3)
    assert per_cell.min() >= 1 - gain - 1e-3 and per_cell.max() <= 1 + gain + 1e-3
    # One gain per cell and channel (a stain change, not pixel noise) ...
    assert np.ptp(per_cell, axis=1).max() < 1e-3
    # ... and different cells get different gains.
    assert np.ptp(per_cell[:, 0, :], axis=0).min() > 0.05


def test_greyscale_share_one_removes_colour_and_zero_keeps_it():
    x = tf.constant(_cells() / 255.0)
    grey = _some_greyscale(x, 1.0).numpy()
    np.testing.assert_allclose(grey[..., 0], grey[..., 1], atol=1e-6)
    np.testing.assert_allclose(grey[..., 1], grey[..., 2], atol=1e-6)
    np.testing.assert_array_equal(_some_greyscale(x, 0.0).numpy(), x.numpy())


@pytest.mark.parametrize("recipe", ["colour-jitter", "od-stain"])
def test_augmented_cells_keep_a_black_background_and_the_pixel_range(recipe):
    tf.random.set_seed(7)
    cells = _cells(count=32)
    out = augment_batch(tf.constant(cells), recipe).numpy()
    assert out.shape == cells.shape
    assert out.min() >= 0.0 and out.max() <= 255.0
    corners = out[:, :4, :4, :]
    assert np.all(corners == 0.0), "the background outside the cell must stay black, as cellprep makes it"
    assert np.abs(out - cells).mean() > 1.0, "augmentation changed nothing"


def test_an_unknown_recipe_is_named_in_the_error():
    with pytest.raises(ValueError, match="'hed'"):
        augment_batch(tf.constant(_cells(count=2)), "hed")
