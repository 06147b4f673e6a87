"""Scores of every prediction on the test pairs, as one tidy table, and the study's result files.

One row per (dataset, method, seed, family, reference date, target date, band, region, metric) with its
value (``stfusion.evaluation.metrics``): ``seed`` is a deep model's training seed, empty for a
deterministic method and for a seed ensemble (``<model>-ensemble``); ``band`` is a band name or ``all`` (the overall score); ``region`` is
``all``, ``changed``, ``unchanged`` or ``gap``.

Only pixels valid in the truth (the target's fine image: clear, in range) are scored. ``all`` is those
where the fine reference is valid too, so every method is scored on the same pixels; ``gap`` is those
where the reference is not (clouds, shadows), which only the methods that fill gaps predict.
Metric ``predicted`` is the share of a region's pixels the method predicted (finite in every band);
the other metrics cover the predicted pixels. Changed pixels are those whose land-cover class differs
between the reference and the target date in the synthetic generator's truth (``cover`` in the
datacube); real data has no truth, so there they are the pixels whose observed fine reflectance
changed by more than ``change_threshold`` in some band (``metrics.observed_change``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from stfusion.data.datacube import cube_ratio, date_index
from stfusion.data.formats import read_raster
from stfusion.data.raster import as_reflectance, read_geotiff
from stfusion.data.units_check import check_pair, check_units
from stfusion.data.splits import Pair, Splits
from stfusion.errors import InputError
from stfusion.evaluation.metrics import DEFAULT_CHANGE_THRESHOLD, METRICS, Conventions, compute_metrics, observed_change, score_table
from stfusion.evaluation.significance import BLOCK_COLUMNS, block_errors
from stfusion.inference.predict import prediction_name, uncertainty_name
from stfusion.methods.registry import get_method
from stfusion.units import to_reflectance

COLUMNS = ["dataset", "method", "seed", "family", "reference_date", "target_date", "band", "region", "metric", "value"]
REGIONS = ("all", "changed", "unchanged", "gap")
DEFAULT_BLOCK = 40
"""Side in fine pixels of the spatial blocks the bootstrap resamples (two 500 m coarse pixels at 25 m)."""


@dataclass(frozen=True)
class Run:
    """One prediction folder to score: the method's name in the tables and its training seed
    (None for a deterministic method or a seed ensemble)."""

    method: str
    seed: int | None
    folder: Path


def study_runs(workspace, dataset: str, methods: list[str], seeds: list[int]) -> list[Run]:
    """Every run of the study's methods: one per method that needs no training, one per seed of a deep model."""
    runs = []
    for method in methods:
        if get_method(method).trainable:
            runs += [Run(method, seed, workspace.predictions(dataset, method, seed)) for seed in seeds]
        else:
            runs.append(Run(method, None, workspace.predictions(dataset, method)))
    return runs


def method_folder(workspace, dataset: str, method: str, seed: int) -> Path:
    """The folder figures show for ``method``: a deep model's run with the study's ``seed``."""
    return workspace.predictions(dataset, method, seed if get_method(method).trainable else None)
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
    """The pixel masks of a pair's :data:`REGIONS` (before the truth's valid mask), and where the change mask came from."""
    ref, target = date_index(cube, pair[0]), date_index(cube, pair[1])
    if "cover" in cube:
        changed = cube["cover"][ref].values != cube["cover"][target].values
        source = "truth: land-cover class differs between reference and target"
    else:
        changed = observed_change(to_reflectance(cube["fine"][ref].values), to_reflectance(cube["fine"][target].values), threshold)
        source = f"observed: max band |F2 - F1| > {threshold} reflectance"
    clear = cube["valid"][ref].values.astype(bool)
    return {"all": clear, "changed": changed & clear, "unchanged": ~changed & clear, "gap": ~clear}, source


def truth_mask(cube: xr.Dataset, pair: Pair) -> np.ndarray:
    """The pixels a prediction of ``pair`` is scored on: valid in the target's fine image."""
    return cube["valid"][date_index(cube, pair[1])].values.astype(bool)


def predicted_share(prediction: np.ndarray, mask: np.ndarray) -> float:
    """The share of ``mask``'s pixels that the prediction covers (finite in every band); 0 for an empty mask."""
    return float(np.isfinite(prediction).all(axis=0)[mask].mean()) if mask.any() else 0.0


def predicted_shares(prediction: np.ndarray, mask: np.ndarray, regions: dict[str, np.ndarray]) -> pd.DataFrame:
    """Metric ``predicted``: per region with pixels in ``mask``, the share the prediction covers (finite in every band)."""
    rows = [("all", region, "predicted", predicted_share(prediction, mask & inside))
            for region, inside in regions.items() if (mask & inside).any()]
    return pd.DataFrame(rows, columns=["band", "region", "metric", "value"])


