"""The robustness sweep: every method on degraded inputs, one degradation at a time.

Each test pair is predicted again with one input made worse, at each level of ``robustness.levels``:

- ``clouds``: a share of the fine reference's pixels lost under cloud (added to any it already had);
- ``geolocation``: the target coarse image displaced by this many coarse pixels, in a random direction;
- ``coarse_noise``: Gaussian noise of this sd (reflectance) on every coarse pixel of both coarse images;
- ``time_gap``: the reference is the k-th nearest earlier usable date instead of the nearest (k = 1).

Deep models are not retrained: the train stage's run with the study's seed is applied to the degraded
inputs. The undegraded inputs are the ones the predict and train stages predicted from, so with
``stored`` the sweep scores those stages' predictions instead of predicting again (a whole
prediction of every method and test pair saved). Scores cover the pixels valid in the truth that the method predicted; ``predicted`` is their
share. A method that refuses an input (FSDAF without enough pure coarse pixels) gets a row with its
error and no score. Randomness comes from ``(seed, degradation, level, pair)``, so every method sees
the same degraded inputs and reruns repeat.
"""

from __future__ import annotations

import datetime as dt
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage
from tqdm.auto import tqdm

from stfusion.data.clouds import cloud_field
from stfusion.data.datacube import cube_grid_offset, cube_ratio, date_index
from stfusion.data.raster import read_geotiff
from stfusion.data.splits import Pair, Splits
from stfusion.errors import ConfigError, InputError
from stfusion.evaluation.metrics import overall_rmse
from stfusion.evaluation.scores import predicted_share, truth_mask
from stfusion.inference.predict import pair_inputs, predict_inputs, prediction_name
from stfusion.methods.registry import Method
from stfusion.units import to_reflectance


@dataclass(frozen=True)
class Degradation:
    label: str
    unit: str
    none: float  # the level that leaves the inputs as they are
    limit: float  # the largest level accepted


DEGRADATIONS = {
    "clouds": Degradation("fine-reference cloud cover", "share of the reference's pixels", 0.0, 0.9),
    "geolocation": Degradation("coarse geolocation error", "coarse pixels", 0.0, 5.0),
    "coarse_noise": Degradation("coarse-image noise", "sd, reflectance", 0.0, 0.1),
    "time_gap": Degradation("time gap to the reference", "k-th nearest earlier reference", 1, 10),
}
CLOUD_SIZE_PX = 20
"""Correlation length of the added clouds, fine pixels (500 m at 25 m, as the realistic preset)."""
COLUMNS = ["dataset", "method", "family", "degradation", "level", "reference_date", "target_date", "gap_days",
           "rmse", "predicted", "error"]


def check_levels(levels, key: str = "robustness.levels") -> dict[str, list[float]]:
    """``levels`` validated: every degradation, each a list that starts at its no-degradation level."""
    if not isinstance(levels, dict) or set(levels) != set(DEGRADATIONS):
        raise ConfigError(f"{key}: expected a mapping with exactly {list(DEGRADATIONS)}, got {levels!r}")
    for name, values in levels.items():
        spec = DEGRADATIONS[name]
        ok = isinstance(values, list) and values and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and spec.none <= v <= spec.limit for v in values)
        if not ok or values[0] != spec.none or sorted(set(values)) != values:
            raise ConfigError(f"{key}.{name}: expected increasing numbers from {spec.none} (no degradation) to at most "
                              f"{spec.limit} ({spec.unit}), got {values!r}")
        if name == "time_gap" and any(int(v) != v for v in values):
            raise ConfigError(f"{key}.time_gap: expected whole numbers (k-th nearest date), got {values!r}")
    return levels


def reference_at_gap(splits: Splits, dates: list[str], pair: Pair, k: int) -> Pair | None:
    """The pair with ``pair``'s target and its k-th nearest earlier usable reference (not a test
    target), k = 1 being the study's own; None where there are fewer than k such dates."""
    if k == 1:
        return pair
    target = pair[1]
    earlier = [d for d in dates[:dates.index(target)] if d not in splits.test_targets]
    return (earlier[-k], target) if len(earlier) >= k else None


