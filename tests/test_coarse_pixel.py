"""The one definition of a coarse pixel: the mean of the valid fine pixels under it."""

import numpy as np
import torch

from stfusion.data.coarse_pixel import block_mean, valid_fraction


def test_block_mean_of_uniform_blocks_is_exact_and_keeps_the_array_kind():
    image = np.repeat(np.repeat(np.float32([[[0.1, 0.2], [0.3, 0.7]]]), 5, axis=1), 5, axis=2)
    mean = block_mean(image, 5)
    assert isinstance(mean, np.ndarray) and mean.dtype == np.float64 and mean.shape == (1, 2, 2)
    np.testing.assert_array_equal(mean, np.float32([[[0.1, 0.2], [0.3, 0.7]]]).astype(np.float64))
    assert isinstance(block_mean(torch.from_numpy(image), 5), torch.Tensor)


def test_block_mean_averages_only_valid_pixels_and_is_nan_where_none_is():
    rng = np.random.default_rng(0)
    image = rng.random((3, 8, 12), dtype=np.float32)
    valid = rng.random((8, 12)) > 0.3
    valid[:4, :4] = False
    mean = block_mean(image, 4, valid)
    assert np.isnan(mean[:, 0, 0]).all()
    for y, x in [(0, 1), (1, 2), (1, 0)]:
        block = (slice(None), slice(4 * y, 4 * y + 4), slice(4 * x, 4 * x + 4))
        expected = image[block][:, valid[block[1:]]].astype(np.float64).mean(axis=1)
        np.testing.assert_allclose(mean[:, y, x], expected, rtol=1e-12)


def test_rows_and_columns_past_the_last_whole_block_are_left_out():
    image = np.arange(2 * 7 * 9, dtype=np.float32).reshape(2, 7, 9)
    np.testing.assert_array_equal(block_mean(image, 3), block_mean(image[:, :6, :9], 3))
    assert block_mean(image, 3).shape == (2, 2, 3)


def test_valid_fraction_counts_the_share_of_valid_fine_pixels():
    valid = np.zeros((4, 4), bool)
    valid[:2, :1] = True
    np.testing.assert_array_equal(valid_fraction(valid, 2), [[0.5, 0.0], [0.0, 0.0]])
