"""The synthetic CIA-like and LGC-like generator: determinism, format, sensor model, truth, errors."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.crs import CRS

from stfusion import BANDS
from stfusion.data import synthetic
from stfusion.data.coarse_pixel import block_mean
from stfusion.data.manifest import Manifest
from stfusion.data.raster import read_geotiff
from stfusion.data.coarse_sensor import simulate_coarse
from stfusion.data.synthetic import (
    COARSE_GAIN, COARSE_OFFSET, COVER_CLASSES, FLOOD_STAGES, SYNTHETIC_DEFAULTS, generate_dataset, synthetic_config,
)
from stfusion.errors import ConfigError

SMALL = {"height": 120, "width": 100, "n_dates": 5}
LGC_SMALL = {"height": 160, "width": 140, "n_dates": 6}
NIR, RED = BANDS.index("nir"), BANDS.index("red")
CLASS_ID = {name: key for key, name in COVER_CLASSES.items()}


@pytest.fixture(scope="module")
def cia(tmp_path_factory) -> Manifest:
    return generate_dataset("cia-sim", tmp_path_factory.mktemp("cia") / "cia-sim", SMALL)


@pytest.fixture(scope="module")
def lgc(tmp_path_factory) -> Manifest:
    return generate_dataset("lgc-sim", tmp_path_factory.mktemp("lgc") / "lgc-sim", LGC_SMALL)


def read(manifest: Manifest, date: str, role: str) -> np.ndarray:
    return read_geotiff(manifest.file(date, role)).data


def reflectance(manifest: Manifest, date: str, role: str = "fine") -> np.ndarray:
    return read(manifest, date, role).astype(np.float64) / manifest.reflectance_scale


def ndvi(image: np.ndarray) -> np.ndarray:
    return (image[NIR] - image[RED]) / (image[NIR] + image[RED])


# ---------------------------------------------------------------------------------------------
# Determinism and format


def test_same_seed_gives_identical_files_and_another_seed_differs(cia, tmp_path):
    again = generate_dataset("cia-sim", tmp_path / "again", SMALL)
    assert again.files == cia.files
    other = generate_dataset("cia-sim", tmp_path / "other", {**SMALL, "seed": cia.meta["config"]["seed"] + 1})
    fine = [f"fine/{date}.tif" for date in cia.date_list()]
    assert all(other.files[rel]["sha256"] != cia.files[rel]["sha256"] for rel in fine)


def test_manifest_lists_every_file_and_verifies(cia):
    cia.verify()
    assert cia.source == "synthetic" and cia.dataset == "cia-sim" and cia.ratio == 20
    assert cia.bands == list(BANDS)
    assert len(cia.files) == 4 * len(cia.dates)
    assert cia.meta["config"] == synthetic_config("cia-sim", SMALL)
    assert cia.meta["crs"] == "EPSG:32755"
    assert cia.meta["cover_classes"]["0"] == "water"


def test_dates_follow_the_real_calendar(cia):
    dates = cia.date_list()
    assert len(dates) == SMALL["n_dates"]
    assert dates[0] == "2001-10-08" and dates[-1] == "2002-05-04"
    assert set(dates) <= set(synthetic.CIA_DATES)


def test_lgc_keeps_the_flood_dates():
    for n in range(6, 15):
        dates = synthetic._pick_dates("lgc", n)
        assert len(dates) == n and dates[0] == "2004-04-16" and dates[-1] == "2005-04-03"
        assert set(FLOOD_STAGES) <= set(dates)


def test_images_are_int16_six_band_utm_25m_on_one_grid(cia):
    date = cia.date_list()[2]
    fine, coarse = read_geotiff(cia.file(date, "fine")), read_geotiff(cia.file(date, "coarse"))
    for raster in (fine, coarse):
        assert raster.data.shape == (6, 120, 100) and raster.data.dtype == np.int16
        assert raster.data.min() >= 1 and raster.data.max() <= 10000
        assert raster.nodata is None
    assert fine.grid.crs == CRS.from_epsg(32755)
    assert (fine.grid.transform.a, fine.grid.transform.e) == (25.0, -25.0)
    assert fine.grid.mismatch(coarse.grid) is None
    for role in ("cover", "change"):
        truth = read_geotiff(cia.file(date, role))
        assert truth.data.dtype == np.uint8 and fine.grid.mismatch(truth.grid) is None


def test_scene_is_near_the_site():
    from rasterio.warp import transform

    grid = synthetic._grid(synthetic._TEMPLATES["cia"], 2040, 1720)
    lon, lat = transform(grid.crs, "EPSG:4326", [grid.transform.c + 1720 * 12.5], [grid.transform.f - 2040 * 12.5])
    assert abs(lon[0] - 145.07) < 0.01 and abs(lat[0] + 34.00) < 0.01


# ---------------------------------------------------------------------------------------------
# Coarse sensor


def test_coarse_is_blockwise_constant_and_tracks_the_fine_blocks(cia):
    fine_means, calibrated = [], []
    for date in cia.date_list():
        coarse = reflectance(cia, date, "coarse")
        blocks = coarse.reshape(6, 6, 20, 5, 20)
        assert (blocks == blocks[:, :, :1, :, :1]).all()
        fine_means.append(block_mean(reflectance(cia, date), 20).reshape(6, -1))
        calibrated.append(((coarse[:, ::20, ::20] - np.reshape(COARSE_OFFSET, (6, 1, 1)))
                           / np.reshape(COARSE_GAIN, (6, 1, 1))).reshape(6, -1))
        for band in range(6):  # one small date has few blocks and the PSF mixes neighbours: a loose bound
            assert np.corrcoef(fine_means[-1][band], calibrated[-1][band])[0, 1] > 0.75, (date, BANDS[band])
            assert abs(calibrated[-1][band].mean() - fine_means[-1][band].mean()) < 0.003
    fine_means, calibrated = np.concatenate(fine_means, axis=1), np.concatenate(calibrated, axis=1)
    for band in range(6):  # over the whole series the coarse blocks follow the fine ones closely
        assert np.corrcoef(fine_means[band], calibrated[band])[0, 1] > 0.9, BANDS[band]


def test_simulate_coarse_of_a_uniform_image_is_gain_times_x_plus_offset():
    fine = np.broadcast_to(np.linspace(0.05, 0.3, 6)[:, None, None], (6, 60, 40)).astype(np.float32)
    out = simulate_coarse(fine, 20, psf_sigma=0.5, gain=COARSE_GAIN, offset=COARSE_OFFSET)
    expected = fine * np.reshape(COARSE_GAIN, (6, 1, 1)) + np.reshape(COARSE_OFFSET, (6, 1, 1))
    assert out.shape == fine.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


def test_misregistration_and_noise_change_the_coarse_image():
    rng = np.random.default_rng(0)
    fine = np.repeat(np.repeat(rng.uniform(0.05, 0.4, (6, 6, 4)), 10, axis=1), 10, axis=2).astype(np.float32)
    kwargs = dict(psf_sigma=0.5, gain=1.0, offset=0.0)
    base = simulate_coarse(fine, 20, **kwargs)
    assert np.abs(simulate_coarse(fine, 20, shift=(3.0, -4.0), **kwargs) - base).max() > 1e-3
    noisy = simulate_coarse(fine, 20, noise=0.01, rng=np.random.default_rng(1), **kwargs)
    assert 0.005 < np.std(noisy - base) < 0.02


def test_misregistration_and_noise_settings_reach_the_files(cia, tmp_path):
    moved = generate_dataset("cia-sim", tmp_path / "moved", {**SMALL, "n_dates": 2, "misregistration": 5.0,
                                                             "noise": 0.005})
    date = moved.date_list()[0]
    assert moved.files[f"fine/{date}.tif"] == cia.files[f"fine/{date}.tif"]
    assert moved.files[f"coarse/{date}.tif"] != cia.files[f"coarse/{date}.tif"]


# ---------------------------------------------------------------------------------------------
# Scene content and truth


def test_spectra_are_plausible(cia):
    cover = read(cia, cia.date_list()[0], "cover")[0]
    crops = np.isin(cover, [CLASS_ID["rice"], CLASS_ID["maize"]])
    peak = max(cia.date_list(), key=lambda d: ndvi(reflectance(cia, d))[crops].mean())
    image = reflectance(cia, peak)
    assert crops.any() and (image[NIR][crops] > image[RED][crops]).all()
    assert ndvi(image)[crops].mean() > 0.6
    water = cover == CLASS_ID["water"]
    assert water.any() and image[NIR][water].max() < 0.05


def test_cia_has_phenology_but_no_cover_change(cia):
    crops = np.isin(read(cia, cia.date_list()[0], "cover")[0], [CLASS_ID["rice"], CLASS_ID["maize"]])
    scene = [ndvi(reflectance(cia, date)).mean() for date in cia.date_list()]
    summer_crops = [ndvi(reflectance(cia, date))[crops].mean() for date in cia.date_list()]
    assert max(scene) - min(scene) > 0.05
    assert max(summer_crops) - min(summer_crops) > 0.4
    assert np.argmax(summer_crops) not in (0, len(summer_crops) - 1)  # green in mid-season
    for date in cia.date_list():
        assert read(cia, date, "change").max() == 0


def test_lgc_flood_is_a_cover_change_with_a_nir_drop(lgc):
    dates = lgc.date_list()
    assert set(FLOOD_STAGES) <= set(dates)
    assert read(lgc, dates[0], "change").max() == 0
    change = read(lgc, "2004-12-28", "change")[0].astype(bool)
    assert change.mean() > 0.05
    assert (read(lgc, "2004-12-28", "cover")[0][change] == CLASS_ID["water"]).all()
    nir_before, nir_flood = reflectance(lgc, dates[0])[NIR], reflectance(lgc, "2004-12-28")[NIR]
    assert nir_flood[change].mean() < 0.05 < nir_before[change].mean() - 0.1
    assert read(lgc, dates[-1], "change").max() == 0


# ---------------------------------------------------------------------------------------------
# Configuration errors and atomicity


@pytest.mark.parametrize(
    ("dataset", "overrides", "named"),
    [
        ("cia-sim", {"height": 250}, "download.synthetic.cia-sim.height"),
        ("cia-sim", {"width": 90}, "download.synthetic.cia-sim.width"),
        ("cia-sim", {"n_dates": 18}, "download.synthetic.cia-sim.n_dates"),
        ("lgc-sim", {"n_dates": 15}, "download.synthetic.lgc-sim.n_dates"),
        ("cia-sim", {"colour": "red"}, "download.synthetic.cia-sim.colour"),
        ("cia-sim", {"psf_sigma": -1}, "download.synthetic.cia-sim.psf_sigma"),
        ("cia-sim", {"seed": "x"}, "download.synthetic.cia-sim.seed"),
        ("cia-sim", {"template": "xyz"}, "download.synthetic.cia-sim.template"),
        ("nope-sim", {}, "cia-sim"),
    ],
)
def test_bad_configuration_names_the_parameter(dataset, overrides, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        synthetic_config(dataset, overrides)


def test_defaults_are_valid():
    for dataset in SYNTHETIC_DEFAULTS:
        assert synthetic_config(dataset) == SYNTHETIC_DEFAULTS[dataset]
    with pytest.raises(ConfigError, match="250 is not a positive multiple of ratio 20"):
        synthetic_config("cia-sim", {"height": 250})


def _fail_on_third_call(monkeypatch):
    real, calls = synthetic.write_geotiff, []

    def flaky(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "write_geotiff", flaky)


def test_failure_leaves_no_folder(tmp_path, monkeypatch):
    _fail_on_third_call(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        generate_dataset("cia-sim", tmp_path / "cia-sim", {**SMALL, "n_dates": 2})
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_an_existing_folder(tmp_path, monkeypatch):
    folder = tmp_path / "cia-sim"
    first = generate_dataset("cia-sim", folder, {**SMALL, "n_dates": 2})
    _fail_on_third_call(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        generate_dataset("cia-sim", folder, {**SMALL, "n_dates": 2, "seed": 9})
    assert Manifest.load(folder).files == first.files
    Manifest.load(folder).verify()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cia-sim"]


def test_bandpass_differences_depend_on_land_cover():
    """Water is seen by the coarse bands exactly ``1 + bandpass * BANDPASS_WATER`` times as bright; a canopy's
    difference grows with its cover, so no single gain per band relates the two sensors."""
    bandpass = 0.04
    scene = synthetic._build_scene("lgc", 160, 140, 5)
    date = "2004-12-28"  # the flood's peak: plenty of open water
    fine, cover = synthetic._render(scene, "lgc", date)
    seen, _ = synthetic._render(scene, "lgc", date, bandpass)
    ratio = seen / fine
    water = cover == CLASS_ID["water"]
    assert water.sum() > 100
    for b in range(len(BANDS)):
        np.testing.assert_allclose(ratio[b][water], 1 + bandpass * synthetic.BANDPASS_WATER[b], rtol=1e-5)
    fields = np.isin(cover, [CLASS_ID["winter cereal"], CLASS_ID["cotton"], CLASS_ID["summer cereal"]])
    ndvi = ((fine[NIR] - fine[RED]) / (fine[NIR] + fine[RED]))[fields]
    nir_ratio = ratio[NIR][fields]
    assert np.all((nir_ratio >= 1) & (nir_ratio <= 1 + 0.5 * bandpass + 1e-6))
    assert np.corrcoef(ndvi, nir_ratio)[0, 1] > 0.8  # the denser the canopy, the larger the difference
    np.testing.assert_array_equal(synthetic._render(scene, "lgc", date, 0.0)[0], fine)
    with pytest.raises(ConfigError, match="download.synthetic.lgc-sim.bandpass"):
        synthetic_config("lgc-sim", {"bandpass": 0.5})
