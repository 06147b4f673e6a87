"""`stfusion fuse`: users' own rasters in, a georeferenced prediction out, clear errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from stfusion.cli import main
from stfusion.data.envi import write_envi
from stfusion.data.raster import Grid, read_geotiff, write_geotiff
from stfusion.errors import ConfigError

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
    args = ["fuse", "--method", method, "--fine-ref", str(paths["f1"]), "--coarse-ref", str(paths["c1"]),
            "--coarse-target", str(paths["c2"]), "--out", str(tmp_path / "p.tif"), "--window", "9"]
    if method == "fsdaf":  # the ratio is never assumed: FSDAF unmixes coarse pixels of that size
        assert main(args) == 2 and "--ratio: fsdaf needs" in capsys.readouterr().err
        assert not (tmp_path / "p.tif").exists()
        args += ["--ratio", "20"]
    assert main(args) == 0
    np.testing.assert_allclose(read_geotiff(tmp_path / "p.tif").data, (f1 + 100) / 1e4, atol=1e-5)


# --------------------------------------------------------------------------- trained models (--weights)

from stfusion.methods.models import build_model  # noqa: E402
from stfusion.inference.tiling import predict_scene  # noqa: E402
from stfusion.inference.weights import export_weights, load_model  # noqa: E402

BANDS6 = ("f1", "c1", "c2")
SIX_BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")


@pytest.fixture
def six_band_inputs(tmp_path):
    rng = np.random.default_rng(5)
    arrays = {name: rng.integers(300, 4000, (6, 40, 60)).astype(np.int16) for name in BANDS6}
    paths = {}
    for name, data in arrays.items():
        paths[name] = tmp_path / f"{name}6.tif"
        write_geotiff(paths[name], data, GRID)
    return paths, arrays


def exported(tmp_path, name, arch, **metadata):
    """A freshly built model exported as the train stage does, with standardisation statistics."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = build_model(name, arch)
    stats = {"mean": [0.1, 0.12, 0.1, 0.3, 0.2, 0.15], "std": [0.03, 0.04, 0.05, 0.08, 0.07, 0.06]}
    from stfusion.methods.models.standardize import Standardized

    wrapped = Standardized(model, stats["mean"], stats["std"])
    return export_weights(tmp_path / f"{name}.pt", name, wrapped, arch, standardize=stats, dataset="cia-sim",
                          **metadata)


def fuse_weights(paths, weights, out, *extra, coarse_ref=True):
    c1 = ["--coarse-ref", str(paths["c1"])] if coarse_ref else []
    return main(["fuse", "--weights", str(weights), "--fine-ref", str(paths["f1"]), *c1,
                 "--coarse-target", str(paths["c2"]), "--out", str(out), *extra])


def test_trained_model_fuses_as_the_tiled_inference_predicts(tmp_path, six_band_inputs, capsys):
    paths, arrays = six_band_inputs
    weights = exported(tmp_path, "dcstfn", {"channels": [4, 6, 8]}, tile=40)
    assert fuse_weights(paths, weights, tmp_path / "p.tif") == 0
    assert "dcstfn: wrote" in capsys.readouterr().out
    model, _ = load_model(weights)
    f1, c1, c2 = (arrays[name].astype(np.float32) / 1e4 for name in BANDS6)
    expected = predict_scene(model, f1, c1, c2, tile=40, device="cpu")
    result = read_geotiff(tmp_path / "p.tif")
    assert result.grid == GRID and result.data.shape == (6, 40, 60)
    np.testing.assert_allclose(result.data, expected, atol=1e-6)


