"""The synthetic coarse sensor: each effect is present at the requested magnitude, and with every
effect off the data are those of the first study versions, bit for bit."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import rasterio

from stfusion.data.coarse_sensor import date_calibration, geolocation_shift, simulate_coarse
from stfusion.data.synthetic import generate_dataset
from stfusion.errors import ConfigError

R = 20  # coarse pixel side in fine pixels, as in the study


def raster_digest(folder: Path) -> str:
    """sha256 over every raster's name and pixel values (not its file bytes: metadata may change)."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*/*.tif")):
        with rasterio.open(path) as src:
            digest.update(path.relative_to(folder).as_posix().encode())
            digest.update(src.read().tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("dataset, config, expected", [
    ("cia-sim", {"height": 120, "width": 100, "n_dates": 5},
     "93f620a586f30da734755d65e593590a696b71abbaa5a6a59af0d33af31553e6"),
    ("lgc-sim", {"height": 160, "width": 140, "n_dates": 6},
     "a612c93555d80199ac2df0beb0d2eb53b07c7bc989b6e00cbc81cd2308f25577"),
])
def test_the_clean_sensor_reproduces_the_first_versions_data_bit_for_bit(tmp_path, dataset, config, expected):
    # the digests were computed with the generator before the sensor model grew (commit 045c10e)
    generate_dataset(dataset, tmp_path / dataset, config)
    assert raster_digest(tmp_path / dataset) == expected


def ramp(height: int = 200, width: int = 200, slope_y: float = 2e-4, slope_x: float = 3e-4) -> np.ndarray:
    y, x = np.mgrid[:height, :width].astype(np.float32)
    return np.broadcast_to(0.1 + slope_y * y + slope_x * x, (2, height, width)).astype(np.float32)


def interior_blocks(image: np.ndarray, margin: int = 2) -> np.ndarray:
    """One value per coarse pixel (its top-left fine pixel), away from the mirrored scene edges."""
    return image[:, margin * R:-margin * R:R, margin * R:-margin * R:R]


def test_a_geolocation_shift_moves_the_coarse_image_by_the_requested_distance():
    # on a linear ramp, shifting by (dy, dx) changes every interior coarse mean by -(slope_y dy + slope_x dx)
    fine, kwargs = ramp(), dict(psf_sigma=0.5, gain=1.0, offset=0.0)
    base = simulate_coarse(fine, R, **kwargs)
    for dy, dx in [(2.0, 0.0), (0.0, -1.5), (1.2, 2.6)]:
        moved = simulate_coarse(fine, R, shift=(dy, dx), **kwargs)
        change = interior_blocks(moved - base)
        assert np.allclose(change, -(2e-4 * dy + 3e-4 * dx), atol=2e-6), (dy, dx)


def test_geolocation_errors_have_the_requested_spread():
    rng = np.random.default_rng(5)
    shifts = np.array([geolocation_shift(rng, 2.0) for _ in range(4000)])
    assert np.std(shifts, axis=0) == pytest.approx([2.0, 2.0], rel=0.05)
    assert np.abs(shifts.mean(axis=0)).max() < 0.1


@pytest.mark.parametrize("grid_offset", [(0, 0), (7, 0), (3, 13), (19, 1)])
def test_coarse_pixel_edges_lie_at_the_grid_offset(grid_offset):
    rng = np.random.default_rng(1)
    fine = rng.uniform(0.0, 0.5, (1, 120, 100)).astype(np.float32)
    out = simulate_coarse(fine, R, psf_sigma=0.0, gain=1.0, offset=0.0, grid_offset=grid_offset)
    oy, ox = grid_offset
    for top in range(oy, 120 - R + 1, R):  # every whole coarse pixel: one value, the mean of its fine pixels
        for left in range(ox, 100 - R + 1, R):
            block = out[0, top:top + R, left:left + R]
            assert np.all(block == block[0, 0])
            assert block[0, 0] == pytest.approx(fine[0, top:top + R, left:left + R].mean(), abs=1e-6)
    if oy:  # the pixel rows either side of an edge belong to different coarse pixels
        assert np.all(out[0, oy - 1, :] != out[0, oy, :])


def line_response(psf: str, position: int) -> float:
    """The share of a bright column at x = ``position`` that the coarse pixel over [2R, 3R) receives."""
    fine = np.zeros((1, 3 * R, 6 * R), np.float32)
    fine[0, :, position] = 1.0
    out = simulate_coarse(fine, R, psf_sigma=0.0, gain=1.0, offset=0.0, psf=psf)
    return float(out[0, R, 2 * R] * R)  # a coarse pixel's mean over R columns, times R: the share


def test_the_scan_psf_is_a_triangle_two_coarse_pixels_wide_along_x():
    centre = 2 * R + R // 2
    for offset in (0, R // 4, R // 2, 3 * R // 4, R, 5 * R // 4):
        triangle = max(0.0, 1 - offset / R)
        assert line_response("scan", centre + offset) == pytest.approx(triangle, abs=1.5 / R), offset  # even box: half-pixel steps
        box = 1.0 if offset < R // 2 else 0.0
        assert line_response("gaussian", centre + offset) == pytest.approx(box, abs=1e-6), offset
    # along y (the track) the scan PSF adds nothing: a bright row stays in its coarse pixel
    fine = np.zeros((1, 6 * R, 3 * R), np.float32)
    fine[0, 2 * R + R // 2, :] = 1.0
    out = simulate_coarse(fine, R, psf_sigma=0.0, gain=1.0, offset=0.0, psf="scan")
    assert out[0, 2 * R, R] * R == pytest.approx(1.0, abs=1e-6) and out[0, R, R] == 0.0


def test_date_calibration_draws_have_the_requested_spread():
    rng = np.random.default_rng(2)
    gain0, offset0 = np.array([0.97, 1.03]), np.array([0.01, -0.008])
    draws = [date_calibration(rng, gain0, offset0, gain_sd=0.02, offset_sd=0.005, bands=2) for _ in range(5000)]
    gains, offsets = np.array([g for g, _ in draws]), np.array([o for _, o in draws])
    assert np.std(gains / gain0 - 1, axis=0) == pytest.approx([0.02, 0.02], rel=0.05)
    assert np.std(offsets - offset0, axis=0) == pytest.approx([0.005, 0.005], rel=0.05)
    assert np.abs(offsets.mean(axis=0) - offset0).max() < 3e-4


def test_noise_has_the_requested_spread_at_coarse_resolution():
    fine = np.full((1, 400, 400), 0.2, np.float32)
    out = simulate_coarse(fine, R, psf_sigma=0.5, gain=1.0, offset=0.0, noise=0.004, rng=np.random.default_rng(3))
    assert np.std(out[0, ::R, ::R] - 0.2) == pytest.approx(0.004, rel=0.2)  # 400 coarse pixels


@pytest.mark.parametrize("setting", [{"geolocation_m": 50.0}, {"grid_offset": [5, 11]}, {"psf": "scan"},
                                     {"date_gain_sd": 0.02}, {"date_offset_sd": 0.005}])
def test_each_sensor_setting_changes_the_coarse_files_only(tmp_path, setting):
    small = {"height": 120, "width": 100, "n_dates": 2}
    clean = generate_dataset("cia-sim", tmp_path / "clean", small)
    other = generate_dataset("cia-sim", tmp_path / "other", {**small, **setting})
    date = clean.date_list()[0]
    assert other.files[f"fine/{date}.tif"] == clean.files[f"fine/{date}.tif"]
    assert other.files[f"coarse/{date}.tif"] != clean.files[f"coarse/{date}.tif"]


@pytest.mark.parametrize("setting, key", [
    ({"psf": "airy"}, "download.synthetic.cia-sim.psf"),
    ({"grid_offset": [0, 20]}, "download.synthetic.cia-sim.grid_offset"),
    ({"grid_offset": [1.5, 0]}, "download.synthetic.cia-sim.grid_offset"),
    ({"geolocation_m": -1}, "download.synthetic.cia-sim.geolocation_m"),
    ({"date_gain_sd": "big"}, "download.synthetic.cia-sim.date_gain_sd"),
])
def test_bad_sensor_settings_name_the_parameter(tmp_path, setting, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        generate_dataset("cia-sim", tmp_path / "x", {"height": 120, "width": 100, "n_dates": 2, **setting})
    assert not (tmp_path / "x").exists()
