"""`stfusion evaluate`: any two rasters, GeoTIFF or ENVI, with masks, nodata and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from stfusion.cli import main
from stfusion.data.envi import write_envi
from stfusion.data.raster import Grid, write_geotiff
from stfusion.evaluation.metrics import Conventions, compute_metrics

GRID = Grid(30, 24, Affine(25.0, 0, 500000.0, 0, -25.0, 6200000.0), CRS.from_epsg(32755))


@pytest.fixture
def images():
    rng = np.random.default_rng(5)
    truth = rng.integers(200, 4000, (3, 30, 24)).astype(np.int16)
    pred = (truth + rng.integers(-150, 150, truth.shape)).astype(np.int16)
    return pred, truth


def run_json(capsys, *args) -> dict:
    assert main(["evaluate", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_geotiff_scores_match_the_metrics_module(tmp_path, images, capsys):
    pred, truth = images
    write_geotiff(tmp_path / "p.tif", pred, GRID)
    write_geotiff(tmp_path / "t.tif", truth, GRID)
    result = run_json(capsys, "--pred", str(tmp_path / "p.tif"), "--truth", str(tmp_path / "t.tif"), "--ratio", "20")
    expected = compute_metrics(pred / 1e4, truth / 1e4, device="cpu", conventions=Conventions(ratio=20))["all"]
    assert result["pixels"] == 30 * 24 and result["reflectance_scale"]["truth"] == 10000
    for metric in ("rmse", "ssim", "sam", "ergas"):
        assert result["scores"][metric]["all"] == pytest.approx(expected[metric]["all"]), metric
    assert main(["evaluate", "--pred", str(tmp_path / "p.tif"), "--truth", str(tmp_path / "t.tif")]) == 0
    text = capsys.readouterr().out
    assert "rmse" in text and "band3" in text and "720 valid pixels" in text
    assert "no ERGAS (give --ratio" in text  # the ratio is never assumed


def test_envi_inputs_and_float_geotiff_agree(tmp_path, images, capsys):
    pred, truth = images
    write_envi(tmp_path / "p.dat", pred, interleave="bsq", grid=GRID)
    write_envi(tmp_path / "t.bil", truth, interleave="bil", grid=GRID)
    envi = run_json(capsys, "--pred", str(tmp_path / "p.dat"), "--truth", str(tmp_path / "t.bil"))
    write_geotiff(tmp_path / "p.tif", (pred / 1e4).astype(np.float32), GRID)
    write_geotiff(tmp_path / "t.tif", (truth / 1e4).astype(np.float32), GRID)
    tiff = run_json(capsys, "--pred", str(tmp_path / "p.tif"), "--truth", str(tmp_path / "t.tif"))
    assert tiff["reflectance_scale"]["truth"] == 1
    assert envi["scores"]["rmse"]["all"] == pytest.approx(tiff["scores"]["rmse"]["all"], rel=1e-5)


def test_nan_nodata_and_mask_pixels_are_excluded(tmp_path, images, capsys):
    pred, truth = images
    pred_f = (pred / 1e4).astype(np.float32)
    pred_f[:, :5, :] = np.nan  # NaN rows
    truth_nd = truth.copy()
    truth_nd[:, 5:10, :] = -9999  # nodata rows
    mask = np.ones((1, 30, 24), np.uint8)
    mask[:, 10:12, :] = 0
    write_geotiff(tmp_path / "p.tif", pred_f, GRID, nodata=float("nan"))
    write_geotiff(tmp_path / "t.tif", truth_nd, GRID, nodata=-9999)
    write_geotiff(tmp_path / "m.tif", mask, GRID)
    result = run_json(capsys, "--pred", str(tmp_path / "p.tif"), "--truth", str(tmp_path / "t.tif"),
                      "--mask", str(tmp_path / "m.tif"), "--ratio", "16")
    assert result["pixels"] == 18 * 24 and result["conventions"]["ratio"] == 16
    expected = compute_metrics(pred[:, 12:] / 1e4, truth[:, 12:] / 1e4, device="cpu")["all"]
    assert result["scores"]["rmse"]["all"] == pytest.approx(expected["rmse"]["all"], rel=1e-6)
    assert result["scores"]["ssim"]["all"] == pytest.approx(expected["ssim"]["all"], rel=1e-6)


@pytest.mark.parametrize("change, message", [
    ("shape", "shape"), ("bands", "bands"), ("grid", "transform"), ("crs", "CRS"),
])
def test_mismatched_inputs_are_clear_errors(tmp_path, images, capsys, change, message):
    pred, truth = images
    grid = GRID
    if change == "shape":
        pred, grid = pred[:, :20], Grid(20, 24, GRID.transform, GRID.crs)
    elif change == "bands":
        pred = pred[:2]
    elif change == "grid":
        grid = Grid(30, 24, GRID.transform * Affine.translation(3, 0), GRID.crs)
    else:
        grid = Grid(30, 24, GRID.transform, CRS.from_epsg(32756))
    write_geotiff(tmp_path / "p.tif", pred, grid)
    write_geotiff(tmp_path / "t.tif", truth, GRID)
    assert main(["evaluate", "--pred", str(tmp_path / "p.tif"), "--truth", str(tmp_path / "t.tif")]) == 2
    err = capsys.readouterr().err
    assert "p.tif" in err and message in err and "Traceback" not in err


def test_missing_file_and_bad_ratio_are_named(tmp_path, images, capsys):
    pred, truth = images
    write_geotiff(tmp_path / "t.tif", truth, GRID)
    assert main(["evaluate", "--pred", str(tmp_path / "nope.tif"), "--truth", str(tmp_path / "t.tif")]) == 2
    assert "nope.tif: raster file not found" in capsys.readouterr().err
    write_geotiff(tmp_path / "p.tif", pred, GRID)
    assert main(["evaluate", "--pred", str(tmp_path / "p.tif"), "--truth", str(tmp_path / "t.tif"), "--ratio", "0"]) == 2
    assert "ratio: expected the coarse over fine pixel size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--pred", "p", "--truth", "t", "--ratio", "1/20"])
    assert "invalid int value" in capsys.readouterr().err
