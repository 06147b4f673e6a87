"""The preprocess stage: the cube's content and every bad input it must refuse."""

import json

import numpy as np
import pytest
import rasterio

from stfusion.data.datacube import open_cube, valid_mask
from stfusion.data.manifest import Manifest
from stfusion.data.preprocess import preprocess_dataset
from stfusion.data.raster import read_geotiff, write_geotiff
from stfusion.errors import InputError
from stfusion.io import sha256_file


def test_cube_holds_every_date_with_crs_and_mask(tiny_processed, tiny_raw_master):
    out, cube, splits = tiny_processed
    loaded = open_cube(out / "cube.nc")
    manifest = Manifest.load(tiny_raw_master)
    assert loaded["fine"].dims == ("time", "band", "y", "x")
    assert loaded["fine"].dtype == np.int16 and loaded["coarse"].dtype == np.int16
    assert loaded.sizes == {"time": 5, "band": 6, "y": 60, "x": 40}
    assert loaded.rio.crs.to_epsg() == 32755
    first = read_geotiff(manifest.file(manifest.date_list()[0], "fine"))
    np.testing.assert_array_equal(loaded["fine"][0].values, first.data)
    assert loaded.rio.transform().almost_equals(first.grid.transform)
    assert loaded["valid"].values.all()
    assert {"cover", "change"} <= set(loaded.data_vars)
    assert json.loads((out / "splits.json").read_text())["test"] == [list(p) for p in splits.test]


def test_valid_mask_rejects_nodata_and_fill_values():
    image = np.full((6, 2, 2), 500, np.int16)
    image[0, 0, 0], image[3, 0, 1], image[5, 1, 0] = 0, -28672, 10001
    assert valid_mask(image).tolist() == [[False, False], [False, True]]


def _fails_cleanly(raw, tmp_path, match):
    out = tmp_path / "processed" / "cia-sim"
    with pytest.raises(InputError, match=match):
        preprocess_dataset(raw, out, {"n_test": 1, "n_val": 1})
    assert not out.exists()
    assert not list((tmp_path / "processed").glob("*"))  # not even a temporary sibling


def _first(raw, role="fine"):
    manifest = Manifest.load(raw)
    return manifest, manifest.file(manifest.date_list()[0], role)


def _update_entry(manifest, path):
    """Record ``path``'s current size and checksum, so only its content itself is wrong."""
    rel = str(path.relative_to(manifest.folder))
    manifest.files[rel].update(bytes=path.stat().st_size, sha256=sha256_file(path))
    manifest.save()


def _rewrite(manifest, path, data, grid=None):
    """Replace a raster and update its manifest entry."""
    write_geotiff(path, data, grid or read_geotiff(path).grid)
    _update_entry(manifest, path)


def test_missing_raster(tiny_raw, tmp_path):
    _, path = _first(tiny_raw)
    path.unlink()
    _fails_cleanly(tiny_raw, tmp_path, f"{path}.*missing")


def test_truncated_raster(tiny_raw, tmp_path):
    _, path = _first(tiny_raw)
    path.write_bytes(path.read_bytes()[:300])
    _fails_cleanly(tiny_raw, tmp_path, f"{path}.*truncated")


def test_truncated_raster_with_matching_manifest_is_unreadable(tiny_raw, tmp_path):
    manifest, path = _first(tiny_raw)
    path.write_bytes(path.read_bytes()[:300])
    _update_entry(manifest, path)
    _fails_cleanly(tiny_raw, tmp_path, f"{path}.*cannot read")


def test_checksum_mismatch(tiny_raw, tmp_path):
    manifest, path = _first(tiny_raw)
    data = read_geotiff(path)
    write_geotiff(path, data.data[:, ::-1], data.grid)  # same grid, other pixels
    manifest.files[str(path.relative_to(tiny_raw))]["bytes"] = path.stat().st_size
    manifest.save()
    _fails_cleanly(tiny_raw, tmp_path, f"{path}.*SHA-256")


def test_wrong_band_count(tiny_raw, tmp_path):
    manifest, path = _first(tiny_raw)
    _rewrite(manifest, path, read_geotiff(path).data[:4])
    _fails_cleanly(tiny_raw, tmp_path, f"{path}.*4 bands, expected 6")


def test_grid_shape_mismatch(tiny_raw, tmp_path):
    manifest, path = _first(tiny_raw, "coarse")
    original = read_geotiff(path)
    grid = type(original.grid)(40, 40, original.grid.transform, original.grid.crs)
    _rewrite(manifest, path, original.data[:, :40, :40], grid)
    _fails_cleanly(tiny_raw, tmp_path, f"{path}.*shape")


def test_grid_crs_mismatch(tiny_raw, tmp_path):
    manifest, path = _first(tiny_raw, "coarse")
    original = read_geotiff(path)
    grid = type(original.grid)(original.grid.height, original.grid.width, original.grid.transform, rasterio.crs.CRS.from_epsg(32754))
    _rewrite(manifest, path, original.data, grid)
    _fails_cleanly(tiny_raw, tmp_path, f"{path}.*CRS")


def test_grid_transform_mismatch(tiny_raw, tmp_path):
    manifest, path = _first(tiny_raw, "coarse")
    original = read_geotiff(path)
    shifted = original.grid.transform @ original.grid.transform.translation(1, 0)
    grid = type(original.grid)(original.grid.height, original.grid.width, shifted, original.grid.crs)
    _rewrite(manifest, path, original.data, grid)
    _fails_cleanly(tiny_raw, tmp_path, f"{path}.*transform")


def test_all_nodata_image(tiny_raw, tmp_path):
    manifest, path = _first(tiny_raw)
    _rewrite(manifest, path, np.zeros_like(read_geotiff(path).data))
    _fails_cleanly(tiny_raw, tmp_path, f"{path}.*no valid pixel")


def test_manifest_date_without_file(tiny_raw, tmp_path):
    manifest = Manifest.load(tiny_raw)
    del manifest.dates[1]["coarse"]
    manifest.save()
    with pytest.raises(InputError, match=f"date {manifest.dates[1]['date']} has no coarse file"):
        preprocess_dataset(tiny_raw, tmp_path / "out", {})
    assert not (tmp_path / "out").exists()


def test_failure_keeps_previous_output(tiny_raw, tmp_path):
    out = tmp_path / "processed" / "cia-sim"
    preprocess_dataset(tiny_raw, out, {"n_test": 1, "n_val": 1})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _, path = _first(tiny_raw)
    path.unlink()
    with pytest.raises(InputError):
        preprocess_dataset(tiny_raw, out, {"n_test": 1, "n_val": 1})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["cia-sim"]