def coarse_noise(rng: np.random.Generator, shape: tuple[int, int, int], sd: float, ratio: int,
                 grid_offset=(0, 0)) -> np.ndarray:
    """Noise constant over each coarse pixel of a grid whose edges lie at ``grid_offset + k * ratio``."""
    pads = [(ratio - int(o)) % ratio for o in grid_offset]
    blocks = [-(-(n + p) // ratio) for n, p in zip(shape[1:], pads)]
    field = rng.normal(0.0, sd, (shape[0], *blocks)).astype(np.float32)
    full = np.repeat(np.repeat(field, ratio, axis=1), ratio, axis=2)
    return full[:, pads[0]:pads[0] + shape[1], pads[1]:pads[1] + shape[2]]


def degrade(inputs: dict[str, np.ndarray], degradation: str, level: float, rng: np.random.Generator, *,
            ratio: int, grid_offset=(0, 0)) -> dict[str, np.ndarray]:
    """:func:`~stfusion.inference.predict.pair_inputs`'s ``inputs`` with one degradation applied: a new
    mapping whose changed arrays are new and whose other arrays are shared (neither is modified)."""
    out = dict(inputs)
    if level == DEGRADATIONS[degradation].none or degradation == "time_gap":
        return out
    if degradation == "clouds":
        gaps = cloud_field(rng, out["valid"].shape, level, CLOUD_SIZE_PX) > 0
        out["fine_ref"] = np.where(gaps[None], np.float32(np.nan), out["fine_ref"])
        out["valid"] = out["valid"] & ~gaps
    elif degradation == "geolocation":
        angle = rng.uniform(0.0, 2 * math.pi)
        shift = (0, round(level * ratio * math.sin(angle)), round(level * ratio * math.cos(angle)))
        out["coarse_target"] = ndimage.shift(out["coarse_target"], shift, order=0, mode="nearest")
    elif degradation == "coarse_noise":
        for name in ("coarse_ref", "coarse_target"):
            out[name] = out[name] + coarse_noise(rng, out[name].shape, level, ratio, grid_offset)
    return out


def _score(prediction: np.ndarray, observed: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """RMSE over the truth-valid pixels predicted, and their share of the truth-valid pixels."""
    share = predicted_share(prediction, truth)
    if share == 0.0:
        return math.nan, 0.0
    return overall_rmse(prediction, observed, truth), share


def _rng(seed: int, degradation: str, level: float, pair: Pair) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(f"{degradation}|{level!r}|{pair[0]}|{pair[1]}".encode())])


def _days(pair: Pair) -> int:
    return (dt.date.fromisoformat(pair[1]) - dt.date.fromisoformat(pair[0])).days


def conditions(levels: dict[str, list[float]]) -> list[tuple[str, float]]:
    """Every (degradation, level) of the sweep, the no-degradation level once for each degradation."""
    return [(name, float(level)) for name, values in levels.items() for level in values]


def stored_predictions(folders: dict[str, Path]) -> Callable[[Method, Pair], np.ndarray | None]:
    """``(method, pair)`` -> the prediction in ``folders[method.name]`` (as the predict and train stages
    write them), or None where there is none."""

    def read(method: Method, pair: Pair) -> np.ndarray | None:
        path = folders[method.name] / prediction_name(pair) if method.name in folders else None
        return read_geotiff(path).data if path is not None and path.is_file() else None

    return read


def sweep(cube: xr.Dataset, splits: Splits, methods: list[Method], levels: dict[str, list[float]], *, seed: int,
          stored: Callable[[Method, Pair], np.ndarray | None] | None = None, progress: bool = True) -> pd.DataFrame:
    """The tidy robustness table (:data:`COLUMNS`) of ``methods`` on every test pair of ``splits``;
    ``stored`` gives a method's prediction of the undegraded inputs where one was written (:func:`stored_predictions`).
    Methods that take two reference pairs only (ESTARFM) are left out: each degradation is defined on one pair."""
    levels = check_levels(levels)
    methods = [method for method in methods if 1 in method.pairs]
    ratio, grid_offset = cube_ratio(cube), cube_grid_offset(cube)
    dates = pd.DatetimeIndex(cube["time"].values).strftime("%Y-%m-%d").tolist()
    rows, undegraded = [], {}
    steps = [(p, c) for p in splits.test for c in conditions(levels)]
    for test_pair, (degradation, level) in tqdm(steps, desc=f"robustness {splits.dataset}", disable=not progress):
        pair = reference_at_gap(splits, dates, test_pair, int(level)) if degradation == "time_gap" else test_pair
        if pair is None:
            continue
        target = date_index(cube, pair[1])
        observed, truth = to_reflectance(cube["fine"][target].values), truth_mask(cube, pair)
        inputs = degrade(pair_inputs(cube, pair), degradation, level, _rng(seed, degradation, level, pair),
                         ratio=ratio, grid_offset=grid_offset)
        for method in methods:
            key = (method.name, pair)
            none = level == DEGRADATIONS[degradation].none
            if none and key not in undegraded:  # the same inputs for every degradation: scored once
                prediction = stored(method, pair) if stored is not None else None
                undegraded[key] = (_run(method, inputs, ratio, observed, truth) if prediction is None
                                   else (*_score(prediction, observed, truth), ""))
            rmse, predicted, error = undegraded[key] if none else _run(method, inputs, ratio, observed, truth)
            rows.append([splits.dataset, method.name, method.family, degradation, level, pair[0], pair[1], _days(pair),
                         rmse, predicted, error])
    return pd.DataFrame(rows, columns=COLUMNS)


def _run(method: Method, inputs, ratio: int, observed, truth) -> tuple[float, float, str]:
    try:
        prediction = predict_inputs(method, inputs, ratio)["prediction"]
    except InputError as err:  # the method refuses these inputs: a finding, not a crash
        return math.nan, 0.0, str(err)
    return (*_score(prediction, observed, truth), "")


SUMMARY_COLUMNS = ["dataset", "method", "family", "degradation", "worst_level", "rmse_none", "rmse_worst",
                   "change_percent", "predicted_worst", "failed_levels"]


def comparable(rows: pd.DataFrame) -> pd.DataFrame:
    """Only the test targets present at every level of the degradation (a far reference may not exist)."""
    counts = rows.groupby("target_date")["level"].nunique()
    return rows[rows["target_date"].isin(counts[counts == rows["level"].nunique()].index)]


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per method and degradation: mean RMSE over the test targets with no degradation and at the worst level,
    its change in percent (none where the method failed at some level: its means would cover other
    pixels), the predicted share at the worst level, and the levels where it failed."""
    out = []
    for (dataset, degradation), rows in table.groupby(["dataset", "degradation"], sort=False):
        rows = comparable(rows)
        none, worst = DEGRADATIONS[degradation].none, rows["level"].max()
        for (method, family), group in rows.groupby(["method", "family"], sort=False):
            failed = sorted(group.loc[group["error"].astype(bool), "level"].unique().tolist())
            base = group.loc[group["level"] == none, "rmse"].mean()
            bad = group.loc[group["level"] == worst, "rmse"].mean()
            change = math.nan if failed else 100.0 * (bad / base - 1.0)
            out.append([dataset, method, family, degradation, worst, base, bad, change,
                        group.loc[group["level"] == worst, "predicted"].mean(), ", ".join(f"{v:g}" for v in failed)])
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS)


def findings(summary_table: pd.DataFrame) -> list[str]:
    """One measured sentence per degradation: who degrades least and most, and who breaks."""
    lines = []
    for degradation, rows in summary_table.groupby("degradation", sort=False):
        spec, ranked = DEGRADATIONS[degradation], rows.dropna(subset=["change_percent"]).sort_values("change_percent")
        worst = rows["worst_level"].iloc[0]
        text = f"**{spec.label}** (up to {worst:g} {spec.unit}): "
        if not ranked.empty:
            best, last = ranked.iloc[0], ranked.iloc[-1]
            text += (f"least affected `{best['method']}` ({best['change_percent']:+.0f} % RMSE), most affected "
                     f"`{last['method']}` ({last['change_percent']:+.0f} %)")
        broken = rows[rows["failed_levels"] != ""]
        if not broken.empty:
            text += "; fails: " + ", ".join(f"`{r.method}` at {r.failed_levels}" for r in broken.itertuples())
        partial = rows[(rows["predicted_worst"] < 0.95) & (rows["failed_levels"] == "")]
        if not partial.empty:
            text += "; predicts only part of the scene at the worst level: " + ", ".join(
                f"`{r.method}` {r.predicted_worst:.0%}" for r in partial.itertuples())
        lines.append(text + ".")
    return lines
