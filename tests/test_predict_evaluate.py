"""Reference predictors, full-scene predictions and their scores."""

from pathlib import Path

import numpy as np
import pytest

from stfusion.methods.baselines.reference import persistence, temporal_difference
from stfusion.data.raster import read_geotiff
from stfusion.evaluation.scores import change_regions, score_predictions, summary_metrics
from stfusion.reporting.results import evaluate_study
from stfusion.methods.registry import get_method
from stfusion.paths import Workspace
from stfusion.inference.predict import predict_split, prediction_name


def test_reference_predictors_are_exact():
    rng = np.random.default_rng(0)
    f1, c1, c2 = (rng.random((6, 4, 4), dtype=np.float32) for _ in range(3))
    np.testing.assert_array_equal(persistence(f1, c1, c2), f1)
    np.testing.assert_allclose(temporal_difference(f1, c1, c2), f1 + (c2 - c1), rtol=0, atol=1e-6)
    # A uniform change seen by the coarse sensor is reproduced exactly.
    np.testing.assert_allclose(temporal_difference(f1, c1, c1 + 0.05), f1 + 0.05, atol=1e-6)


def _study(tmp_path, tiny_processed):
    import shutil

    out, _, _ = tiny_processed
    ws = Workspace(tmp_path)
    shutil.copytree(out, ws.processed("cia-sim"))
    return ws


def test_predictions_are_georeferenced_float_and_scored(tmp_path, tiny_processed):
    _, cube, splits = tiny_processed
    ws = _study(tmp_path, tiny_processed)
    for name in ("persistence", "temporal-difference"):
        predict_split(get_method(name), cube, splits, ws.predictions("cia-sim", name))
    pair = splits.test[0]
    prediction = read_geotiff(ws.predictions("cia-sim", "persistence") / prediction_name(pair))
    assert prediction.data.dtype == np.float32 and prediction.grid.crs.to_epsg() == 32755
    np.testing.assert_allclose(prediction.data, cube["fine"].sel(time=pair[0]).values / 10000, rtol=1e-6)
    scores = score_predictions(cube, splits, ws.predictions("cia-sim", "persistence"))
    assert list(scores.columns) == ["dataset", "method", "seed", "family", "reference_date", "target_date", "band",
                                    "region", "metric", "value"]
    assert scores["seed"].isna().all()  # a deterministic method has no seed
    assert set(scores["band"]) == {"blue", "green", "red", "nir", "swir1", "swir2", "all"}
    assert {"all", "unchanged"} <= set(scores["region"]) <= {"all", "changed", "unchanged"}  # cia-sim: no class change
    assert set(scores["metric"]) == {"rmse", "mae", "bias", "psnr", "ssim", "sam", "ergas", "cc", "uiqi", "predicted"}
    assert (scores.query("metric == 'predicted'")["value"] == 1).all()  # cloud-free: every pixel predicted
    assert np.isfinite(scores["value"]).all()
    predict_split(get_method("persistence"), cube, splits, ws.ablation("cia-sim") / "a")
    # "a": a variant's own folder; "full": a row filled by the ablation model's train-stage run
    results = evaluate_study(ws, ["cia-sim"], ["persistence", "temporal-difference"], ["a"], "test",
                             ablation_model="temporal-difference", full_model_rows=["full"])
    metrics = results["metrics"]["cia-sim"]
    # On the synthetic scene, adding the coarse temporal change must help, most where cover changed.
    assert metrics["temporal-difference"]["rmse"] < metrics["persistence"]["rmse"]
    for name in ("scores.csv", "ablation_scores.csv", "runs.csv", "conventions.json", "metrics_cia-sim.md",
                 "differences.csv", "ranking.csv", "coverage.csv", "significance_cia-sim.md"):
        assert (ws.tables / name).is_file(), name
    assert (ws.metrics / "cia-sim.json").is_file() and list((ws.tables / "paper").glob("*.tex"))
    assert "not comparable to the published numbers" in (ws.tables / "metrics_cia-sim.md").read_text()
    runs = results["runs"].set_index("method")
    assert set(runs.index) == {"persistence", "temporal-difference", "a", "full"}
    ablation = results["ablation"]
    assert set(ablation["method"]) == {"a", "full"}
    full = ablation[ablation["method"] == "full"].set_index(["band", "region", "metric", "target_date"])["value"]
    td = results["scores"][results["scores"]["method"] == "temporal-difference"]
    np.testing.assert_allclose(full.sort_index().values,
                               td.set_index(["band", "region", "metric", "target_date"])["value"].sort_index().values)
    assert (runs["predict_seconds_median"] > 0).all() and (runs["parameters"] == 0).all()


