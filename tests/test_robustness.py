"""The robustness sweep: each degradation at the requested magnitude, every method at every level, failures
recorded rather than raised, and the stage's outputs written together."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from stfusion.data.datacube import cube_ratio
from stfusion.data.preprocess import preprocess_dataset
from stfusion.data.synthetic import generate_dataset
from stfusion.errors import ConfigError, InputError
from stfusion.evaluation.robustness import (check_levels, coarse_noise, degrade, findings, reference_at_gap,
                                            stored_predictions, summary, sweep)
from stfusion.inference.predict import pair_inputs, predict_split
from stfusion.methods.registry import get_method
from stfusion.reporting.robustness import write_robustness

LEVELS = {"clouds": [0.0, 0.5], "geolocation": [0.0, 1.0], "coarse_noise": [0.0, 0.02], "time_gap": [1, 2]}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("robust")
    generate_dataset("cia-sim", folder / "raw", {"height": 100, "width": 80, "n_dates": 6, "seed": 4,
                                                 "preset": "realistic", "cloudy_dates": 0.0})
    return preprocess_dataset(folder / "raw", folder / "processed", {"n_test": 2, "n_val": 1})


@pytest.fixture(scope="module")
def table(scene):
    cube, splits = scene
    methods = [get_method(m) for m in ("persistence", "temporal-difference")]
    return sweep(cube, splits, methods, LEVELS, seed=0, progress=False)


def test_clouds_hide_the_requested_share_of_the_reference(scene):
    cube, splits = scene
    inputs = pair_inputs(cube, splits.test[0])
    out = degrade(inputs, "clouds", 0.5, np.random.default_rng(0), ratio=cube_ratio(cube))
    gaps = np.isnan(out["fine_ref"]).any(axis=0)
    assert gaps.sum() == round(0.5 * gaps.size) and not out["valid"][gaps].any()
    assert np.isfinite(inputs["fine_ref"]).all()  # the inputs themselves are left alone


def test_geolocation_moves_the_target_coarse_image_by_the_requested_distance(scene):
    cube, splits = scene
    inputs = pair_inputs(cube, splits.test[0])
    ratio = cube_ratio(cube)
    out = degrade(inputs, "geolocation", 1.0, np.random.default_rng(1), ratio=ratio)
    before, after = inputs["coarse_target"], out["coarse_target"]
    best = min(((dy, dx) for dy in range(-ratio, ratio + 1) for dx in range(-ratio, ratio + 1)),
               key=lambda s: np.abs(np.roll(before, s, axis=(1, 2))[:, ratio:-ratio, ratio:-ratio]
                                    - after[:, ratio:-ratio, ratio:-ratio]).sum())
    assert math.hypot(*best) == pytest.approx(ratio, abs=0.75)
    np.testing.assert_array_equal(out["coarse_ref"], inputs["coarse_ref"])


def test_coarse_noise_is_constant_over_each_coarse_pixel_of_the_offset_grid():
    noise = coarse_noise(np.random.default_rng(2), (2, 400, 400), 0.02, 20, grid_offset=(7, 13))
    assert np.ptp(noise[0, 7:27, 13:33]) == 0 and np.ptp(noise[0, 6:8, 13]) > 0  # an edge at row 7, not at 0
    assert np.ptp(noise[1, 7:27, 13:33]) == 0 and noise[0, 7, 13] != noise[1, 7, 13]  # each band its own
    assert noise[:, 7::20, 13::20].std() == pytest.approx(0.02, rel=0.1)


def test_a_longer_time_gap_takes_an_earlier_reference(scene):
    cube, splits = scene
    dates = [d for d in pd.DatetimeIndex(cube["time"].values).strftime("%Y-%m-%d")]
    pair = splits.test[-1]
    assert reference_at_gap(splits, dates, pair, 1) == pair
    earlier = [d for d in dates[:dates.index(pair[1])] if d not in splits.test_targets]
    assert reference_at_gap(splits, dates, pair, 2) == (earlier[-2], pair[1])
    assert reference_at_gap(splits, dates, pair, len(earlier) + 1) is None


def test_every_method_is_scored_at_every_level(scene, table):
    _, splits = scene
    assert set(table["method"]) == {"persistence", "temporal-difference"}
    assert set(map(tuple, table[["degradation", "level"]].drop_duplicates().values)) == {
        (d, float(level)) for d, values in LEVELS.items() for level in values}
    assert (table["error"] == "").all() and table["rmse"].notna().all()
    none = table[table["level"] == table["degradation"].map({"clouds": 0, "geolocation": 0, "coarse_noise": 0,
                                                             "time_gap": 1})]
    assert none.groupby(["method", "target_date"])["rmse"].nunique().eq(1).all()  # one undegraded run, reused


def test_each_degradation_hits_the_methods_that_use_that_input(table):
    mean = table.groupby(["method", "degradation", "level"])["rmse"].mean()
    for degradation in ("geolocation", "coarse_noise"):  # persistence never looks at a coarse image
        assert mean[("persistence", degradation)].nunique() == 1
        assert mean[("temporal-difference", degradation)].iloc[-1] > mean[("temporal-difference", degradation)].iloc[0]
    clouds = table[(table["degradation"] == "clouds") & (table["level"] == 0.5)]
    assert clouds["predicted"].between(0.3, 0.7).all()  # the reference's gaps are left out


def test_a_method_that_refuses_an_input_is_recorded_not_raised(scene):
    cube, splits = scene

    def refuse(fine_ref, coarse_ref, coarse_target, *, valid=None, ratio=None):
        if np.isnan(fine_ref).any():
            raise InputError("valid: not enough pure coarse pixels")
        return fine_ref

    method = get_method("persistence").__class__(name="picky", family="traditional", description="test",
                                                 predictor=refuse)
    table = sweep(cube, splits, [method], {**LEVELS, "geolocation": [0.0], "coarse_noise": [0.0],
                                           "time_gap": [1]}, seed=0, progress=False)
    failed = table[table["error"] != ""]
    assert set(failed["level"]) == {0.5} and failed["rmse"].isna().all() and (failed["predicted"] == 0).all()
    row = summary(table).set_index("degradation").loc["clouds"]
    assert row["failed_levels"] == "0.5" and math.isnan(row["change_percent"])
    assert any("fails: `picky` at 0.5" in line for line in findings(summary(table)))


def test_levels_are_checked_with_the_parameter_named():
    check_levels(LEVELS)
    for levels, key in [({**LEVELS, "clouds": [0.2, 0.4]}, "clouds"), ({**LEVELS, "clouds": [0.0, 0.95]}, "clouds"),
                        ({**LEVELS, "time_gap": [1, 2.5]}, "time_gap"), ({**LEVELS, "geolocation": [0.0, 1.0, 0.5]},
                                                                        "geolocation")]:
        with pytest.raises(ConfigError, match=f"robustness.levels.{key}"):
            check_levels(levels)
    with pytest.raises(ConfigError, match="robustness.levels"):
        check_levels({"clouds": [0.0]})


def test_the_outputs_are_written_together(table, tmp_path):
    out = write_robustness(table, tmp_path / "robustness" / "cia-sim", dataset="cia-sim", label="test")
    assert sorted(p.name for p in out.iterdir()) == ["robustness.csv", "robustness.png", "summary.csv", "summary.md"]
    assert len(pd.read_csv(out / "robustness.csv")) == len(table)
    text = (out / "summary.md").read_text()
    assert "least affected" in text and "time gap to the reference" in text


def test_degrading_never_changes_the_inputs_it_was_given(scene):
    cube, splits = scene
    inputs = pair_inputs(cube, splits.test[0])
    before = {name: array.copy() for name, array in inputs.items()}
    for name, level in [("clouds", 0.3), ("geolocation", 1.0), ("coarse_noise", 0.02), ("clouds", 0.0)]:
        out = degrade(inputs, name, level, np.random.default_rng(5), ratio=cube_ratio(cube))
        assert out is not inputs
    for name, array in inputs.items():
        np.testing.assert_array_equal(array, before[name])


def test_a_sweep_of_the_undegraded_inputs_only_is_written_too(scene, tmp_path):
    """The rehearsal's sweep (profiles/rehearsal.yaml): no degraded level at all."""
    cube, splits = scene
    levels = {"clouds": [0.0], "geolocation": [0.0], "coarse_noise": [0.0], "time_gap": [1]}
    table = sweep(cube, splits, [get_method("persistence")], levels, seed=0, progress=False)
    out = write_robustness(table, tmp_path / "robustness", dataset="cia-sim", label="test")
    assert len(pd.read_csv(out / "robustness.csv")) == len(table) == 4 * len(splits.test)
    assert (out / "robustness.png").stat().st_size > 0 and (out / "summary.md").is_file()


def test_the_undegraded_inputs_are_scored_from_the_written_predictions(scene, tmp_path):
    """The predict stage's files stand in for predicting the undegraded inputs again: same scores, and the
    method runs only on degraded inputs."""
    cube, splits = scene
    method = get_method("temporal-difference")
    predict_split(method, cube, splits, tmp_path / "temporal-difference", progress=False)
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return method.predict(*args, **kwargs)

    counted = dataclasses.replace(method, predictor=counting)
    levels = {**LEVELS, "geolocation": [0.0], "coarse_noise": [0.0], "time_gap": [1]}
    fresh = sweep(cube, splits, [method], levels, seed=0, progress=False)
    reused = sweep(cube, splits, [counted], levels, seed=0, progress=False,
                   stored=stored_predictions({"temporal-difference": tmp_path / "temporal-difference"}))
    pd.testing.assert_frame_equal(reused, fresh)
    assert len(calls) == len(splits.test)  # the clouds level only
    missing = sweep(cube, splits, [counted], levels, seed=0, progress=False, stored=stored_predictions({}))
    pd.testing.assert_frame_equal(missing, fresh)
