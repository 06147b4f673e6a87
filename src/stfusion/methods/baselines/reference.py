"""Two honest reference predictors that every fusion method must beat.

Both work on float reflectance arrays of shape (band, y, x), with the coarse images on the fine
grid, and are exact (no parameters, no training). Like every predictor of the study they take
the keyword arguments ``valid`` (the (y, x) mask of usable input pixels) and ``ratio`` (coarse
over fine pixel size); these two are per-pixel rules, so they need neither:

- ``persistence``: F2 = F1. Nothing changes between the reference and the target date.
- ``temporal-difference``: F2 = F1 + (C2 - C1). The coarse sensor's temporal change is added to
  every fine pixel it covers; the simplest use of the coarse image, and the core of STARFM
  with a single, perfectly similar neighbour.
"""

from __future__ import annotations

import numpy as np


def persistence(fine_ref: np.ndarray, coarse_ref: np.ndarray, coarse_target: np.ndarray, *,
                valid: np.ndarray | None = None, ratio: int | None = None) -> np.ndarray:
    """F2 = F1."""
    return np.array(fine_ref, dtype=np.float32, copy=True)


def temporal_difference(fine_ref: np.ndarray, coarse_ref: np.ndarray, coarse_target: np.ndarray, *,
                        valid: np.ndarray | None = None, ratio: int | None = None) -> np.ndarray:
    """F2 = F1 + (C2 - C1)."""
    return (np.asarray(fine_ref, np.float32) + (np.asarray(coarse_target, np.float32) - np.asarray(coarse_ref, np.float32)))