def test_a_trained_model_predicts_the_gaps_of_the_fine_reference_and_a_baseline_leaves_them(tmp_path,
                                                                                            six_band_inputs):
    paths, arrays = six_band_inputs
    f1 = arrays["f1"].copy()
    f1[:, 10:20, 5:25] = -9999  # a masked cloud
    write_geotiff(paths["f1"], f1, GRID, nodata=-9999)
    weights = exported(tmp_path, "dcstfn", {"channels": [4, 6, 8]}, tile=40)
    assert fuse_weights(paths, weights, tmp_path / "deep.tif") == 0
    assert main(["fuse", "--method", "temporal-difference", "--fine-ref", str(paths["f1"]), "--coarse-ref",
                 str(paths["c1"]), "--coarse-target", str(paths["c2"]), "--out", str(tmp_path / "td.tif")]) == 0
    deep, td = (read_geotiff(tmp_path / name).data for name in ("deep.tif", "td.tif"))
    assert np.isfinite(deep).all()
    assert np.isnan(td[:, 10:20, 5:25]).all() and np.isfinite(td).all(axis=0).sum() == 40 * 60 - 10 * 20
    model, _ = load_model(weights)
    f1r, c1, c2 = (arrays[name].astype(np.float32) / 1e4 for name in BANDS6)
    f1r[:, 10:20, 5:25] = c1[:, 10:20, 5:25]  # the gap holds the coarse reference
    np.testing.assert_allclose(deep, predict_scene(model, f1r, c1, c2, tile=40, device="cpu"), atol=1e-6)


def test_mcbam_gan_fuses_without_the_reference_coarse_image(tmp_path, six_band_inputs):
    """Untrained, it returns its skip image (F1 with the reference skip); it never needs C1."""
    paths, arrays = six_band_inputs
    weights = exported(tmp_path, "mcbam-gan", {"channels": [4, 4, 8], "skip": "reference"})
    assert fuse_weights(paths, weights, tmp_path / "p.tif", "--method", "mcbam-gan", coarse_ref=False) == 0
    np.testing.assert_allclose(read_geotiff(tmp_path / "p.tif").data, arrays["f1"] / 1e4, atol=1e-5)


def test_mcbam_gan_coarse_corrected_skip_works_at_its_ratio_only(tmp_path, six_band_inputs, capsys):
    torch = pytest.importorskip("torch")
    from stfusion.methods.models.mcbam_gan import box_filter

    paths, arrays = six_band_inputs
    weights = exported(tmp_path, "mcbam-gan", {"channels": [4, 4, 8], "ratio": 10})
    assert fuse_weights(paths, weights, tmp_path / "p.tif", "--ratio", "10", coarse_ref=False) == 0
    f1, c2 = (torch.from_numpy(arrays[name].astype(np.float32) / 1e4)[None] for name in ("f1", "c2"))
    expected = (f1 + box_filter(c2, 10) - box_filter(box_filter(f1, 10), 10))[0].numpy()
    np.testing.assert_allclose(read_geotiff(tmp_path / "p.tif").data, expected, atol=1e-5)
    # at another ratio its skip would compare the images at the wrong scale
    assert fuse_weights(paths, weights, tmp_path / "q.tif", "--ratio", "20", coarse_ref=False) == 2
    assert "--ratio: 20" in capsys.readouterr().err and not (tmp_path / "q.tif").exists()


def test_stochastic_model_writes_mean_and_std_and_repeats_for_a_seed(tmp_path, six_band_inputs, capsys):
    paths, _ = six_band_inputs
    weights = exported(tmp_path, "stfdiff", {"dim": 4, "sample_steps": 2, "clip": None}, uncertainty_samples=3)
    assert fuse_weights(paths, weights, tmp_path / "a.tif", "--seed", "4") == 0
    assert "a_std.tif" in capsys.readouterr().out
    assert fuse_weights(paths, weights, tmp_path / "b.tif", "--seed", "4") == 0
    first, second = read_geotiff(tmp_path / "a.tif").data, read_geotiff(tmp_path / "b.tif").data
    std = read_geotiff(tmp_path / "a_std.tif").data
    np.testing.assert_array_equal(first, second)
    assert np.isfinite(first).all() and (std > 0).all()
    assert fuse_weights(paths, weights, tmp_path / "c.tif", "--samples", "1") == 0  # one sample: no std
    assert not (tmp_path / "c_std.tif").exists()


