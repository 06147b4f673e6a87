"""A user's own site: the example site (Sentinel-2-like 10 m, Sentinel-3-like 300 m in EPSG:4326) through
ingestion, preprocess, a deep model's quick training and evaluate; and bad sites stop with one clear line."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from affine import Affine

from stfusion.inference.weights import read_card
from stfusion.data.datasets import SITES_VARIABLE, get_dataset, use_sites
from stfusion.data.example_site import write_example_site
from stfusion.data.preprocess import preprocess_dataset
from stfusion.data.raster import read_geotiff
from stfusion.data.site import ingest_site, load_site
from stfusion.data.sources import acquire
from stfusion.errors import ConfigError, InputError
from stfusion.evaluation.scores import score_predictions
from stfusion.pipeline.params import load_params, validate_params
from stfusion.train.config import tier_settings
from stfusion.train.run import run_method


@pytest.fixture(scope="module")
def example_master(tmp_path_factory) -> Path:
    return write_example_site(tmp_path_factory.mktemp("sites") / "example")


@pytest.fixture
def example(example_master, tmp_path) -> Path:
    """A private copy of the example site, safe to damage."""
    return Path(shutil.copytree(example_master, tmp_path / "example"))


@pytest.fixture(autouse=True)
def no_sites(monkeypatch):
    monkeypatch.setenv(SITES_VARIABLE, "{}")  # use_sites writes here; monkeypatch restores it


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_example_site_is_ingested_onto_the_fine_grid(example, tmp_path):
    before = _snapshot(example)
    manifest = ingest_site("example", example, tmp_path / "raw", progress=False)
    assert _snapshot(example) == before  # the user's folder is only read
    assert manifest.ratio == 30 and manifest.source == "site" and manifest.bands == ["blue", "green", "red", "nir"]
    assert len(manifest.dates) == 7 and manifest.meta["coarse_only_dates"] == ["2002-05-04"]
    assert all(cover == 1.0 for cover in manifest.meta["coarse_cover"].values())
    manifest.verify()
    fine = read_geotiff(manifest.file(manifest.dates[0]["date"], "fine"))
    coarse = read_geotiff(manifest.file(manifest.dates[0]["date"], "coarse"))
    with rasterio.open(example / "S2" / "S2_MSIL2A_20011008.tif") as original:
        assert fine.grid.crs == original.crs and fine.grid.transform == original.transform
        expected = original.read([1, 2, 3, 4]).astype(np.int32) - 1000  # L2A: value x 1e-4 - 0.1
    assert coarse.grid == fine.grid and fine.data.dtype == coarse.data.dtype == np.int16
    ok = expected > 0
    np.testing.assert_array_equal(fine.data[ok], expected[ok])
    # the coarse image warped from EPSG:4326 keeps its ~300 m blocks: it tracks the fine image's 300 m means
    blocks = lambda a: a.reshape(4, 8, 30, 8, 30).astype(float).mean(axis=(2, 4))  # noqa: E731
    for band in range(4):
        assert np.corrcoef(blocks(fine.data)[band].ravel(), blocks(coarse.data)[band].ravel())[0, 1] > 0.6
    assert any("fine_qa" in entry for entry in manifest.dates)


def test_site_runs_through_preprocess_training_and_evaluate(example_master, tmp_path, monkeypatch):
    params = load_params(build_models=False)
    params["download"]["sites"] = {"example": str(example_master)}
    params["datasets"] = ["example"]
    validate_params(params, build_models=False)
    assert get_dataset("example").kind == "site" and get_dataset("example").paper is None
    raw = tmp_path / "data" / "raw" / "example"
    acquire("example", raw)
    cube, splits = preprocess_dataset(raw, tmp_path / "processed", {"n_test": 1, "n_val": 1})
    assert cube.sizes["band"] == 4 and cube.attrs["ratio"] == 30
    config = tier_settings(params["models"], "dcstfn", "quick")
    config = dataclasses.replace(config, epochs=2, steps_per_epoch=4, batch_size=4, patch_size=48, val_patches=4)
    record = run_method("dcstfn", cube, splits, tmp_path / "dcstfn", seed=0, config=config, tier="quick",
                        checkpoint_dir=tmp_path / "checkpoints", train_options={"progress": False})
    assert record["settings"]["arch"]["bands"] == 4
    card = read_card(tmp_path / "dcstfn" / "model.pt")["card"]  # what the user of these weights is told
    assert card["bands"] == ["blue", "green", "red", "nir"] and card["ratio"] == 30 and card["pixel_size"] == [10.0, 10.0]
    assert card["crs"].startswith("EPSG:") and card["reflectance_scale"] == 10000 and card["tier"] == "quick"
    assert (card["patch_size"], card["batch_size"], card["steps"], card["seed"]) == (48, 4, 8, 0)
    assert card["train_dates"] == list(splits.train_dates) and card["validation_targets"] == sorted(splits.val_targets)
    assert set(record["code"]) == {"stfusion", "commit"}
    history = pd.read_csv(tmp_path / "dcstfn" / "history.csv")
    loss = history[(history["split"] == "train") & (history["metric"] == "loss")].groupby("epoch")["value"].mean()
    assert loss.iloc[-1] < loss.iloc[0]
    scores = score_predictions(cube, splits, tmp_path / "dcstfn")
    overall = scores[(scores["band"] == "all") & (scores["region"] == "all")].set_index("metric")["value"]
    assert np.isfinite(overall["rmse"]) and 0 < overall["rmse"] < 0.2
    assert set(scores["band"]) == {"blue", "green", "red", "nir", "all"}


def _edit_yaml(folder: Path, **changes) -> None:
    path = folder / "site.yaml"
    spec = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            spec[section][field] = value
        else:
            spec[section] = value
    path.write_text(yaml.safe_dump(spec))


def _rewrite(path: Path, *, bands: list[int] | None = None, shift: float = 0.0, scale: float = 1.0) -> None:
    """Rewrite a GeoTIFF with only ``bands``, its origin moved by ``shift`` and its pixels ``scale`` times larger."""
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read(bands or list(range(1, src.count + 1)))
        t = src.transform
    profile.update(count=data.shape[0], transform=Affine(t.a * scale, t.b, t.c + shift, t.d, t.e * scale, t.f))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


@pytest.mark.parametrize("damage, message", [
    ("bad_date", "20011332"),
    ("apart", "does not overlap the fine image"),
    ("band_count", "has 3 bands, the site has 4"),
    ("ratio", "not an integer ratio"),
    ("fine_grid", "grid does not match"),
])
def test_bad_site_stops_with_one_line_naming_the_file_and_writes_nothing(example, tmp_path, damage, message):
    coarse = sorted((example / "S3").glob("*.tif"))
    if damage == "bad_date":
        shutil.copy(example / "S2" / "S2_MSIL2A_20011008.tif", example / "S2" / "S2_MSIL2A_20011332.tif")
    elif damage == "apart":
        _rewrite(coarse[2], shift=40.0)  # 40 degrees east
    elif damage == "band_count":
        _rewrite(coarse[2], bands=[1, 2, 3])
    elif damage == "ratio":
        for path in coarse:
            _rewrite(path, scale=1.45)  # 435 m pixels: 43.5 fine pixels of 10 m
    elif damage == "fine_grid":
        _rewrite(sorted((example / "S2").glob("S2_MSIL2A_????????.tif"))[3], shift=10.0)
    out = tmp_path / "raw"
    with pytest.raises(InputError) as err:
        ingest_site("example", example, out, progress=False)
    assert message in str(err.value) and str(example) in str(err.value)
    assert "\n" not in str(err.value)
    assert not out.exists() and not list(tmp_path.glob(".raw*"))


def test_an_existing_raw_folder_is_kept_when_the_site_is_bad(example, tmp_path):
    out = tmp_path / "raw"
    ingest_site("example", example, out, progress=False)
    before = _snapshot(out)
    _rewrite(sorted((example / "S3").glob("*.tif"))[0], bands=[1, 2])
    with pytest.raises(InputError):
        ingest_site("example", example, out, progress=False)
    assert _snapshot(out) == before


@pytest.mark.parametrize("changes, key", [
    ({"bands": ["red", "nir"]}, "bands"),
    ({"fine__files": "S2/S2_MSIL2A.tif"}, "fine.files"),
    ({"fine__files": "../S2_{date:%Y%m%d}.tif"}, "fine.files"),
    ({"coarse__bands": [1, 2]}, "coarse.bands"),
    ({"resampling": "lanczos-ish"}, "resampling"),
    ({"ratio": 1}, "ratio"),
    ({"coarse__scale": -1}, "coarse.scale"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_site_yaml_names_the_key(example, changes, key):
    _edit_yaml(example, **changes)
    with pytest.raises(ConfigError, match=rf"site\.yaml: {key}"):
        load_site(example)


def test_a_ratio_in_site_yaml_overrides_the_pixel_sizes(example, tmp_path):
    for path in sorted((example / "S3").glob("*.tif")):
        _rewrite(path, scale=1.45)  # 435 m: 43.5 fine pixels, not an integer
    with pytest.raises(InputError, match="not an integer ratio"):
        ingest_site("example", example, tmp_path / "a", progress=False)
    _edit_yaml(example, ratio=43, check_bands=False)
    assert ingest_site("example", example, tmp_path / "b", progress=False).ratio == 43


def test_sites_in_params(example_master, tmp_path):
    params = load_params(build_models=False)
    params["download"]["sites"] = {"cia": str(example_master)}
    with pytest.raises(ConfigError, match="built-in dataset"):
        validate_params(params, build_models=False)
    params["download"]["sites"] = {"mine": str(tmp_path / "nowhere")}
    with pytest.raises(ConfigError, match=r"download\.sites\.mine: expected an existing folder"):
        validate_params(params, build_models=False)
    params["download"]["sites"] = {}
    params["datasets"] = ["mine"]
    with pytest.raises(ConfigError, match=r"datasets\[0\]: unknown dataset 'mine'"):
        validate_params(params, build_models=False)


def test_sites_reach_child_processes_through_the_environment(example_master):
    import json
    import os
    import subprocess
    import sys

    use_sites({"mine": str(example_master)})
    code = "from stfusion.data.datasets import get_dataset; print(get_dataset('mine').folder)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ).stdout
    assert out.strip() == str(example_master) and json.loads(os.environ[SITES_VARIABLE]) == {"mine": str(example_master)}


def test_the_data_supplies_the_band_count():
    from stfusion.methods.models import arch_for_data, build_model, discriminator_for_data

    assert arch_for_data("dcstfn", {}, None, bands=4) == {"bands": 4}
    assert build_model("dcstfn", arch_for_data("dcstfn", {"channels": [4, 4, 4]}, 20, bands=4)).bands == 4
    assert discriminator_for_data("gan-stfm", {"width_multiplier": 0.25}, 4) == {"width_multiplier": 0.25, "bands": 4}
    with pytest.raises(ConfigError, match=r"models\.dcstfn\.arch\.bands: 6, but the data has 4 bands"):
        arch_for_data("dcstfn", {"bands": 6}, None, bands=4)


def test_swapped_red_and_nir_are_caught(example, tmp_path):
    _edit_yaml(example, coarse__bands=[1, 2, 4, 3])
    with pytest.raises(InputError, match=r"does not match the fine image: fine band 3 correlates best with coarse "
                                         r"band 4 .*; fine band 4 correlates best with coarse band 3"):
        ingest_site("example", example, tmp_path / "raw", progress=False)


def test_a_changed_site_is_seen(example, tmp_path):
    import os

    from stfusion.data.site import stale_site

    raw = tmp_path / "raw"
    assert not stale_site(example, raw)  # never read: the download stage runs anyway
    ingest_site("example", example, raw, progress=False)
    assert not stale_site(example, raw)
    path = sorted((example / "S3").glob("*.tif"))[0]
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # the user replaced a file
    assert stale_site(example, raw)
