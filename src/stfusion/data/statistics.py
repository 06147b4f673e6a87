"""Spatial and temporal statistics of a fine image series, to compare a scene with real Landsat.

- :func:`variance_components`: Emelyanova et al. (2013, doi:10.1016/j.rse.2013.02.007) characterised
  CIA and LGC by how the fine images' variance splits: over space within a date, against over time
  at a pixel. CIA's is dominated by space (small fields), LGC's by time (the flood).
- :func:`variance_partition`: the same variance as a two-way analysis of variance: a persistent
  spatial pattern (pixel means), a scene-wide change (date means), and change that differs from
  pixel to pixel (the rest). Which of the two splits Emelyanova et al. used is not stated in what we
  have, so docs/data.md reports both.
- :func:`semivariogram`: the normalised semivariance at a few lags along rows and columns: how fast
  the scene decorrelates (field size, edges, roads).

Only pixels valid on every date count (clouds and nodata out), so the numbers do not depend on the sky.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from stfusion.units import to_reflectance


def _stack(cube: xr.Dataset, band: str) -> tuple[np.ndarray, np.ndarray]:
    """(time, y, x) reflectance of ``band`` and the (y, x) mask of pixels valid on every date."""
    images = to_reflectance(cube["fine"].sel(band=band).values).astype(np.float64)
    return images, cube["valid"].values.astype(bool).all(axis=0)


def variance_components(cube: xr.Dataset, band: str) -> dict[str, float]:
    """Mean over dates of the spatial variance, and mean over pixels of the temporal variance, of ``band``."""
    images, valid = _stack(cube, band)
    pixels = images[:, valid]  # (time, pixels)
    spatial, temporal = float(pixels.var(axis=1).mean()), float(pixels.var(axis=0).mean())
    total = spatial + temporal
    return {"spatial_variance": spatial, "temporal_variance": temporal,
            "spatial_share": spatial / total if total > 0 else float("nan")}


def variance_partition(cube: xr.Dataset, band: str) -> dict[str, float]:
    """Shares of ``band``'s variance in the pixels' means (space), the dates' means (time) and the rest
    (space-time interaction: change that differs between pixels); they sum to 1."""
    images, valid = _stack(cube, band)
    pixels = images[:, valid]  # (time, pixels)
    total = pixels.var()
    if total == 0:
        return {"space": float("nan"), "time": float("nan"), "interaction": float("nan")}
    dates, places = pixels.mean(axis=1), pixels.mean(axis=0)
    space, time = float(places.var() / total), float(dates.var() / total)
    return {"space": space, "time": time, "interaction": 1.0 - space - time}


def semivariogram(cube: xr.Dataset, band: str, lags=(1, 2, 4, 8, 16, 32)) -> dict[int, float]:
    """Semivariance of ``band`` at each lag (pixels, rows and columns pooled, every date) over its variance."""
    images, valid = _stack(cube, band)
    variance = images[:, valid].var()
    out = {}
    for lag in lags:
        pairs = [(images[:, lag:, :], images[:, :-lag, :], valid[lag:, :] & valid[:-lag, :]),
                 (images[:, :, lag:], images[:, :, :-lag], valid[:, lag:] & valid[:, :-lag])]
        squares = np.concatenate([((a - b)[:, ok] ** 2).ravel() for a, b, ok in pairs])
        out[lag] = float(0.5 * squares.mean() / variance)
    return out