@pytest.mark.parametrize("case, message", [
    ("missing", "weights file not found"), ("other-model", "not of 'dcstfn'"), ("bands", "trained on 6"),
    ("window", "--window"), ("no-c1", "--coarse-ref"), ("device", "--device"), ("tile", "--tile"),
    ("nothing", "--method or --weights"), ("band-order", "trained on blue, green, red, nir, swir1, swir2 in that order"),
    ("pixel-size", "trained on 30 m pixels"),
])
def test_bad_weights_inputs_are_named(tmp_path, six_band_inputs, inputs, capsys, case, message):
    paths, _ = six_band_inputs
    weights, extra, coarse_ref = exported(tmp_path, "dcstfn", {"channels": [4, 6, 8]}), [], True
    if case == "missing":
        weights = tmp_path / "nope.pt"
    elif case == "other-model":
        weights = exported(tmp_path, "mcbam-gan", {"channels": [4, 4, 8]})
        extra = ["--method", "dcstfn"]
    elif case == "bands":
        paths = inputs[0]  # 3-band rasters
    elif case == "window":
        extra = ["--window", "31"]
    elif case == "no-c1":
        coarse_ref = False
    elif case == "device":
        extra = ["--device", "gpu"]
    elif case == "tile":
        extra = ["--tile", "0"]
    elif case == "band-order":  # the card names the bands; the files name theirs in another order
        weights = exported(tmp_path, "dcstfn", {"channels": [4, 6, 8]}, bands=list(SIX_BANDS))
        for name, data in six_band_inputs[1].items():
            write_geotiff(paths[name], data, GRID, band_names=SIX_BANDS[::-1])
    elif case == "pixel-size":  # GRID has 25 m pixels: within 1.5 times of 30 m, not of 50 m
        weights = exported(tmp_path, "dcstfn", {"channels": [4, 6, 8]}, pixel_size=[30.0, 30.0])
        assert fuse_weights(paths, weights, tmp_path / "fits.tif") == 0
        weights = exported(tmp_path, "dcstfn", {"channels": [4, 6, 8]}, pixel_size=[50.0, 50.0])
        message = "trained on 50 m pixels"
    if case == "nothing":
        code = main(["fuse", "--fine-ref", str(paths["f1"]), "--coarse-target", str(paths["c2"]),
                     "--out", str(tmp_path / "p.tif")])
    else:
        code = fuse_weights(paths, weights, tmp_path / "p.tif", *extra, coarse_ref=coarse_ref)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "p.tif").exists()


def test_the_search_window_reaches_the_method(tmp_path, inputs):
    """STARFM with a 3-px and a 31-px window: different neighbourhoods, different predictions."""
    paths, _ = inputs
    outputs = []
    for window in ("3", "31"):
        out = tmp_path / f"p{window}.tif"
        assert main(["fuse", "--method", "starfm", "--fine-ref", str(paths["f1"]), "--coarse-ref", str(paths["c1"]),
                     "--coarse-target", str(paths["c2"]), "--out", str(out), "--window", window]) == 0
        outputs.append(read_geotiff(out).data)
    assert np.isfinite(outputs[0]).all() and not np.allclose(outputs[0], outputs[1])