def score_pair(cube: xr.Dataset, pair: Pair, prediction: np.ndarray, *, conventions: Conventions | None = None,
               change_threshold: float = DEFAULT_CHANGE_THRESHOLD) -> pd.DataFrame:
    """Every metric, per band and overall, in every region, of one prediction (band, region, metric, value)."""
    observed = to_reflectance(cube["fine"][date_index(cube, pair[1])].values)
    mask = truth_mask(cube, pair)
    regions, _ = change_regions(cube, pair, change_threshold)
    table = score_table(prediction, observed, mask, regions=regions, band_names=[str(b) for b in cube["band"].values],
                        conventions=conventions or conventions_for(cube))
    return pd.concat([table, predicted_shares(prediction, mask, regions)], ignore_index=True)


def _read_prediction(cube: xr.Dataset, path: Path) -> np.ndarray:
    prediction = read_geotiff(path, bands=cube.sizes["band"]).data
    if prediction.shape[1:] != (cube.sizes["y"], cube.sizes["x"]):
        raise InputError(f"{path}: prediction shape {prediction.shape[1:]} differs from the datacube's grid")
    return prediction


def pair_blocks(cube: xr.Dataset, pair: Pair, prediction: np.ndarray, *, block: int = DEFAULT_BLOCK,
                change_threshold: float = DEFAULT_CHANGE_THRESHOLD) -> pd.DataFrame:
    """Squared-error sums per spatial block and region of one prediction (region, block, sse, count)."""
    observed = to_reflectance(cube["fine"][date_index(cube, pair[1])].values)
    mask = truth_mask(cube, pair)
    regions, _ = change_regions(cube, pair, change_threshold)
    frames = []
    for region, inside in regions.items():
        sse, count = block_errors(prediction, observed, mask & inside, block)
        frames.append(pd.DataFrame({"region": region, "block": np.arange(sse.size), "sse": sse, "count": count}))
    return pd.concat(frames, ignore_index=True)


def score_predictions(cube: xr.Dataset, splits: Splits, pred_dir: str | os.PathLike, *, label: str | None = None,
                      seed: int | None = None, conventions: Conventions | None = None,
                      change_threshold: float = DEFAULT_CHANGE_THRESHOLD, block: int | None = None):
    """Tidy scores of every test prediction in ``pred_dir``; ``label`` overrides the method name and
    ``seed`` fills the seed column. With ``block``, also return the block errors the bootstrap resamples."""
    run = read_run(pred_dir)
    labels = {"dataset": splits.dataset, "method": label or run["method"], "seed": seed}
    frames, blocks = [], []
    for pair in splits.test:
        prediction = _read_prediction(cube, Path(pred_dir) / prediction_name(pair))
        table = score_pair(cube, pair, prediction, conventions=conventions, change_threshold=change_threshold)
        frames.append(table.assign(**labels, family=run["family"], reference_date=pair[0], target_date=pair[1]))
        if block is not None:
            errors = pair_blocks(cube, pair, prediction, block=block, change_threshold=change_threshold)
            blocks.append(errors.assign(**labels, reference_date=pair[0], target_date=pair[1]))
    scores = pd.concat(frames, ignore_index=True)[COLUMNS]
    return scores if block is None else (scores, pd.concat(blocks, ignore_index=True)[BLOCK_COLUMNS])


HEADLINE = {("all", "rmse"): "rmse", ("all", "ssim"): "ssim", ("all", "sam"): "sam", ("changed", "rmse"): "rmse_changed"}
"""The DVC metrics of each method: (region, overall metric) -> name."""


def summary_metrics(scores: pd.DataFrame) -> dict[str, dict[str, float]]:
    """DVC metrics of one dataset: per method the headline scores (HEADLINE), each the mean over test
    pairs and seeds of the overall score; every other number is in the tables."""
    overall = scores[scores["band"] == "all"]
    means = overall.groupby(["method", "region", "metric"], sort=True)["value"].mean()
    summary: dict[str, dict[str, float]] = {}
    for (method, region, metric), value in means.items():
        name = HEADLINE.get((region, metric))
        if name and math.isfinite(value):  # JSON has no infinity
            summary.setdefault(method, {})[name] = round(float(value), 6)
    return summary