def test_change_regions_come_from_truth_or_a_threshold(tiny_processed):
    _, cube, splits = tiny_processed
    pair = splits.test[0]
    ref, target = (list(cube["time"].dt.strftime("%Y-%m-%d").values).index(d) for d in pair)
    cover = cube["cover"].values.copy()
    cover[target, :10, :] = 0  # a flood over the top rows on the target date
    flooded = cube.assign(cover=(cube["cover"].dims, cover))
    regions, source = change_regions(flooded, pair)
    np.testing.assert_array_equal(regions["changed"], cover[ref] != cover[target])
    assert "truth" in source and regions["changed"][:10].any() and not regions["changed"][10:].any()
    assert (regions["changed"] ^ regions["unchanged"]).all()
    regions, source = change_regions(cube.drop_vars(["cover", "change"]), pair, threshold=0.05)
    assert "0.05" in source and regions["changed"].any()


def test_summary_metrics_keep_the_headline_averaged_over_pairs_and_seeds():
    import pandas as pd

    rows = [("all", "all", "rmse", 0.1), ("all", "all", "rmse", 0.3), ("all", "changed", "rmse", 0.5),
            ("all", "all", "ssim", float("inf")), ("nir", "all", "rmse", 9.0), ("all", "all", "mae", 0.1),
            ("all", "unchanged", "rmse", 0.2)]
    scores = pd.DataFrame(rows, columns=["band", "region", "metric", "value"]).assign(method="m")
    assert summary_metrics(scores) == {"m": {"rmse": 0.2, "rmse_changed": 0.5}}


def test_evaluate_without_predictions_writes_nothing(tmp_path, tiny_processed):
    from stfusion.errors import InputError

    ws = _study(tmp_path, tiny_processed)
    with pytest.raises(InputError, match="run.json"):
        evaluate_study(ws, ["cia-sim"], ["persistence"], ["a"], "test")
    assert not ws.tables.exists() and not ws.metrics.exists()


def test_real_dataset_manifest_lands_in_data_raw_with_downloads_kept_outside(tmp_path, monkeypatch):
    """acquire() of a real dataset: files stay in data/downloads/<ds> (resumable, outside the DVC
    output), and data/raw/<ds>/manifest.json points at them with paths relative to itself."""
    from test_real_data import write_tree

    from stfusion.data import real
    from stfusion.data.manifest import Manifest
    from stfusion.data.sources import acquire

    spec = real.get_spec("lgc").restrict(dates=["2004-04-16", "2004-05-02"], shape=(6, 8, 10))
    seen = {}

    def fake_download(dataset, dest, *, raw_dir=None):
        seen["dest"] = dest
        write_tree(dest / "extracted", spec)
        return real.scan_raw_dir(spec, dest / "extracted", manifest_folder=dest)

    monkeypatch.setattr(real, "download", fake_download)
    raw = tmp_path / "data" / "raw" / "lgc"
    manifest = acquire("lgc", raw)
    assert seen["dest"] == tmp_path / "data" / "downloads" / "lgc"
    assert sorted(p.name for p in raw.iterdir()) == ["manifest.json"]
    loaded = Manifest.load(raw)
    loaded.verify()
    assert loaded.date_list() == manifest.date_list() == ["2004-04-16", "2004-05-02"]
    assert all(not Path(e["fine"]).is_absolute() and e["fine"].startswith("../../downloads/lgc/") for e in loaded.dates)


def test_git_commit_ignores_the_runs_own_outputs(tmp_path):
    import subprocess

    from stfusion.provenance import git_commit

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e.invalid", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    assert git_commit(tmp_path).startswith("unknown")
    git("init", "-q")
    for name in ("params.yaml", "dvc.lock", "reports/README.md"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("a")
    git("add", "-A")
    git("commit", "-qm", "x")
    (tmp_path / "dvc.lock").write_text("b")
    (tmp_path / "reports" / "README.md").write_text("b")
    assert "uncommitted" not in git_commit(tmp_path)
    (tmp_path / "params.yaml").write_text("b")
    assert git_commit(tmp_path).endswith("(with uncommitted changes)")


def test_uncertainty_deciles_of_a_calibrated_std():
    from stfusion.errors import InputError
    from stfusion.evaluation.scores import uncertainty_deciles

    rng = np.random.default_rng(1)
    std = rng.uniform(0.001, 0.05, 200_000)
    table = uncertainty_deciles(std, rng.normal(0, std))
    assert list(table["decile"]) == list(range(1, 11)) and table["pixels"].sum() == 200_000
    assert table["std_mean"].is_monotonic_increasing and table["rmse"].is_monotonic_increasing
    # Errors drawn with the predicted std: RMSE in each decile ~ the decile's std (a little above its mean
    # std, since RMSE averages std^2; most in the widest, first decile).
    np.testing.assert_allclose(table["rmse"], table["std_mean"], rtol=0.10)
    assert (table["rmse"] >= table["std_mean"] * 0.98).all()
    nan_std = std.copy()
    nan_std[:100] = np.nan  # NaN (nodata) pixels are left out
    assert uncertainty_deciles(nan_std, rng.normal(0, std))["pixels"].sum() == 200_000 - 100
    with pytest.raises(InputError, match="at least 10"):
        uncertainty_deciles(np.ones(5), np.ones(5))
