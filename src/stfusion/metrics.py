"""Fusion metrics on float reflectance in [0, 1].

Conventions (shared/reference/metrics.md): images are (band, y, x); a pixel counts only where the
mask is true (the intersection of the inputs' and the target's valid masks); sums run in float64.

- ``rmse``: per band, RMSE_k = sqrt(mean_i (P_ik - R_ik)^2); ``rmse_all`` is the global RMSE over
  every band and valid pixel, sqrt(mean_{i,k} (P_ik - R_ik)^2), which differs from the band mean.
"""

from __future__ import annotations

import numpy as np

from stfusion.errors import InputError


def _masked_errors(prediction: np.ndarray, observed: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if prediction.shape != observed.shape:
        raise InputError(f"prediction shape {prediction.shape} differs from observed shape {observed.shape}")
    mask = np.ones(observed.shape[1:], bool) if mask is None else np.asarray(mask, bool)
    mask = mask & np.isfinite(prediction).all(axis=0) & np.isfinite(observed).all(axis=0)
    if not mask.any():
        raise InputError("no valid pixel to score: the mask excludes every pixel")
    return prediction[:, mask].astype(np.float64) - observed[:, mask].astype(np.float64)


def rmse(prediction: np.ndarray, observed: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-band RMSE, shape (band,)."""
    errors = _masked_errors(prediction, observed, mask)
    return np.sqrt(np.mean(errors**2, axis=1))


def rmse_all(prediction: np.ndarray, observed: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Global RMSE over all bands and valid pixels."""
    errors = _masked_errors(prediction, observed, mask)
    return float(np.sqrt(np.mean(errors**2)))
