"""Full-scene predictions of a method on the pairs of a split, written as Cloud-Optimised GeoTIFFs.

Predictions stay float32 reflectance (no int16 cast), so metrics see exactly what the method
produced. NaN (the nodata value) marks what was not predicted: pixels where a coarse image is not
valid, and the pixels a method leaves out (a traditional method, at gaps of the fine reference).
Each method's folder also holds ``run.json`` with measured timings, read by the evaluate stage, and,
for a diffusion model that draws several samples, ``<reference>_<target>_std.tif``: the per-pixel
standard deviation of its samples beside their mean (the prediction).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from stfusion.data.datacube import cube_grid, cube_ratio, date_index, valid_mask
from stfusion.data.raster import write_geotiff
from stfusion.data.splits import Pair, Splits
from stfusion.inference.outputs import PREDICTION_TAGS
from stfusion.io import atomic_dir, write_json
from stfusion.methods.registry import Method
from stfusion.units import to_reflectance


def prediction_name(pair: Pair) -> str:
    """File name of the prediction of ``pair``: ``<reference>_<target>.tif``."""
    return f"{pair[0]}_{pair[1]}.tif"


def uncertainty_name(pair: Pair) -> str:
    """File name of a stochastic model's per-pixel standard deviation over its samples for ``pair``."""
    return f"{pair[0]}_{pair[1]}_std.tif"


def pair_inputs(cube: xr.Dataset, pair: Pair) -> dict[str, np.ndarray]:
    """Float reflectance inputs of ``pair``: ``fine_ref`` is NaN at its gaps (clouds, shadows, nodata);
    ``valid`` marks where all inputs are valid, ``coarse_valid`` where both coarse images are."""
    ref, target = date_index(cube, pair[0]), date_index(cube, pair[1])
    reference_valid = cube["valid"][ref].values.astype(bool)
    fine_ref = to_reflectance(cube["fine"][ref].values)
    fine_ref[:, ~reference_valid] = np.nan
    coarse_valid = valid_mask(cube["coarse"][ref].values) & valid_mask(cube["coarse"][target].values)
    return {
        "fine_ref": fine_ref,
        "coarse_ref": to_reflectance(cube["coarse"][ref].values),
        "coarse_target": to_reflectance(cube["coarse"][target].values),
        "valid": reference_valid & coarse_valid,
        "coarse_valid": coarse_valid,
    }


def bracket_inputs(cube: xr.Dataset, references: Pair, target: str) -> dict[str, np.ndarray]:
    """:func:`pair_inputs` for a two-pair method: (pair, band, y, x) references, the one before the target first;
    ``valid`` where both pairs and the target's coarse image are valid."""
    pairs = [pair_inputs(cube, (reference, target)) for reference in references]
    return {"fine_ref": np.stack([p["fine_ref"] for p in pairs]), "coarse_ref": np.stack([p["coarse_ref"] for p in pairs]),
            "coarse_target": pairs[0]["coarse_target"], "valid": pairs[0]["valid"] & pairs[1]["valid"],
            "coarse_valid": pairs[0]["coarse_valid"] & pairs[1]["coarse_valid"]}


def method_inputs(method: Method, cube: xr.Dataset, splits: Splits, pair: Pair) -> dict[str, np.ndarray]:
    """The inputs ``method`` predicts test pair ``pair`` from: the pair itself, or for a method that takes
    two pairs only (ESTARFM), the split's pairs before and after the target."""
    if 1 in method.pairs:
        return pair_inputs(cube, pair)
    return bracket_inputs(cube, splits.bracket(pair[1], who=method.name), pair[1])


def predict_pair(method: Method, cube: xr.Dataset, pair: Pair, splits: Splits | None = None) -> dict[str, np.ndarray]:
    """Predict the fine image of ``pair``'s target date: ``{"prediction": ...}``, plus ``"uncertainty"``
    (per-pixel standard deviation) when the method draws several samples. NaN where a coarse image is
    not valid, and wherever the method itself gives NaN. A two-pair method takes its pairs from ``splits``."""
    inputs = pair_inputs(cube, pair) if splits is None else method_inputs(method, cube, splits, pair)
    return predict_inputs(method, inputs, cube_ratio(cube))


def predict_inputs(method: Method, inputs: dict[str, np.ndarray], ratio: int) -> dict[str, np.ndarray]:
    """:func:`predict_pair` on inputs made by :func:`pair_inputs` (perhaps degraded since)."""
    result = method.predict(inputs["fine_ref"], inputs["coarse_ref"], inputs["coarse_target"],
                            valid=inputs["valid"], ratio=ratio)
    outputs = dict(result) if isinstance(result, dict) else {"prediction": result}
    for name, array in outputs.items():
        outputs[name] = array = array.astype(np.float32, copy=False)
        array[:, ~inputs["coarse_valid"]] = np.nan
    return outputs


def predict_split(method: Method, cube: xr.Dataset, splits: Splits, out_dir: str | os.PathLike,
                  *, split: str = "test", extra: dict[str, Any] | None = None,
                  attach: tuple[Path, ...] = (), progress: bool = True) -> dict[str, Any]:
    """Write the predictions of every pair of ``split`` and ``run.json`` into ``out_dir`` atomically.

    ``attach``: files (exported weights, training history) to place in the same folder, in the
    same atomic swap, so the folder never mixes one run's weights with another run's predictions.
    """
    grid = cube_grid(cube)
    seconds: dict[str, float] = {}
    with atomic_dir(out_dir) as tmp:
        for pair in tqdm(splits.pairs(split), desc=f"{method.name} on {splits.dataset}", disable=not progress):
            start = time.perf_counter()
            outputs = predict_pair(method, cube, pair, splits)
            seconds[f"{pair[0]}_{pair[1]}"] = time.perf_counter() - start
            names = {"prediction": prediction_name(pair), "uncertainty": uncertainty_name(pair)}
            for key, array in outputs.items():
                write_geotiff(Path(tmp) / names[key], array, grid, nodata=float("nan"), cog=True,
                              band_names=tuple(str(b) for b in cube["band"].values), tags=PREDICTION_TAGS[key])
        record = {
            "dataset": splits.dataset, "method": method.name, "family": method.family, "split": split,
            "parameters": method.parameters, "train_seconds": 0.0, "predict_seconds": seconds,
            "pairs": [list(p) for p in splits.pairs(split)], "height": grid.height, "width": grid.width,
            **({"brackets": [list(b) for b in splits.brackets]} if 1 not in method.pairs else {}),
            **(extra or {}),
        }
        for path in attach:
            shutil.copyfile(path, Path(tmp) / Path(path).name)
        write_json(Path(tmp) / "run.json", record)
    return record