def test_a_scene_larger_than_a_block_is_fused_block_by_block(tmp_path):
    """The same prediction as in one piece for a per-pixel method, written window by window as a COG."""
    import rasterio

    from stfusion.data.raster import Grid, read_geotiff, write_geotiff
    from stfusion.inference.fuse import fuse_files
    from affine import Affine

    rng = np.random.default_rng(0)
    grid = Grid(300, 260, Affine(30, 0, 500000, 0, -30, 6000000), rasterio.crs.CRS.from_epsg(32755))
    images = {name: rng.integers(100, 5000, (4, 300, 260)).astype(np.int16) for name in ("f1", "c1", "c2")}
    images["f1"][:, 40:60, 100:180] = 0  # nodata
    paths = {name: write_geotiff(tmp_path / f"{name}.tif", image, grid, nodata=0) for name, image in images.items()}
    args = ("temporal-difference", paths["f1"], paths["c1"], paths["c2"])
    whole = fuse_files(*args, tmp_path / "whole.tif")
    blocks = fuse_files(*args, tmp_path / "blocks.tif", block=64, progress=False)
    assert blocks["block"] == 64 and blocks["pixels"] == whole["pixels"] == 300 * 260 - 20 * 80
    np.testing.assert_array_equal(read_geotiff(tmp_path / "blocks.tif").data, read_geotiff(tmp_path / "whole.tif").data)
    with rasterio.open(tmp_path / "blocks.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and src.crs == grid.crs
        assert src.tags()["content"] == "predicted surface reflectance" and src.scales == (1.0,) * 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocks.tif", "c1.tif", "c2.tif", "f1.tif", "whole.tif"]


def test_a_block_by_block_failure_leaves_nothing(tmp_path):
    from stfusion.data.raster import Grid, write_geotiff
    from stfusion.errors import InputError
    from stfusion.inference.fuse import fuse_files

    grid = Grid(200, 130)
    paths = {name: write_geotiff(tmp_path / f"{name}.tif", np.full((2, 200, 130), value, np.int16), grid, nodata=0)
             for name, value in (("f1", 0), ("c1", 300), ("c2", 400))}  # the fine reference is all nodata
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InputError, match="no pixel is valid in all of them"):
        fuse_files("temporal-difference", paths["f1"], paths["c1"], paths["c2"], tmp_path / "out.tif", block=64,
                   progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no staging folder


@pytest.mark.parametrize("user_setting", [None, "512"])
def test_block_by_block_fusion_bounds_gdal_cache_unless_the_user_set_it(tmp_path, monkeypatch, user_setting):
    """GDAL's default cache (5 % of memory) filled with the staged prediction, so memory grew with the scene."""
    from rasterio.env import get_gdal_config

    from stfusion.data.raster import Grid, write_geotiff
    from stfusion.inference import fuse as fuse_module
    from stfusion.data.raster import GDAL_CACHE_MB

    if user_setting is None:
        monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    else:
        monkeypatch.setenv("GDAL_CACHEMAX", user_setting)
    outside = get_gdal_config("GDAL_CACHEMAX")
    seen = []
    untrained = fuse_module.untrained_predictor

    def recording(method_name, window):
        predict, info = untrained(method_name, window)
        return (lambda *args, **kwargs: seen.append(get_gdal_config("GDAL_CACHEMAX")) or predict(*args, **kwargs)), info

    monkeypatch.setattr(fuse_module, "untrained_predictor", recording)
    grid = Grid(130, 130)
    paths = {name: write_geotiff(tmp_path / f"{name}.tif", np.full((2, 130, 130), value, np.int16), grid, nodata=0)
             for name, value in (("f1", 200), ("c1", 300), ("c2", 400))}
    fuse_module.fuse_files("temporal-difference", paths["f1"], paths["c1"], paths["c2"], tmp_path / "out.tif",
                           block=64, progress=False)
    expected = GDAL_CACHE_MB * 2**20 if user_setting is None else outside  # bytes
    assert len(seen) == 9 and set(seen) == {expected}
    assert get_gdal_config("GDAL_CACHEMAX") == outside  # restored for the rest of the process


def test_every_geotiff_write_bounds_gdal_cache(tmp_path, monkeypatch):
    """A COG is written through GDAL's cache too (the preprocessed scenes, every prediction of the study)."""
    import rasterio
    from rasterio.env import get_gdal_config

    from stfusion.data import raster
    from stfusion.data.raster import GDAL_CACHE_MB, Grid, write_geotiff

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    outside, seen, opened = get_gdal_config("GDAL_CACHEMAX"), [], rasterio.open
    monkeypatch.setattr(raster.rasterio, "open",
                        lambda *a, **k: seen.append(get_gdal_config("GDAL_CACHEMAX")) or opened(*a, **k))
    write_geotiff(tmp_path / "a.tif", np.ones((2, 300, 300), np.float32), Grid(300, 300), cog=True)
    assert seen == [GDAL_CACHE_MB * 2**20] and get_gdal_config("GDAL_CACHEMAX") == outside


# --- outputs: nothing a user gave is replaced, and a bad output path is refused before any work -----------

def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("case", ["same-path", "relative-path", "symlink", "hardlink", "std-of-out"])
def test_an_output_that_is_an_input_is_refused(tmp_path, inputs, capsys, monkeypatch, case):
    paths, _ = inputs
    out = paths["f1"]
    if case == "relative-path":
        monkeypatch.chdir(tmp_path / "..")
        out = f"{tmp_path.name}/../{tmp_path.name}/f1.tif"
    elif case == "symlink":
        out = tmp_path / "link.tif"
        out.symlink_to(paths["c2"])
    elif case == "hardlink":
        out = tmp_path / "hard.tif"
        out.hardlink_to(paths["c1"])
    elif case == "std-of-out":  # the prediction's std side file would land on the fine reference
        paths["f1"].rename(tmp_path / "p_std.tif")
        paths["f1"] = tmp_path / "p_std.tif"
        out = tmp_path / "p.tif"
    before = _snapshot(tmp_path)
    assert fuse(paths, out, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "is the input" in err and "Traceback" not in err
    assert _snapshot(tmp_path) == before


def test_an_existing_output_is_replaced_only_with_overwrite(tmp_path, inputs, capsys):
    paths, (f1, *_) = inputs
    out, std = tmp_path / "p.tif", tmp_path / "p_std.tif"
    out.write_bytes(b"an earlier result")
    assert fuse(paths, out) == 2
    assert "p.tif exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"an earlier result"
    out.unlink()
    std.write_bytes(b"an earlier std")
    assert fuse(paths, out) == 2
    assert "p_std.tif exists; pass --overwrite" in capsys.readouterr().err
    assert not out.exists() and std.read_bytes() == b"an earlier std"
    assert fuse(paths, out, "--overwrite") == 0  # temporal difference has no std: the earlier one goes
    assert "removed" in capsys.readouterr().out
    assert read_geotiff(out).data.shape == f1.shape and not std.exists()


@pytest.mark.parametrize("case, message", [
    ("folder", "is a folder"), ("png", "does not end in .tif or .tiff"), ("empty", "--out: empty"),
    ("under-a-file", "is a file, so the folder"),
])
def test_a_bad_output_path_is_one_line_and_writes_nothing(tmp_path, inputs, capsys, case, message):
    paths, _ = inputs
    out = {"folder": tmp_path, "png": tmp_path / "p.png", "empty": "",
           "under-a-file": paths["f1"] / "p.tif"}[case]
    before = sorted(tmp_path.rglob("*"))
    assert fuse(paths, out) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder")
def test_a_read_only_folder_is_refused_before_any_work(tmp_path, inputs, capsys):
    paths, _ = inputs
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert fuse(paths, locked / "p.tif") == 2
    assert "is not writable" in capsys.readouterr().err


def test_a_missing_output_folder_is_made(tmp_path, inputs):
    paths, _ = inputs
    assert fuse(paths, tmp_path / "new" / "deeper" / "p.tif") == 0
    assert (tmp_path / "new" / "deeper" / "p.tif").is_file()


def test_ctrl_c_is_one_line_and_keeps_the_earlier_output(tmp_path, inputs, capsys, monkeypatch):
    paths, _ = inputs
    out = tmp_path / "p.tif"
    assert fuse(paths, out) == 0
    before = out.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("stfusion.inference.fuse.write_geotiff", interrupted)
    assert fuse(paths, out, "--overwrite") == 130
    err = capsys.readouterr().err
    assert err.startswith("stfusion: interrupted") and err.count("\n") == 1
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["c1.tif", "c2.tif",
                                                                                       "f1.tif", "p.tif"]


def test_sigterm_mid_write_is_one_line_and_leaves_nothing_partial(tmp_path):
    """kill (SIGTERM) while blocks are being written: exit 143, one line, the staging folder removed and the
    earlier output as it was."""
    import subprocess
    import sys
    import time

    rng = np.random.default_rng(1)
    grid = Grid(640, 640, GRID.transform, GRID.crs)
    f1 = rng.integers(300, 3000, (3, 640, 640)).astype(np.int16)
    paths = {name: write_geotiff(tmp_path / f"{name}.tif", data, grid)
             for name, data in (("f1", f1), ("c1", f1 + 10), ("c2", f1 + 130))}
    (tmp_path / "p.tif").write_bytes(b"the earlier result")
    before = sorted(p.name for p in tmp_path.iterdir())
    command = [sys.executable, "-m", "stfusion.cli", "fuse", "--method", "starfm", "--window", "31", "--block", "64",
               "--fine-ref", str(paths["f1"]), "--coarse-ref", str(paths["c1"]), "--coarse-target", str(paths["c2"]),
               "--out", str(tmp_path / "p.tif"), "--overwrite"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".p.tif.*")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    assert list(tmp_path.glob(".p.tif.*")), "the staging folder never appeared"
    process.terminate()
    _, err = process.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("blocks of")]  # bars aside
    assert process.returncode == 143 and len(lines) == 1 and lines[0].startswith("stfusion: terminated"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "p.tif").read_bytes() == b"the earlier result"


def test_debug_shows_the_traceback(tmp_path, inputs):
    paths, _ = inputs
    with pytest.raises(ConfigError, match="--window"):
        main(["--debug", "fuse", "--method", "temporal-difference", "--fine-ref", str(paths["f1"]), "--coarse-ref",
              str(paths["c1"]), "--coarse-target", str(paths["c2"]), "--out", str(tmp_path / "p.tif"),
              "--window", "31"])


@pytest.mark.parametrize("case, message", [
    ("float-x10000", "f1.tif: only 0% of its values are reflectance in (0, 1] once divided by 1 (1st to 99th "
                     "percentile of the values: "),
    ("percent", "they look like reflectance in percent: pass --reflectance-scale 100"),
    ("pair-units", "f1.tif: its median reflectance"),
    ("scale-zero", "--reflectance-scale: expected a positive number"),
])
def test_inputs_in_the_wrong_units_are_refused_before_any_work(tmp_path, inputs, capsys, case, message):
    paths, (f1, c1, c2) = inputs
    extra = []
    if case == "float-x10000":  # the issue's case: x10000 values in a float file read as reflectance
        write_geotiff(paths["f1"], f1.astype(np.float32), GRID)
    elif case == "percent":
        for name, data in zip(("f1", "c1", "c2"), (f1, c1, c2)):
            write_geotiff(paths[name], data.astype(np.float32) / 100, GRID)
    elif case == "pair-units":  # the coarse reference stored per 1000, read per 10000: ten times too dark
        write_geotiff(paths["c1"], (c1 // 10).astype(np.int16), GRID)
    else:
        extra = ["--reflectance-scale", "0"]
    before = _snapshot(tmp_path)
    assert fuse(paths, tmp_path / "p.tif", *extra) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    if case == "float-x10000":
        assert "they look like reflectance x 10000: pass --reflectance-scale 10000" in err
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("block", [None, "64"])
def test_fill_values_without_a_nodata_tag_become_nodata_and_are_counted(tmp_path, inputs, capsys, block):
    """int16 -9999 and 32000 in a file with no nodata: nodata in the prediction (not -0.9999 and 3.2), counted
    in the summary, whether the scene is fused whole or block by block."""
    paths, (f1, c1, c2) = inputs
    f1 = f1.copy()
    f1[0, :5, :4], f1[1, 10, 10] = -9999, 32000
    write_geotiff(paths["f1"], f1, GRID)
    assert fuse(paths, tmp_path / "p.tif", *(["--block", block] if block else [])) == 0
    out = capsys.readouterr().out
    assert f"21 values outside reflectance (0, 1] counted as nodata (21 in {paths['f1']})" in out
    assert f"{40 * 60 - 21} valid pixels" in out
    data = read_geotiff(tmp_path / "p.tif").data
    assert np.isnan(data[0, :5, :4]).all() and np.isnan(data[1, 10, 10])  # the bands that held them
    assert np.nanmin(data) > 0 and np.nanmax(data) <= 1


MARK = 1234
"""A fine value (x 10000, band 0) at which the patched STARFM below finds no similar pixel."""


def _starfm_with_holes(monkeypatch):
    """STARFM as it is, but with no similar pixel wherever the fine reference holds :data:`MARK` (so the holes
    follow the pixels, whole scene or block)."""
    from stfusion.methods.baselines import starfm as starfm_module

    real = starfm_module.predict_starfm

    def predict(fine_ref, *args, **kwargs):
        out = real(fine_ref, *args, **kwargs)
        out[:, np.isclose(fine_ref[0], MARK / 1e4)] = np.nan
        return out

    monkeypatch.setattr(starfm_module, "predict_starfm", predict)


@pytest.mark.parametrize("block", [None, "64"])
def test_starfm_holes_hold_the_temporal_difference_counted_and_tagged(tmp_path, monkeypatch, capsys, block):
    """Where STARFM finds no similar pixel the output holds F1 + (C2 - C1), counted once (not once per block
    whose halo covers it) in the summary and the fallback_pixels tag; no NaN where the inputs are valid."""
    import rasterio

    rng = np.random.default_rng(5)
    grid = Grid(130, 100, GRID.transform, GRID.crs)
    f1 = rng.integers(300, 1200, (2, 130, 100)).astype(np.int16)
    holes = (np.array([0, 60, 63, 64, 129]), np.array([0, 50, 63, 64, 99]))  # on and near the blocks' edges
    f1[0][holes] = MARK
    arrays = {"f1": f1, "c1": f1 + 10, "c2": f1 + 130}  # every pixel has similar neighbours: the holes are ours
    paths = {name: write_geotiff(tmp_path / f"{name}.tif", data, grid) for name, data in arrays.items()}
    _starfm_with_holes(monkeypatch)
    assert main(["fuse", "--method", "starfm", "--fine-ref", str(paths["f1"]), "--coarse-ref", str(paths["c1"]),
                 "--coarse-target", str(paths["c2"]), "--out", str(tmp_path / "p.tif"), "--window", "5",
                 *(["--block", block] if block else [])]) == 0
    out = capsys.readouterr().out
    assert f"{130 * 100} valid pixels" in out and "5 of them found no similar pixel" in out
    data = read_geotiff(tmp_path / "p.tif").data
    assert np.isfinite(data).all()
    np.testing.assert_allclose(data[:, 60, 50], (f1[:, 60, 50] + 120) / 1e4, rtol=1e-5)
    with rasterio.open(tmp_path / "p.tif") as src:
        assert src.tags()["fallback_pixels"] == "5"


def test_without_holes_the_tag_says_zero(tmp_path, inputs, capsys):
    import rasterio

    assert fuse(inputs[0], tmp_path / "p.tif") == 0
    assert "similar pixel" not in capsys.readouterr().out
    with rasterio.open(tmp_path / "p.tif") as src:
        assert src.tags()["fallback_pixels"] == "0"
