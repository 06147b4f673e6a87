"""Reference predictors, full-scene predictions and their scores."""

from pathlib import Path

import numpy as np
import pytest

from stfusion.baselines.reference import persistence, temporal_difference
from stfusion.data.raster import read_geotiff
from stfusion.evaluate import evaluate_study, score_predictions
from stfusion.methods import get_method
from stfusion.metrics import rmse, rmse_all
from stfusion.paths import Workspace
from stfusion.predict import predict_split, prediction_name


def test_reference_predictors_are_exact():
    rng = np.random.default_rng(0)
    f1, c1, c2 = (rng.random((6, 4, 4), dtype=np.float32) for _ in range(3))
    np.testing.assert_array_equal(persistence(f1, c1, c2), f1)
    np.testing.assert_allclose(temporal_difference(f1, c1, c2), f1 + (c2 - c1), rtol=0, atol=1e-6)
    # A uniform change seen by the coarse sensor is reproduced exactly.
    np.testing.assert_allclose(temporal_difference(f1, c1, c1 + 0.05), f1 + 0.05, atol=1e-6)


def test_rmse_by_hand():
    prediction = np.array([[[1.0, 2.0]], [[0.0, 0.0]]])
    observed = np.array([[[1.0, 0.0]], [[3.0, 4.0]]])
    np.testing.assert_allclose(rmse(prediction, observed), [np.sqrt(2.0), np.sqrt(12.5)])
    assert rmse_all(prediction, observed) == pytest.approx(np.sqrt(29 / 4))
    mask = np.array([[True, False]])
    np.testing.assert_allclose(rmse(prediction, observed, mask), [0.0, 3.0])
    assert rmse_all(observed, observed) == 0.0


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
    assert set(scores["band"]) == {"blue", "green", "red", "nir", "swir1", "swir2", "all"}
    assert (scores["value"] > 0).all() and scores["region"].eq("all").all()
    variants = [{"name": "a", "method": "persistence"}]
    predict_split(get_method("persistence"), cube, splits, ws.ablation("cia-sim") / "a")
    results = evaluate_study(ws, ["cia-sim"], ["persistence", "temporal-difference"], variants, "test")
    metrics = results["metrics"]["cia-sim"]
    # On the synthetic scene, adding the coarse temporal change must help.
    assert metrics["temporal-difference"]["rmse"] < metrics["persistence"]["rmse"]
    assert (ws.metrics / "cia-sim.json").is_file() and (ws.tables / "rmse_cia-sim.md").is_file()
    assert "not comparable to the published numbers" in (ws.tables / "rmse_cia-sim.md").read_text()


def test_evaluate_without_predictions_writes_nothing(tmp_path, tiny_processed):
    from stfusion.errors import InputError

    ws = _study(tmp_path, tiny_processed)
    with pytest.raises(InputError, match="run.json"):
        evaluate_study(ws, ["cia-sim"], ["persistence"], [{"name": "a", "method": "persistence"}], "test")
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
