"""Scores of every prediction on the test pairs, as one tidy table.

One row per (dataset, method, family, reference date, target date, band, region, metric) with its
value; ``band`` is a band name or ``all`` (the global score over every band). ``region`` is
``all`` for now; change-aware regions come with the full metrics.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from stfusion.data.datacube import date_index, reflectance
from stfusion.data.raster import read_geotiff
from stfusion.data.splits import Splits
from stfusion.errors import InputError
from stfusion.metrics import rmse, rmse_all
from stfusion.predict import prediction_name

COLUMNS = ["dataset", "method", "family", "reference_date", "target_date", "band", "region", "metric", "value"]


def read_run(pred_dir: str | os.PathLike) -> dict:
    """The ``run.json`` record a prediction folder holds."""
    path = Path(pred_dir) / "run.json"
    if not path.is_file():
        raise InputError(f"{path}: run record not found; run the train (or ablation) stage for this method first")
    return json.loads(path.read_text())


def score_pair(cube: xr.Dataset, pair: tuple[str, str], prediction: np.ndarray) -> dict[str, float]:
    """RMSE per band and overall of one prediction against the observed fine image."""
    ref, target = date_index(cube, pair[0]), date_index(cube, pair[1])
    observed = reflectance(cube["fine"][target].values)
    mask = cube["valid"][ref].values.astype(bool) & cube["valid"][target].values.astype(bool)
    per_band = rmse(prediction, observed, mask)
    scores = {str(band): float(value) for band, value in zip(cube["band"].values, per_band)}
    scores["all"] = rmse_all(prediction, observed, mask)
    return scores


def score_predictions(cube: xr.Dataset, splits: Splits, pred_dir: str | os.PathLike, *, label: str | None = None) -> pd.DataFrame:
    """Tidy scores of every test prediction in ``pred_dir``; ``label`` overrides the method name."""
    run = read_run(pred_dir)
    rows = []
    for pair in splits.test:
        path = Path(pred_dir) / prediction_name(pair)
        prediction = read_geotiff(path, bands=cube.sizes["band"]).data
        if prediction.shape[1:] != (cube.sizes["y"], cube.sizes["x"]):
            raise InputError(f"{path}: prediction shape {prediction.shape[1:]} differs from the datacube's grid")
        for band, value in score_pair(cube, pair, prediction).items():
            rows.append([splits.dataset, label or run["method"], run["family"], pair[0], pair[1], band, "all", "rmse", value])
    return pd.DataFrame(rows, columns=COLUMNS)


def summary_metrics(scores: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per method: the mean over test pairs of the global RMSE (the DVC metrics of a dataset)."""
    overall = scores[(scores["band"] == "all") & (scores["metric"] == "rmse")]
    means = overall.groupby("method", sort=True)["value"].mean()
    return {method: {"rmse": round(float(value), 6)} for method, value in means.items()}


def run_table(pred_dirs: list[Path]) -> pd.DataFrame:
    """Per prediction folder: learnable parameters, training time and median full-scene inference time."""
    rows = []
    for folder in pred_dirs:
        run = read_run(folder)
        seconds = list(run["predict_seconds"].values())
        rows.append({
            "dataset": run["dataset"], "method": run["method"], "family": run["family"], "parameters": run["parameters"],
            "train_seconds": run["train_seconds"], "predict_seconds_median": float(np.median(seconds)),
            "scene": f"{run['height']}x{run['width']}",
        })
    return pd.DataFrame(rows)


def evaluate_study(workspace, datasets: list[str], methods: list[str], variants: list[dict], profile: str) -> dict:
    """Score every method and ablation variant on every dataset; write tables and DVC metrics.

    Returns the tidy scores and the Markdown tables. ``reports/tables`` and ``reports/metrics``
    are replaced together, atomically, only after every score has been computed.
    """
    from stfusion.data.datacube import open_cube
    from stfusion.io import atomic_dir, write_text
    from stfusion.report import band_table, markdown, rmse_table, study_label

    frames, ablations, markdowns, metrics, pred_dirs = [], {}, {}, {}, []
    for dataset in datasets:
        cube = open_cube(workspace.cube(dataset))
        splits = Splits.load(workspace.splits(dataset))
        label = study_label(dataset, profile)
        scores = pd.concat([score_predictions(cube, splits, workspace.predictions(dataset, m)) for m in methods])
        ablation = pd.concat([
            score_predictions(cube, splits, workspace.ablation(dataset) / v["name"], label=v["name"]) for v in variants
        ])
        frames.append(scores)
        ablations[dataset] = ablation
        metrics[dataset] = summary_metrics(scores)
        pred_dirs += [workspace.predictions(dataset, m) for m in methods]
        markdowns[f"rmse_{dataset}"] = (
            markdown(rmse_table(scores), title=f"RMSE per test target date, {dataset}", label=label)
            + "\n" + markdown(band_table(scores), title=f"RMSE per band (mean over test pairs), {dataset}", label=label)
        )
        markdowns[f"ablation_{dataset}"] = markdown(rmse_table(ablation).rename_axis(index=["family", "variant"]),
                                                    title=f"Ablation (RMSE), {dataset}", label=label)
    scores = pd.concat(frames, ignore_index=True)
    runs = run_table(pred_dirs)
    with atomic_dir(workspace.tables) as tables, atomic_dir(workspace.metrics) as metric_dir:
        scores.to_csv(tables / "scores.csv", index=False, float_format="%.8g")
        pd.concat(ablations.values(), ignore_index=True).to_csv(tables / "ablation_scores.csv", index=False, float_format="%.8g")
        runs.to_csv(tables / "runs.csv", index=False, float_format="%.6g")
        for name, text in markdowns.items():
            write_text(tables / f"{name}.md", text)
        for dataset, values in metrics.items():
            write_text(metric_dir / f"{dataset}.json", json.dumps(values, indent=2, sort_keys=True) + "\n")
    return {"scores": scores, "markdown": markdowns, "metrics": metrics, "runs": runs}
