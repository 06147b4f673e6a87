"""Fusion of users' own images: the ``stfusion fuse`` command.

Reads a fine/coarse reference pair and the coarse image of the target date (any GDAL-readable
raster, ENVI included, with the coarse images resampled onto the fine grid as in CIA/LGC), runs a
method that needs no training, and writes the prediction as a float32 reflectance GeoTIFF (NaN =
nodata) on the inputs' grid, keeping their CRS and transform.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from stfusion.baselines import check_window
from stfusion.data.raster import as_reflectance, read_raster, write_geotiff
from stfusion.errors import ConfigError, InputError
from stfusion.methods import get_method


class NoGeoreferenceWarning(UserWarning):
    """The inputs have no CRS, so neither has the prediction."""


def _read_inputs(paths: dict[str, Path], scale: float | None):
    """Reflectance of the three inputs, their common grid, and the mask of pixels valid in all."""
    rasters = {name: read_raster(path) for name, path in paths.items()}
    first_name, first = next(iter(rasters.items()))
    for name, raster in rasters.items():
        if raster.data.shape[0] != first.data.shape[0]:
            raise InputError(f"{paths[name]}: has {raster.data.shape[0]} bands but {paths[first_name]} has {first.data.shape[0]}")
        first.grid.require_same(raster.grid, what=f"{paths[name]} against {paths[first_name]}")
    data = {name: as_reflectance(raster, scale)[0] for name, raster in rasters.items()}
    valid = np.logical_and.reduce([np.isfinite(d).all(axis=0) for d in data.values()])
    return data, first.grid, valid


def fuse_files(method_name: str, fine_ref: str | os.PathLike, coarse_ref: str | os.PathLike,
               coarse_target: str | os.PathLike, out: str | os.PathLike, *, ratio: int = 20,
               window: int | None = None, scale: float | None = None) -> dict:
    """Predict the fine image of the target date with ``method_name`` and write it to ``out``.

    ``ratio`` is the coarse over fine pixel size (20 for 500 m / 25 m) and must divide the grid;
    ``window`` the side of the method's search window in fine pixels (odd), for methods that have
    one. Integer inputs are read as reflectance x 10000 unless ``scale`` says otherwise.
    """
    method = get_method(method_name, key="--method")
    if method.predict is None:
        raise ConfigError(f"--method: {method_name} must be trained first; `stfusion fuse` runs methods without training")
    if window is not None and "window" not in method.options:
        raise ConfigError(f"--window: method {method_name} has no search window")
    if window is not None:
        check_window(window, key="--window")
    paths = {"fine_ref": Path(fine_ref), "coarse_ref": Path(coarse_ref), "coarse_target": Path(coarse_target)}
    data, grid, valid = _read_inputs(paths, scale)
    if ratio < 1 or grid.height % ratio or grid.width % ratio:
        raise InputError(f"--ratio: {ratio} does not divide the grid of {paths['fine_ref']} ({grid.height} x {grid.width})")
    if not valid.any():
        raise InputError(f"{paths['fine_ref']}, {paths['coarse_ref']}, {paths['coarse_target']}: no pixel is valid in all three")
    options = {"window": window} if window is not None else {}
    prediction = method.predict(data["fine_ref"], data["coarse_ref"], data["coarse_target"],
                                valid=valid, ratio=ratio, **options).astype(np.float32)
    prediction[:, ~valid] = np.nan
    if grid.crs is None:
        warnings.warn(f"{paths['fine_ref']} has no georeferencing: {out} is written without a CRS",
                      NoGeoreferenceWarning, stacklevel=2)
    write_geotiff(out, prediction, grid, nodata=float("nan"))
    return {"method": method_name, "out": str(out), "pixels": int(valid.sum()), "bands": prediction.shape[0],
            "georeferenced": grid.crs is not None}