def run_table(runs: list[Run]) -> pd.DataFrame:
    """Per run: learnable parameters, training time, median full-scene inference time, and for a sampling
    model its DDIM steps, eta and number of samples (blank for the others)."""
    rows = []
    for r in runs:
        run = read_run(r.folder)
        seconds = list(run["predict_seconds"].values())
        rows.append({
            "dataset": run["dataset"], "method": r.method, "seed": r.seed, "family": run["family"],
            "parameters": run["parameters"], "train_seconds": run["train_seconds"],
            "predict_seconds_median": float(np.median(seconds)), "scene": f"{run['height']}x{run['width']}",
            **{f"sampling_{key}": value for key, value in (run.get("sampling") or {}).items()},
        })
    return pd.DataFrame(rows)


def metric_table(scores: pd.DataFrame, region: str = "all") -> pd.DataFrame:
    """Methods as rows, metrics as columns: the mean over test pairs and seeds of the overall scores in ``region``."""
    chosen = scores[(scores["band"] == "all") & (scores["region"] == region)]
    table = chosen.pivot_table(index=["family", "method"], columns="metric", values="value", aggfunc="mean")
    return table[[m for m in METRICS if m in table.columns]].sort_values("rmse")


def seed_spread(scores: pd.DataFrame, region: str = "all") -> pd.DataFrame:
    """Like :func:`metric_table`, the standard deviation over seeds (ddof = 1) of each seed's mean over
    test pairs; NaN for a method with one run."""
    chosen = scores[(scores["band"] == "all") & (scores["region"] == region)]
    per_seed = chosen.groupby(["family", "method", "seed", "metric"], dropna=False)["value"].mean()
    table = per_seed.groupby(["family", "method", "metric"]).std(ddof=1).unstack("metric")
    return table[[m for m in METRICS if m in table.columns]]


def pair_table(scores: pd.DataFrame, metric: str = "rmse", region: str = "all") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Methods as rows, test pairs as columns: the overall ``metric`` per pair, mean and standard
    deviation over seeds (NaN for a method with one run)."""
    chosen = scores[(scores["band"] == "all") & (scores["region"] == region) & (scores["metric"] == metric)]
    chosen = chosen.assign(pair=chosen["reference_date"] + " → " + chosen["target_date"])
    index = ["family", "method"]
    mean = chosen.pivot_table(index=index, columns="pair", values="value", aggfunc="mean")
    std = chosen.pivot_table(index=index, columns="pair", values="value", aggfunc=lambda v: v.std(ddof=1))
    order = mean.mean(axis=1).sort_values().index
    return mean.loc[order], std.reindex(index=order, columns=mean.columns)


def change_table(scores: pd.DataFrame, metric: str = "rmse") -> pd.DataFrame:
    """Methods as rows, regions as columns: the mean overall ``metric`` over test pairs."""
    chosen = scores[(scores["band"] == "all") & (scores["metric"] == metric)]
    table = chosen.pivot_table(index=["family", "method"], columns="region", values="value", aggfunc="mean")
    return table[[r for r in REGIONS if r in table.columns]].sort_values("all")


def ablation_runs(workspace, dataset: str, variants: list[str], model: str | None = None,
                  full_model_rows: list[str] = (), seed: int | None = None) -> list[Run]:
    """The ablation's rows: each variant's own run, and the ablation model's train-stage run with the
    study's ``seed`` for each row the full model fills (MCBAM-GAN's depth-3 and full-module rows)."""
    runs = [Run(v, seed, workspace.ablation(dataset) / v) for v in variants]
    return runs + [Run(row, seed, method_folder(workspace, dataset, model, seed)) for row in full_model_rows]


UNCERTAINTY_COLUMNS = ["dataset", "method", "seed", "reference_date", "target_date", "decile", "std_mean", "rmse", "mae",
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


COVERAGE_COLUMNS = ["dataset", "method", "seed", "region", "pixels", "std_mean", "rmse", "coverage_90"]
Z_90 = 1.6448536269514722
"""A nominal 90 % interval is the prediction +- Z_90 standard deviations (a Gaussian error)."""


def interval_coverage(std: np.ndarray, error: np.ndarray, inside: np.ndarray) -> dict[str, float]:
    """Share of band-values in the (y, x) mask ``inside`` whose error lies within +- Z_90 std, with the mean
    std and the RMSE there: coverage below 0.9 means over-confident (intervals too narrow), above it under-confident."""
    keep = np.isfinite(std) & np.isfinite(error) & inside[None]
    s, e = std[keep].astype(np.float64), error[keep].astype(np.float64)
    if not s.size:
        return {"pixels": 0, "std_mean": math.nan, "rmse": math.nan, "coverage_90": math.nan}
    return {"pixels": int(s.size), "std_mean": float(s.mean()), "rmse": float(np.sqrt(np.mean(e**2))),
            "coverage_90": float(np.mean(np.abs(e) <= Z_90 * s))}


def uncertainty_tables(cube: xr.Dataset, splits: Splits, run: Run,
                       change_threshold: float = DEFAULT_CHANGE_THRESHOLD) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Calibration of a folder holding ``*_std.tif`` maps (else two empty tables): spread-skill deciles
    per test pair, and the coverage of the nominal 90 % interval over all, changed and unchanged pixels."""
    deciles, coverage, errors, stds, masks = [], [], [], [], {r: [] for r in REGIONS}
    for pair in splits.test:
        path = Path(run.folder) / uncertainty_name(pair)
        if not path.is_file():
            continue
        std = read_geotiff(path, bands=cube.sizes["band"]).data
        prediction = _read_prediction(cube, Path(run.folder) / prediction_name(pair))
        target = date_index(cube, pair[1])
        observed = to_reflectance(cube["fine"][target].values)
        observed[:, ~cube["valid"][target].values.astype(bool)] = np.nan
        error = prediction - observed
        deciles.append(uncertainty_deciles(std, error).assign(
            dataset=splits.dataset, method=run.method, seed=run.seed, reference_date=pair[0], target_date=pair[1]))
        regions, _ = change_regions(cube, pair, change_threshold)
        errors.append(error), stds.append(std)
        for region, inside in regions.items():
            masks[region].append(inside)
    if not deciles:
        return pd.DataFrame(columns=UNCERTAINTY_COLUMNS), pd.DataFrame(columns=COVERAGE_COLUMNS)
    std, error = np.concatenate(stds, axis=1), np.concatenate(errors, axis=1)  # the pairs side by side
    for region, inside in masks.items():
        coverage.append({"dataset": splits.dataset, "method": run.method, "seed": run.seed, "region": region,
                         **interval_coverage(std, error, np.concatenate(inside, axis=0))})
    return (pd.concat(deciles, ignore_index=True)[UNCERTAINTY_COLUMNS],
            pd.DataFrame(coverage, columns=COVERAGE_COLUMNS))


