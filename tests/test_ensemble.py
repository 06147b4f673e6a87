"""Seed ensembles: the per-pixel mean of a model's seed runs, with their spread as its uncertainty."""

import json

import numpy as np
import pytest

from stfusion.data.raster import read_geotiff
from stfusion.errors import InputError
from stfusion.inference.ensemble import ensemble_mean_and_spread, ensemble_name, write_ensemble
from stfusion.inference.predict import prediction_name, predict_split, uncertainty_name
from stfusion.io import write_json
from stfusion.methods.registry import get_method


def test_identical_members_have_zero_spread_and_the_mean_is_per_pixel():
    rng = np.random.default_rng(0)
    member = rng.random((2, 5, 4), dtype=np.float32)
    mean, spread = ensemble_mean_and_spread([member, member, member])
    np.testing.assert_array_equal(mean, member)
    assert spread.dtype == np.float32 and not spread.any()
    mean, spread = ensemble_mean_and_spread([member, member + 0.2])
    np.testing.assert_allclose(mean, member + 0.1, atol=1e-6)
    np.testing.assert_allclose(spread, np.sqrt(0.02), rtol=1e-5)  # ddof = 1: sqrt(2 * 0.1^2 / 1)
    with pytest.raises(InputError, match="at least 2 members"):
        ensemble_mean_and_spread([member])


def test_write_ensemble_writes_mean_spread_and_a_record(tmp_path, tiny_processed):
    _, cube, splits = tiny_processed
    folders = []
    for seed, name in ((1, "persistence"), (2, "temporal-difference")):  # two "seeds" that differ
        folder = tmp_path / f"seed-{seed}"
        predict_split(get_method(name), cube, splits, folder, extra={"seed": seed})
        record = json.loads((folder / "run.json").read_text())
        write_json(folder / "run.json", {**record, "family": "cnn", "parameters": 10, "train_seconds": 5.0})
        folders.append(folder)
    record = write_ensemble("dcstfn", folders, cube, splits, tmp_path / "ensemble")
    assert record["method"] == ensemble_name("dcstfn") == "dcstfn-ensemble" and record["family"] == "cnn"
    assert record["members"] == [1, 2] and record["parameters"] == 20 and record["train_seconds"] == 10.0
    pair = splits.test[0]
    members = [read_geotiff(f / prediction_name(pair)).data for f in folders]
    mean = read_geotiff(tmp_path / "ensemble" / prediction_name(pair)).data
    spread = read_geotiff(tmp_path / "ensemble" / uncertainty_name(pair)).data
    np.testing.assert_allclose(mean, (members[0] + members[1]) / 2, rtol=1e-6)
    np.testing.assert_allclose(spread, np.abs(members[0] - members[1]) / np.sqrt(2), rtol=1e-5, atol=1e-7)
    with pytest.raises(InputError, match="run.json: run record not found"):
        write_ensemble("dcstfn", [tmp_path / "missing", folders[0]], cube, splits, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_coverage_of_a_calibrated_spread_is_the_nominal_ninety_percent():
    from stfusion.evaluation.scores import interval_coverage

    rng = np.random.default_rng(1)
    std = rng.uniform(0.01, 0.05, (3, 200, 200))
    inside = np.ones((200, 200), bool)
    calibrated = interval_coverage(std, rng.normal(0, std), inside)
    assert calibrated["coverage_90"] == pytest.approx(0.90, abs=0.005)
    assert interval_coverage(std, rng.normal(0, 2 * std), inside)["coverage_90"] < 0.6  # over-confident
    assert interval_coverage(std, rng.normal(0, std / 2), inside)["coverage_90"] > 0.99  # under-confident
    assert interval_coverage(std, std, np.zeros((200, 200), bool))["pixels"] == 0
