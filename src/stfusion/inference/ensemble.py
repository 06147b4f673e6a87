"""The seed ensemble of a deep model: the per-pixel mean of its seeds' predictions, a method of its own
(``<model>-ensemble``), with the per-pixel spread of the seeds written beside it as its uncertainty map.

The spread is the sample standard deviation (ddof = 1) of the members, so that with few seeds it does
not understate the variance between runs; docs/metrics.md says how it is scored.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from stfusion.data.datacube import cube_grid
from stfusion.data.raster import read_geotiff, write_geotiff
from stfusion.data.splits import Splits
from stfusion.errors import InputError
from stfusion.io import atomic_dir, write_json
from stfusion.inference.outputs import PREDICTION_TAGS
from stfusion.inference.predict import prediction_name, uncertainty_name

SUFFIX = "-ensemble"


def ensemble_name(model: str) -> str:
    """The method name of ``model``'s seed ensemble."""
    return f"{model}{SUFFIX}"


def _member_record(folder: Path) -> dict[str, Any]:
    path = folder / "run.json"
    if not path.is_file():
        raise InputError(f"{path}: run record not found; run the train stage of this seed first")
    return json.loads(path.read_text())


def ensemble_mean_and_spread(members: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and sample standard deviation (ddof = 1) of two or more (band, y, x) predictions."""
    if len(members) < 2:
        raise InputError(f"an ensemble needs at least 2 members, got {len(members)}")
    stack = np.stack(members).astype(np.float64)
    return stack.mean(axis=0).astype(np.float32), stack.std(axis=0, ddof=1).astype(np.float32)


def write_ensemble(model: str, folders: list[Path], cube: xr.Dataset, splits: Splits,
                   out_dir: str | os.PathLike) -> dict[str, Any]:
    """Write the ensemble of ``model``'s seed runs in ``folders`` to ``out_dir`` atomically; return its run.json."""
    records = [_member_record(Path(f)) for f in folders]
    grid, bands = cube_grid(cube), cube.sizes["band"]
    seconds = {}
    with atomic_dir(out_dir) as tmp:
        for pair in splits.test:
            start = time.perf_counter()
            members = [read_geotiff(Path(f) / prediction_name(pair), bands=bands).data for f in folders]
            mean, spread = ensemble_mean_and_spread(members)
            names = tuple(str(b) for b in cube["band"].values)
            write_geotiff(Path(tmp) / prediction_name(pair), mean, grid, nodata=float("nan"), band_names=names,
                          cog=True, tags=PREDICTION_TAGS["prediction"])
            write_geotiff(Path(tmp) / uncertainty_name(pair), spread, grid, nodata=float("nan"), band_names=names,
                          cog=True, tags=PREDICTION_TAGS["uncertainty"])
            key = f"{pair[0]}_{pair[1]}"
            seconds[key] = sum(r["predict_seconds"][key] for r in records) + time.perf_counter() - start
        record = {
            "dataset": splits.dataset, "method": ensemble_name(model), "family": records[0]["family"], "split": "test",
            "members": [r.get("seed") for r in records], "parameters": sum(r["parameters"] for r in records),
            "train_seconds": sum(r["train_seconds"] for r in records), "predict_seconds": seconds,
            "pairs": [list(p) for p in splits.test], "height": grid.height, "width": grid.width,
        }
        write_json(Path(tmp) / "run.json", record)
    return record
