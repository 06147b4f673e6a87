"""Scores of every prediction on the test pairs, as one tidy table, and the study's result files.

One row per (dataset, method, family, reference date, target date, band, region, metric) with its
value (``stfusion.evaluation.metrics``): ``band`` is a band name or ``all`` (the overall score); ``region`` is
``all``, ``changed`` or ``unchanged``. Changed pixels are those whose land-cover class differs
between the reference and the target date in the synthetic generator's truth (``cover`` in the
datacube); real data has no truth, so there they are the pixels whose observed fine reflectance
changed by more than ``change_threshold`` in some band (``metrics.observed_change``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from stfusion.data.datacube import cube_ratio, date_index, open_cube
from stfusion.data.formats import read_raster
from stfusion.data.raster import as_reflectance, read_geotiff
from stfusion.data.splits import Pair, Splits
from stfusion.errors import InputError
from stfusion.evaluation.metrics import DEFAULT_CHANGE_THRESHOLD, METRICS, Conventions, compute_metrics, observed_change, score_table
from stfusion.inference.predict import prediction_name, uncertainty_name
from stfusion.units import to_reflectance

COLUMNS = ["dataset", "method", "family", "reference_date", "target_date", "band", "region", "metric", "value"]
REGIONS = ("all", "changed", "unchanged")
def read_run(pred_dir: str | os.PathLike) -> dict:
    """The ``run.json`` record a prediction folder holds."""
    path = Path(pred_dir) / "run.json"
    if not path.is_file():
        raise InputError(f"{path}: run record not found; run the train (or ablation) stage for this method first")
    return json.loads(path.read_text())


def conventions_for(cube: xr.Dataset) -> Conventions:
    """Metric conventions of a dataset: ERGAS's ratio is the datacube's."""
    return Conventions(ratio=cube_ratio(cube))


def change_regions(cube: xr.Dataset, pair: Pair, threshold: float = DEFAULT_CHANGE_THRESHOLD) -> tuple[dict[str, np.ndarray], str]:
    """The all / changed / unchanged pixel masks of a pair, and where the change mask came from."""
    ref, target = date_index(cube, pair[0]), date_index(cube, pair[1])
    if "cover" in cube:
        changed = cube["cover"][ref].values != cube["cover"][target].values
        source = "truth: land-cover class differs between reference and target"
    else:
        changed = observed_change(to_reflectance(cube["fine"][ref].values), to_reflectance(cube["fine"][target].values), threshold)
        source = f"observed: max band |F2 - F1| > {threshold} reflectance"
    return {"all": np.ones_like(changed), "changed": changed, "unchanged": ~changed}, source


def score_pair(cube: xr.Dataset, pair: Pair, prediction: np.ndarray, *, conventions: Conventions | None = None,
               change_threshold: float = DEFAULT_CHANGE_THRESHOLD) -> pd.DataFrame:
    """Every metric, per band and overall, in every region, of one prediction (band, region, metric, value)."""
    ref, target = date_index(cube, pair[0]), date_index(cube, pair[1])
    observed = to_reflectance(cube["fine"][target].values)
    mask = cube["valid"][ref].values.astype(bool) & cube["valid"][target].values.astype(bool)
    regions, _ = change_regions(cube, pair, change_threshold)
    return score_table(prediction, observed, mask, regions=regions, band_names=[str(b) for b in cube["band"].values],
                       conventions=conventions or conventions_for(cube))


def score_predictions(cube: xr.Dataset, splits: Splits, pred_dir: str | os.PathLike, *, label: str | None = None,
                      conventions: Conventions | None = None, change_threshold: float = DEFAULT_CHANGE_THRESHOLD) -> pd.DataFrame:
    """Tidy scores of every test prediction in ``pred_dir``; ``label`` overrides the method name."""
    run = read_run(pred_dir)
    frames = []
    for pair in splits.test:
        path = Path(pred_dir) / prediction_name(pair)
        prediction = read_geotiff(path, bands=cube.sizes["band"]).data
        if prediction.shape[1:] != (cube.sizes["y"], cube.sizes["x"]):
            raise InputError(f"{path}: prediction shape {prediction.shape[1:]} differs from the datacube's grid")
        table = score_pair(cube, pair, prediction, conventions=conventions, change_threshold=change_threshold)
        frames.append(table.assign(dataset=splits.dataset, method=label or run["method"], family=run["family"],
                                   reference_date=pair[0], target_date=pair[1]))
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def summary_metrics(scores: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """DVC metrics of one dataset: per method and region, the mean over test pairs of each overall score."""
    overall = scores[scores["band"] == "all"]
    means = overall.groupby(["method", "region", "metric"], sort=True)["value"].mean()
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for (method, region, metric), value in means.items():
        if math.isfinite(value):  # JSON has no infinity (a perfect PSNR)
            summary.setdefault(method, {}).setdefault(region, {})[metric] = round(float(value), 6)
    return summary


def run_table(pred_dirs: list[Path], labels: list[str | None] | None = None) -> pd.DataFrame:
    """Per prediction folder: learnable parameters, training time, median full-scene inference time, and
    for a sampling model its DDIM steps, eta and number of samples (blank for the others)."""
    rows = []
    for folder, label in zip(pred_dirs, labels or [None] * len(pred_dirs)):
        run = read_run(folder)
        seconds = list(run["predict_seconds"].values())
        rows.append({
            "dataset": run["dataset"], "method": label or run["method"], "family": run["family"],
            "parameters": run["parameters"], "train_seconds": run["train_seconds"],
            "predict_seconds_median": float(np.median(seconds)), "scene": f"{run['height']}x{run['width']}",
            **{f"sampling_{key}": value for key, value in (run.get("sampling") or {}).items()},
        })
    return pd.DataFrame(rows)


def metric_table(scores: pd.DataFrame, region: str = "all") -> pd.DataFrame:
    """Methods as rows, metrics as columns: the mean over test pairs of the overall scores in ``region``."""
    chosen = scores[(scores["band"] == "all") & (scores["region"] == region)]
    table = chosen.pivot_table(index=["family", "method"], columns="metric", values="value", aggfunc="mean")
    return table[[m for m in METRICS if m in table.columns]].sort_values("rmse")


def change_table(scores: pd.DataFrame, metric: str = "rmse") -> pd.DataFrame:
    """Methods as rows, regions as columns: the mean overall ``metric`` over test pairs."""
    chosen = scores[(scores["band"] == "all") & (scores["metric"] == metric)]
    table = chosen.pivot_table(index=["family", "method"], columns="region", values="value", aggfunc="mean")
    return table[[r for r in REGIONS if r in table.columns]].sort_values("all")


def ablation_folders(workspace, dataset: str, variants: list[str], model: str | None = None,
                     full_model_rows: list[str] = ()) -> dict[str, Path]:
    """Ablation row label -> prediction folder: each variant's own run, and the ablation model's train-stage
    run for each row the full model fills (MCBAM-GAN's depth-3 and full-module rows)."""
    folders = {v: workspace.ablation(dataset) / v for v in variants}
    folders.update({row: workspace.predictions(dataset, model) for row in full_model_rows})
    return folders


UNCERTAINTY_COLUMNS = ["dataset", "method", "reference_date", "target_date", "decile", "std_mean", "rmse", "mae",
                       "pixels"]


def uncertainty_deciles(std: np.ndarray, error: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Calibration of a per-pixel uncertainty: band-pixels sorted by predicted standard deviation into
    ``bins`` equal-count bins; per bin the mean predicted std and the RMSE and MAE of the actual error.
    A calibrated model has RMSE close to its std in every bin, and error that grows with the std."""
    keep = np.isfinite(std) & np.isfinite(error)
    std, error = std[keep].astype(np.float64), error[keep].astype(np.float64)
    if std.size < bins:
        raise InputError(f"uncertainty calibration needs at least {bins} valid values, got {std.size}")
    order = np.argsort(std, kind="stable")
    rows = []
    for k, chunk in enumerate(np.array_split(order, bins), start=1):
        e = error[chunk]
        rows.append({"decile": k, "std_mean": float(std[chunk].mean()), "rmse": float(np.sqrt(np.mean(e**2))),
                     "mae": float(np.mean(np.abs(e))), "pixels": int(chunk.size)})
    return pd.DataFrame(rows)


def uncertainty_table(cube: xr.Dataset, splits: Splits, pred_dir: str | os.PathLike) -> pd.DataFrame:
    """Calibration deciles of every test pair of a folder holding ``*_std.tif`` maps (else empty)."""
    run, frames = read_run(pred_dir), []
    for pair in splits.test:
        path = Path(pred_dir) / uncertainty_name(pair)
        if not path.is_file():
            continue
        std = read_geotiff(path, bands=cube.sizes["band"]).data
        prediction = read_geotiff(Path(pred_dir) / prediction_name(pair), bands=cube.sizes["band"]).data
        target = date_index(cube, pair[1])
        observed = to_reflectance(cube["fine"][target].values)
        observed[:, ~cube["valid"][target].values.astype(bool)] = np.nan
        frames.append(uncertainty_deciles(std, prediction - observed).assign(
            dataset=splits.dataset, method=run["method"], reference_date=pair[0], target_date=pair[1]))
    return pd.concat(frames, ignore_index=True)[UNCERTAINTY_COLUMNS] if frames else pd.DataFrame(columns=UNCERTAINTY_COLUMNS)


def dataset_results(workspace, dataset: str, methods: list[str], ablation: dict[str, Path], settings: dict) -> dict:
    """Scores, ablation scores, run records and change-mask source of one dataset."""
    cube = open_cube(workspace.cube(dataset))
    splits = Splits.load(workspace.splits(dataset))
    conventions = conventions_for(cube)
    threshold = settings.get("change_threshold", DEFAULT_CHANGE_THRESHOLD)
    kwargs = {"conventions": conventions, "change_threshold": threshold}
    folders = [workspace.predictions(dataset, m) for m in methods]
    scores = pd.concat([score_predictions(cube, splits, f, **kwargs)
                        for f in tqdm(folders, desc=f"scoring {dataset}", leave=False)], ignore_index=True)
    ablation_scores = [score_predictions(cube, splits, f, label=label, **kwargs)
                       for label, f in tqdm(ablation.items(), desc=f"scoring {dataset} ablation", leave=False)]
    ablation_scores = pd.concat(ablation_scores, ignore_index=True) if ablation_scores else pd.DataFrame(columns=COLUMNS)
    uncertainty = pd.concat([uncertainty_table(cube, splits, f) for f in folders], ignore_index=True)
    return {
        "scores": scores, "ablation": ablation_scores, "uncertainty": uncertainty,
        "runs": run_table(folders + list(ablation.values()), [None] * len(folders) + list(ablation)),
        "conventions": {**conventions.as_dict(), "change_mask": change_regions(cube, splits.test[0], threshold)[1],
                        "test_pairs": [list(p) for p in splits.test]},
    }


# ---------------------------------------------------------------------------------------------
# Any two rasters (the ``stfusion evaluate`` command)


def score_files(pred: str | os.PathLike, truth: str | os.PathLike, mask: str | os.PathLike | None = None, *,
                ratio: int | None = None, reflectance_scale: float | None = None) -> dict:
    """Score a predicted raster against an observed one (same grid and bands).

    NaN and nodata pixels of either file, and pixels where the optional single-band ``mask`` raster
    is 0 or nodata, are excluded. Values are divided by ``reflectance_scale`` (default: 10000 for
    integer rasters, 1 for float rasters). Returns the scores ``{metric: {band: value}}``, the conventions and the number
    of evaluated pixels.
    """
    conventions = Conventions(ratio=ratio)
    p_raster, t_raster = read_raster(pred), read_raster(truth)
    if p_raster.data.shape[0] != t_raster.data.shape[0]:
        raise InputError(f"{pred}: has {p_raster.data.shape[0]} bands but {truth} has {t_raster.data.shape[0]}")
    t_raster.grid.require_same(p_raster.grid, what=f"{pred} against {truth}")
    prediction, p_scale = as_reflectance(p_raster, reflectance_scale)
    observed, t_scale = as_reflectance(t_raster, reflectance_scale)
    valid = np.ones(observed.shape[1:], bool)
    if mask is not None:
        m_raster = read_raster(mask)
        if m_raster.data.shape[0] != 1:
            raise InputError(f"{mask}: a mask must have one band (non-zero = valid), it has {m_raster.data.shape[0]}")
        t_raster.grid.require_same(m_raster.grid, what=f"{mask} against {truth}")
        valid = m_raster.data[0] != 0
        if m_raster.nodata is not None:
            valid &= m_raster.data[0] != m_raster.nodata
    valid &= np.isfinite(prediction).all(axis=0) & np.isfinite(observed).all(axis=0)
    if not valid.any():
        raise InputError(f"{pred}, {truth}: no pixel is valid in both files (and the mask)")
    names = [f"band{k + 1}" for k in range(observed.shape[0])]
    scores = compute_metrics(prediction, observed, valid, band_names=names, conventions=conventions)["all"]
    return {"scores": scores, "pixels": int(valid.sum()), "conventions": conventions.as_dict(),
            "reflectance_scale": {"prediction": p_scale, "truth": t_scale}, "prediction": str(pred), "truth": str(truth)}


def format_scores(result: dict) -> str:
    """The scores of ``score_files`` as a plain-text table: metrics as rows, bands and ``all`` as columns."""
    table = pd.DataFrame(result["scores"]).T
    table = table[[c for c in table.columns if c != "all"] + ["all"]]
    text = table.to_string(float_format=lambda v: f"{v:.6g}", na_rep="-")
    conv = result["conventions"]
    return (f"{text}\n\n{result['pixels']} valid pixels; reflectance = value / {result['reflectance_scale']['truth']:g}; "
            f"SSIM Gaussian {conv['ssim_window']}x{conv['ssim_window']} sigma {conv['ssim_sigma']}; "
            f"SAM in {conv['sam_unit']}; " + (f"ERGAS h/l = 1/{conv['ratio']}" if conv["ratio"] else
                                                "no ERGAS (give --ratio, the coarse over fine pixel size)"))
