"""Scene statistics: the split of variance between space and time, and the semivariogram."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from stfusion.data.statistics import semivariogram, variance_components, variance_partition


def cube_of(images: np.ndarray, valid: np.ndarray | None = None) -> xr.Dataset:
    """A minimal datacube of one band ``nir`` from (time, y, x) reflectance."""
    t, h, w = images.shape
    valid = np.ones((t, h, w), np.uint8) if valid is None else valid
    stored = np.rint(images * 10000).astype(np.int16)[:, None]
    return xr.Dataset({"fine": (("time", "band", "y", "x"), stored), "valid": (("time", "y", "x"), valid)},
                      coords={"time": pd.date_range("2001-01-01", periods=t), "band": ["nir"]})


def test_a_static_scene_varies_in_space_only_and_a_uniform_one_in_time_only():
    rng = np.random.default_rng(0)
    field = rng.uniform(0.1, 0.5, (1, 30, 30))
    assert variance_components(cube_of(np.repeat(field, 4, axis=0)), "nir")["spatial_share"] == 1.0
    uniform = np.broadcast_to(rng.uniform(0.1, 0.5, (4, 1, 1)), (4, 30, 30))
    assert variance_components(cube_of(uniform), "nir")["spatial_share"] == 0.0


def test_pixels_invalid_on_any_date_are_left_out():
    images = np.repeat(np.linspace(0.1, 0.3, 20)[None, None, :], 20, axis=1).repeat(3, axis=0)
    images[1, :5] = 0.9  # a cloud on one date
    valid = np.ones((3, 20, 20), np.uint8)
    valid[1, :5] = 0
    assert variance_components(cube_of(images, valid), "nir")["spatial_share"] == 1.0


def test_the_semivariogram_is_flat_for_noise_and_rises_for_a_smooth_field():
    rng = np.random.default_rng(1)
    noise = semivariogram(cube_of(rng.uniform(0.1, 0.5, (2, 200, 200))), "nir", lags=(1, 8))
    assert noise[1] == pytest.approx(1.0, abs=0.03) and noise[8] == pytest.approx(1.0, abs=0.03)
    y = np.arange(200)
    ramp = np.broadcast_to(0.1 + 0.002 * y[None, :, None] + 0.001 * y[None, None, :], (2, 200, 200))
    smooth = semivariogram(cube_of(np.ascontiguousarray(ramp)), "nir", lags=(1, 8, 32))
    assert smooth[1] < smooth[8] < smooth[32]


def test_the_partition_separates_a_pattern_a_scene_wide_change_and_local_change():
    rng = np.random.default_rng(2)
    pattern = rng.uniform(0.1, 0.5, (1, 30, 30))
    trend = np.linspace(0.0, 0.2, 5)[:, None, None]
    static = variance_partition(cube_of(np.repeat(pattern, 5, axis=0)), "nir")
    assert static["space"] == pytest.approx(1.0) and static["time"] == pytest.approx(0.0, abs=1e-12)
    both = variance_partition(cube_of(pattern + trend), "nir")
    assert both["interaction"] == pytest.approx(0.0, abs=1e-3)  # every pixel changes alike (up to rounding)
    assert both["space"] + both["time"] == pytest.approx(1.0, abs=1e-3) and both["time"] > 0.2
    pattern = rng.uniform(0.3, 0.5, (1, 30, 30))  # half the rows brighten, half darken: var(trend) / total
    centred = trend - trend.mean()
    local = np.where(np.arange(30)[None, :, None] < 15, pattern + centred, pattern - centred)
    parts = variance_partition(cube_of(local), "nir")
    assert parts["interaction"] == pytest.approx(0.005 / (0.005 + 0.2**2 / 12), abs=0.03) and parts["time"] == pytest.approx(0.0, abs=1e-3)
