"""`stfusion fuse`: users' own rasters in, a georeferenced prediction out, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from stfusion.cli import main
from stfusion.data.envi import write_envi
from stfusion.data.raster import Grid, read_geotiff, write_geotiff

GRID = Grid(40, 60, Affine(25.0, 0, 300000.0, 0, -25.0, 6200000.0), CRS.from_epsg(32755))


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(2)
    f1 = rng.integers(300, 3000, (3, 40, 60)).astype(np.int16)
    c1 = rng.integers(300, 3000, (3, 40, 60)).astype(np.int16)
    c2 = (c1 + 120).astype(np.int16)
    paths = {}
    for name, data in (("f1", f1), ("c1", c1), ("c2", c2)):
        paths[name] = tmp_path / f"{name}.tif"
        write_geotiff(paths[name], data, GRID)
    return paths, (f1, c1, c2)


def fuse(paths, out, *extra):
    return main(["fuse", "--method", "temporal-difference", "--fine-ref", str(paths["f1"]), "--coarse-ref",
                 str(paths["c1"]), "--coarse-target", str(paths["c2"]), "--out", str(out), *extra])


def test_fuse_writes_a_georeferenced_float_prediction(tmp_path, inputs, capsys):
    paths, (f1, c1, c2) = inputs
    assert fuse(paths, tmp_path / "p.tif") == 0
    assert "wrote" in capsys.readouterr().out
    result = read_geotiff(tmp_path / "p.tif")
    assert result.grid == GRID and result.data.dtype == np.float32
    np.testing.assert_allclose(result.data, (f1 + 120) / 1e4, rtol=1e-5)


def test_envi_without_georeferencing_fuses_with_a_warning(tmp_path, inputs, capsys):
    _, arrays = inputs
    paths = {}
    for name, data in zip(("f1", "c1", "c2"), arrays):
        paths[name] = tmp_path / f"{name}.dat"
        write_envi(paths[name], data, interleave="bsq")
    assert fuse(paths, tmp_path / "p.tif") == 0
    assert "no georeferencing" in capsys.readouterr().err
    assert read_geotiff(tmp_path / "p.tif").grid.crs is None


def test_nodata_pixels_stay_nodata(tmp_path, inputs):
    paths, (f1, c1, c2) = inputs
    f1 = f1.copy()
    f1[:, :3] = -9999
    write_geotiff(paths["f1"], f1, GRID, nodata=-9999)
    assert fuse(paths, tmp_path / "p.tif") == 0
    data = read_geotiff(tmp_path / "p.tif").data
    assert np.isnan(data[:, :3]).all() and np.isfinite(data[:, 3:]).all()


@pytest.mark.parametrize("case, message", [
    ("bands", "bands"), ("grid", "transform"), ("ratio", "--ratio"), ("nodata", "no pixel is valid"),
    ("window", "--window"), ("method", "--method"),
])
def test_bad_inputs_are_named(tmp_path, inputs, capsys, case, message):
    paths, (f1, c1, c2) = inputs
    extra = []
    if case == "bands":
        write_geotiff(paths["c2"], c2[:2], GRID)
    elif case == "grid":
        write_geotiff(paths["c2"], c2, Grid(40, 60, GRID.transform * Affine.translation(1, 0), GRID.crs))
    elif case == "ratio":
        extra = ["--ratio", "7"]
    elif case == "nodata":
        write_geotiff(paths["f1"], np.full_like(f1, -9999), GRID, nodata=-9999)
    elif case == "window":
        extra = ["--window", "31"]  # temporal-difference has no window
    else:
        assert main(["fuse", "--method", "magic", "--fine-ref", "a", "--coarse-ref", "b", "--coarse-target", "c",
                     "--out", str(tmp_path / "p.tif")]) == 2
        assert message in capsys.readouterr().err
        return
    assert fuse(paths, tmp_path / "p.tif", *extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "p.tif").exists()


@pytest.mark.parametrize("method", ["starfm", "fsdaf"])
def test_traditional_methods_fuse_with_a_window(tmp_path, method, capsys):
    """A field pattern whose coarse image brightens by 0.01 everywhere: both recover F1 + 0.01."""
    rows, cols = np.indices((80, 80))
    fields = ((rows // 20) * 4 + cols // 20) % 5  # 16 fields of 5 kinds
    f1 = np.stack([1000 + 300 * fields, 2000 + 250 * fields]).astype(np.int16)
    grid = Grid(80, 80, GRID.transform, GRID.crs)
    paths = {"f1": tmp_path / "f1.tif", "c1": tmp_path / "c1.tif", "c2": tmp_path / "c2.tif"}
    for name, data in (("f1", f1), ("c1", f1), ("c2", f1 + 100)):
        write_geotiff(paths[name], data, grid)
    assert main(["fuse", "--method", method, "--fine-ref", str(paths["f1"]), "--coarse-ref", str(paths["c1"]),
                 "--coarse-target", str(paths["c2"]), "--out", str(tmp_path / "p.tif"), "--window", "9"]) == 0
    np.testing.assert_allclose(read_geotiff(tmp_path / "p.tif").data, (f1 + 100) / 1e4, atol=1e-5)
