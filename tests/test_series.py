"""Time-series fusion of a site (`stfusion fuse --site`) and the Cloud-Optimised GeoTIFFs every prediction is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from stfusion.cli import main
from stfusion.data.example_site import write_example_site
from stfusion.errors import InputError
from stfusion.inference.predict import predict_split
from stfusion.inference.series import fuse_site, reference_dates
from stfusion.methods.registry import get_method

PAIRS = ["2001-01-01", "2001-02-01", "2001-03-01", "2001-04-01"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return write_example_site(tmp_path_factory.mktemp("series") / "site", tiles=4, n_dates=7)


def test_the_nearest_usable_pair_is_the_reference():
    assert reference_dates("2001-02-10", PAIRS, 1, lambda d: True) == ("2001-02-01",)
    assert reference_dates("2001-02-01", PAIRS, 1, lambda d: True) == ("2001-03-01",)  # never itself: 28 days < 31
    assert reference_dates("2001-02-15", PAIRS, 1, lambda d: True) == ("2001-02-01",)  # 14 days either way: earlier
    assert reference_dates("2001-02-10", PAIRS, 1, lambda d: d != "2001-02-01") == ("2001-03-01",)
    assert reference_dates("2001-02-10", PAIRS, 2, lambda d: True) == ("2001-02-01", "2001-03-01")
    assert reference_dates("2001-02-10", PAIRS, 2, lambda d: d != "2001-03-01") == ("2001-02-01", "2001-04-01")
    with pytest.raises(InputError, match="none after it"):
        reference_dates("2001-05-01", PAIRS, 2, lambda d: True)
    with pytest.raises(InputError, match="no reference pair with a clear enough fine image"):
        reference_dates("2001-05-01", PAIRS, 1, lambda d: False)


def _cog(path: Path, bands: tuple[str, ...]) -> np.ndarray:
    with rasterio.open(path) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and src.block_shapes[0] == (256, 256)
        assert src.descriptions == bands and np.isnan(src.nodata)
        assert src.scales == (1.0,) * len(bands) and src.offsets == (0.0,) * len(bands)
        assert src.tags()["content"] == "predicted surface reflectance"
        return src.read()


def test_five_targets_give_five_cogs_and_a_rerun_skips_them(site, tmp_path, capsys):
    fine_dates = sorted(p.stem.removeprefix("S2_MSIL2A_") for p in (site / "S2").glob("S2_MSIL2A_????????.tif"))
    targets = [f"{d[:4]}-{d[4:6]}-{d[6:]}" for d in fine_dates[:5]]
    out = tmp_path / "series"
    results = fuse_site(site, out, method_name="temporal-difference", targets=targets, progress=False)
    assert [r.status for r in results] == ["written"] * 5 and sorted(p.name for p in out.iterdir()) == \
        [f"{t}.tif" for t in targets]
    for result in results:
        assert result.target not in result.references
        image = _cog(result.out, ("blue", "green", "red", "nir"))
        assert image.shape == (4, 120, 120) and np.isfinite(image).mean() > 0.5
        finite = image[np.isfinite(image)]
        assert 0 < np.median(finite) < 0.5
    stamps = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["fuse", "--site", str(site), "--method", "temporal-difference", "--out-dir", str(out),
                 "--targets", *targets]) == 0
    assert capsys.readouterr().out.count("skipped") == 5
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def test_by_default_the_coarse_only_dates_are_predicted(site, tmp_path):
    (result,) = fuse_site(site, tmp_path, method_name="persistence", progress=False)
    last_fine = max(p.stem.removeprefix("S2_MSIL2A_") for p in (site / "S2").glob("S2_MSIL2A_????????.tif"))
    assert result.target == "2002-05-04" and result.status == "written"
    assert result.references == (f"{last_fine[:4]}-{last_fine[4:6]}-{last_fine[6:]}",)  # the nearest pair


def test_bad_series_requests_are_one_line(site, tmp_path, capsys):
    assert main(["fuse", "--site", str(site), "--method", "starfm", "--out-dir", str(tmp_path),
                 "--targets", "2002-07-01"]) == 2
    assert "no coarse file for target 2002-07-01" in capsys.readouterr().err
    assert main(["fuse", "--site", str(site), "--method", "starfm", "--out-dir", str(tmp_path),
                 "--targets", "July"]) == 2
    assert "--targets: 'July' is not an ISO date" in capsys.readouterr().err
    assert main(["fuse", "--site", str(site), "--method", "starfm"]) == 2
    assert "--out-dir: required with --site" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_study_predictions_are_cogs(tiny_processed, tmp_path):
    _, cube, splits = tiny_processed
    predict_split(get_method("persistence"), cube, splits, tmp_path / "persistence", progress=False)
    for path in (tmp_path / "persistence").glob("*.tif"):
        _cog(path, tuple(str(b) for b in cube["band"].values))


def test_two_pair_methods_take_the_pairs_on_either_side(site, tmp_path):
    fine_dates = sorted(p.stem.removeprefix("S2_MSIL2A_") for p in (site / "S2").glob("S2_MSIL2A_????????.tif"))
    iso = [f"{d[:4]}-{d[4:6]}-{d[6:]}" for d in fine_dates]
    (inside,) = fuse_site(site, tmp_path / "estarfm", method_name="estarfm", targets=[iso[2]], progress=False)
    assert inside.references == (iso[1], iso[3]) and inside.status == "written"
    assert np.isfinite(_cog(inside.out, ("blue", "green", "red", "nir"))).mean() > 0.5
    (both,) = fuse_site(site, tmp_path / "starfm", method_name="starfm", targets=[iso[2]], progress=False)
    assert both.references == (iso[1], iso[3])  # STARFM's multi-pair mode
    with pytest.raises(InputError, match="none after it"):
        fuse_site(site, tmp_path / "edge", method_name="estarfm", progress=False)  # the last date: no pair after
    (edge,) = fuse_site(site, tmp_path / "edge", method_name="starfm", progress=False)
    assert len(edge.references) == 1


def test_no_prediction_lands_on_a_site_file_and_overwrite_predicts_again(site, tmp_path, capsys):
    (first,) = fuse_site(site, tmp_path / "out", method_name="persistence", progress=False)
    stamp = first.out.stat().st_mtime_ns
    (again,) = fuse_site(site, tmp_path / "out", method_name="temporal-difference", overwrite=True, progress=False)
    assert again.status == "written" and again.out.stat().st_mtime_ns > stamp
    trap = tmp_path / "trap"  # the target's output name is a link to one of the site's own files
    trap.mkdir()
    coarse_file = sorted((site / "S3").iterdir())[-1]
    (trap / first.out.name).symlink_to(coarse_file)
    before = coarse_file.read_bytes()
    for extra in ([], ["--overwrite"]):
        assert main(["fuse", "--site", str(site), "--method", "persistence", "--out-dir", str(trap), *extra]) == 2
        assert "is the input" in capsys.readouterr().err
    assert coarse_file.read_bytes() == before
    assert main(["fuse", "--site", str(site), "--method", "persistence", "--out-dir", str(site / "site.yaml")]) == 2
    assert "is a file; expected a folder" in capsys.readouterr().err


def test_a_large_site_is_fused_block_by_block_with_the_whole_scene_result(site, tmp_path, monkeypatch, capsys):
    """Blocks of 60 pixels (--block 64 on the 30-pixel coarse grid) of the 120-pixel example site: the coarse
    files are warped one box at a time, and a per-pixel method gives exactly the whole scene's prediction."""
    targets = ["2001-12-04", "2002-02-13"]  # the second's reference is 28 % cloud in its mask
    whole = fuse_site(site, tmp_path / "whole", method_name="temporal-difference", targets=targets, progress=False)
    import stfusion.inference.series as series

    def whole_scene_read(*args, **kwargs):
        raise AssertionError("a whole-scene read in the block-by-block path")

    monkeypatch.setattr(series, "fine_reflectance", whole_scene_read)
    monkeypatch.setattr(series, "coarse_reflectance", whole_scene_read)
    assert main(["fuse", "--site", str(site), "--method", "temporal-difference", "--out-dir", str(tmp_path / "blocks"),
                 "--targets", *targets, "--block", "64"]) == 0
    assert capsys.readouterr().out.count("written") == 2
    for result in whole:
        expected = _cog(result.out, ("blue", "green", "red", "nir"))
        assert 0.5 < np.isfinite(expected).mean()
        np.testing.assert_array_equal(_cog(tmp_path / "blocks" / result.out.name, ("blue", "green", "red", "nir")),
                                      expected)
    assert main(["fuse", "--site", str(site), "--method", "persistence", "--out-dir", str(tmp_path / "bad"),
                 "--block", "8"]) == 2
    assert "--block: expected a block side of at least 64 pixels, got 8" in capsys.readouterr().err