def dataset_results(cube: xr.Dataset, splits: Splits, runs: list[Run], ablation: list[Run], settings: dict) -> dict:
    """Scores, block errors, ablation scores, calibration, run records and change-mask source of one dataset."""
    conventions = conventions_for(cube)
    threshold = settings.get("change_threshold", DEFAULT_CHANGE_THRESHOLD)
    kwargs = {"conventions": conventions, "change_threshold": threshold}
    block = settings.get("bootstrap", {}).get("block", DEFAULT_BLOCK)
    scored = [score_predictions(cube, splits, r.folder, label=r.method, seed=r.seed, block=block, **kwargs)
              for r in tqdm(runs, desc=f"scoring {splits.dataset}", leave=False)]
    ablation_scores = [score_predictions(cube, splits, r.folder, label=r.method, seed=r.seed, **kwargs)
                       for r in tqdm(ablation, desc=f"scoring {splits.dataset} ablation", leave=False)]
    ablation_scores = pd.concat(ablation_scores, ignore_index=True) if ablation_scores else pd.DataFrame(columns=COLUMNS)
    calibration = [uncertainty_tables(cube, splits, r, threshold) for r in runs]
    return {
        "scores": pd.concat([s for s, _ in scored], ignore_index=True),
        "blocks": pd.concat([b for _, b in scored], ignore_index=True),
        "ablation": ablation_scores,
        "uncertainty": pd.concat([d for d, _ in calibration], ignore_index=True),
        "coverage": pd.concat([c for _, c in calibration], ignore_index=True),
        "runs": run_table(runs + ablation),
        "conventions": {**conventions.as_dict(), "change_mask": change_regions(cube, splits.test[0], threshold)[1],
                        "test_pairs": [list(p) for p in splits.test], "bootstrap_block": block},
    }


# ---------------------------------------------------------------------------------------------
# Any two rasters (the ``stfusion evaluate`` command)


def score_files(pred: str | os.PathLike, truth: str | os.PathLike, mask: str | os.PathLike | None = None, *,
                ratio: int | None = None, reflectance_scale: float | None = None) -> dict:
    """Score a predicted raster against an observed one (same grid and bands).

    Both files must hold reflectance once scaled, on the same scale (:mod:`stfusion.data.units_check`).
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
    check_units(prediction, pred, p_scale)  # a float prediction of reflectance x 10000 would score RMSE ~2500
    check_units(observed, truth, t_scale)
    check_pair(prediction, observed, pred, truth)
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
