"""benchmarks/learning_curves.py: a 1x run of a study seed is read from the study, not trained again."""

import importlib.util
import json
from pathlib import Path

import pandas as pd

from stfusion.paths import Workspace

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("learning_curves", ROOT / "benchmarks" / "learning_curves.py")
curves = importlib.util.module_from_spec(spec)
spec.loader.exec_module(curves)


def fake_study(root: Path, epochs: int) -> Workspace:
    workspace = Workspace(root)
    folder = workspace.predictions("cia-sim", "dcstfn", 43)
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"epochs": epochs, "tier": "quick", "train_seconds": 12.5,
                                                 "best_epoch": 3}))
    (root / "reports" / "tables").mkdir(parents=True)
    rows = [("cia-sim", "dcstfn", seed, "all", "all", "rmse", value)
            for seed, value in ((42, 0.5), (43, 0.02), (43, 0.04))]
    pd.DataFrame(rows, columns=["dataset", "method", "seed", "band", "region", "metric", "value"]).to_csv(
        root / "reports" / "tables" / "scores.csv", index=False)
    return workspace


def test_the_study_row_is_the_seed_mean_of_the_study_run(tmp_path):
    config = curves.quick_config("dcstfn", 1)
    row = curves.study_row("cia-sim", "dcstfn", 43, tmp_path, fake_study(tmp_path, config.epochs))
    assert row["source"] == "study" and row["multiplier"] == 1.0 and row["best_epoch"] == 3
    assert row["test_rmse"] == 0.03 and row["steps"] == config.epochs * config.steps_per_epoch


def test_a_study_run_with_other_settings_or_none_at_all_is_not_reused(tmp_path):
    workspace = fake_study(tmp_path, curves.quick_config("dcstfn", 1).epochs + 1)
    assert curves.study_row("cia-sim", "dcstfn", 43, tmp_path, workspace) is None
    assert curves.study_row("cia-sim", "dcstfn", 44, tmp_path, workspace) is None
