"""Claims about the committed default study (reports/tables/scores.csv, written by `dvc repro`).

These read the study's committed results, so they fail when a change to a model or its settings
makes the claim false and the study is re-run and committed.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

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
    expected = {(dataset, method) for dataset in params["datasets"] for method in study_methods(params)}
    assert set(mean_rmse.index) == expected


def test_mcbam_gan_beats_persistence_on_rmse_in_the_default_study(mean_rmse):
    """Issue #6: on every dataset of the default study."""
    for dataset in mean_rmse.index.get_level_values("dataset").unique():
        mcbam, persistence = mean_rmse[(dataset, "mcbam-gan")], mean_rmse[(dataset, "persistence")]
        assert mcbam < persistence, f"{dataset}: mcbam-gan {mcbam:.4f} >= persistence {persistence:.4f}"
