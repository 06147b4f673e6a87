"""Claims about the committed default study (reports/tables/scores.csv, written by `dvc repro`).

These read the study's committed results, so they fail when a change to a model or its settings
makes the claim false and the study is re-run and committed.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from stfusion.inference.ensemble import ensemble_name
from stfusion.pipeline.params import load_params, study_methods

ROOT = Path(__file__).resolve().parents[1]
SCORES = ROOT / "reports" / "tables" / "scores.csv"


@pytest.fixture(scope="module")
def mean_rmse() -> pd.Series:
    """Mean test RMSE over pairs (all bands, whole scene), by dataset and method."""
    scores = pd.read_csv(SCORES)
    rows = scores[(scores["metric"] == "rmse") & (scores["band"] == "all") & (scores["region"] == "all")]
    return rows.groupby(["dataset", "method"])["value"].mean()


def test_the_committed_study_covers_the_default_datasets_and_methods(mean_rmse):
    params = load_params(ROOT / "params.yaml")
    methods = study_methods(params)
    if len(params["seeds"]) > 1:  # every deep model's seed ensemble is scored as a method of its own
        methods += [ensemble_name(m) for m in params["methods"]["models"]]
    expected = {(dataset, method) for dataset in params["datasets"] for method in methods}
    assert set(mean_rmse.index) == expected


def test_every_deep_model_was_scored_once_per_seed():
    params = load_params(ROOT / "params.yaml")
    scores = pd.read_csv(SCORES)
    seeds = scores[scores["method"].isin(params["methods"]["models"])].groupby(["dataset", "method"])["seed"]
    assert all(set(found) == set(params["seeds"]) for found in seeds.unique()), seeds.unique()


def test_mcbam_gan_beats_persistence_on_rmse_in_the_default_study(mean_rmse):
    """Issue #6: on every dataset of the default study."""
    for dataset in mean_rmse.index.get_level_values("dataset").unique():
        mcbam, persistence = mean_rmse[(dataset, "mcbam-gan")], mean_rmse[(dataset, "persistence")]
        assert mcbam < persistence, f"{dataset}: mcbam-gan {mcbam:.4f} >= persistence {persistence:.4f}"
