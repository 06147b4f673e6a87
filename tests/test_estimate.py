"""The cost estimate of `make full`: counts from the full profile times measured seconds."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from stfusion.methods.models import AUTOENCODER
from stfusion.paths import find_root
from stfusion.pipeline.profiles import profile_params
from stfusion.rehearsal.estimate import (Costs, conditions_per_pair, estimate, full_scenes, rehearsal_costs, scored_runs,
                                        summary)

FULL = profile_params(find_root(), "full")


def test_the_full_scenes_are_the_real_sizes_and_splits():
    scenes = full_scenes(FULL)
    assert scenes["cia"] == (pytest.approx(2040 * 1720 / 1e6), 4, 4) and scenes["lgc"] == (pytest.approx(3200 * 2720 / 1e6), 2, 4)
    assert conditions_per_pair({"clouds": [0.0, 0.4], "time_gap": [1]}) == 1  # the undegraded: no prediction


def test_a_training_stage_is_steps_validation_and_test_predictions():
    models = [AUTOENCODER, *FULL["methods"]["models"]]
    costs = Costs("unit", {m: 2.0 for m in models}, {m: 10.0 for m in FULL["methods"]["baselines"] + models},
                  {"download@cia": 60.0})
    table = estimate(FULL, costs, {"cia": (3.0, 4, 5)})
    dcstfn = FULL["models"]["dcstfn"]["paper"]  # 200 epochs x 100 steps, 64 validation patches in batches of 12
    one_run = 200 * 100 * 2.0 + 200 * math.ceil(64 / 12) * 2.0 / 3 + 4 * 3.0 * 10.0
    trains = table[table["stage"] == "train"]
    assert dcstfn["epochs"] == 200 and trains["seconds"].iloc[0] == pytest.approx(3 * one_run)
    stfdiff = FULL["models"]["stfdiff"]["paper"]
    evaluations = stfdiff["arch"]["sample_steps"] * stfdiff["uncertainty_samples"]  # 10 DDIM steps x 8 samples
    assert trains["seconds"].iloc[-1] > 3 * 4 * 3.0 * 10.0 * evaluations
    seconds = table.set_index(["stage", "dataset"])["seconds"]
    assert seconds["download", "cia"] == 60.0 and math.isnan(seconds["preprocess", "cia"])
    text = summary(table, "unit")
    assert "| preprocess | 1 | not measured |" in text and "not every run measured" in text


def test_cpu_costs_come_from_the_rehearsals_runs(tmp_path):
    run = tmp_path / "data" / "predictions" / "cia" / "dcstfn" / "seed-42" / "run.json"
    run.parent.mkdir(parents=True)
    run.write_text(json.dumps({"settings": {"epochs": 1, "steps_per_epoch": 2}, "train_seconds": 30.0,
                               "height": 1000, "width": 2000, "predict_seconds": {"a": 4.0, "b": 6.0}}))
    (tmp_path / "rehearsal.csv").write_text("stage,status,wall_s,peak_rss_gib,peak_tree_rss_gib\n"
                                            "download@cia,ran,21.0,1,1\nfigures,failed,3.0,1,1\n")
    costs = rehearsal_costs(tmp_path, FULL)
    assert costs.step_s == {"dcstfn": 15.0} and costs.scene_s_per_mpx == {"dcstfn": 2.5}
    assert costs.stage_s == {"download@cia": 21.0}  # a failed stage measured nothing


def test_evaluate_scales_with_the_prediction_sets_it_scores(tmp_path):
    """The rehearsal scores one seed and one ablation variant; make full scores three seeds, their
    ensembles and seven variants: its evaluate stage takes that much longer."""
    rehearsal = profile_params(find_root(), "rehearsal")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(rehearsal))
    (tmp_path / "rehearsal.csv").write_text("stage,status,wall_s,peak_rss_gib,peak_tree_rss_gib\nevaluate,ran,100.0,1,1\n")
    costs = rehearsal_costs(tmp_path, FULL)
    models, baselines = len(FULL["methods"]["models"]), len(FULL["methods"]["baselines"])
    rows = len(FULL["ablation"]["full_model_rows"])
    assert costs.scored_runs == scored_runs(rehearsal) == baselines + models + len(rehearsal["ablation"]["variants"]) + rows
    assert scored_runs(FULL) == baselines + models * 3 + models + 7 + rows
    table = estimate(FULL, costs, full_scenes(FULL)).set_index("stage")
    assert table.loc["evaluate", "seconds"] == pytest.approx(100.0 * scored_runs(FULL) / scored_runs(rehearsal))
    assert estimate(FULL, Costs("gpu", {}, {}, {"evaluate": 100.0}), full_scenes(FULL)).set_index("stage").loc[
        "evaluate", "seconds"] == 100.0  # no count of what was scored: as measured
