"""Gaps in the fine reference (clouds, shadows, missing data) and how the deep models see them.

A deep model needs a complete reference image. Where the fine reference is not valid, the best
fine-scale estimate there is the coarse reference pixel over it, so the gap takes the coarse
reference's value: the model then predicts the gap from the coarse change alone, and it is trained
on references filled the same way (docs/methods/training.md). The traditional methods are given the
gaps as they are and predict from the valid pixels (docs/methods/README.md).
"""

from __future__ import annotations

import numpy as np


def reference_gaps(fine_ref: np.ndarray) -> np.ndarray:
    """(y, x) True where the float (band, y, x) ``fine_ref`` is not finite in some band."""
    return ~np.isfinite(fine_ref).all(axis=0)


def fill_reference_gaps(fine_ref: np.ndarray, coarse_ref: np.ndarray, gaps: np.ndarray | None = None) -> np.ndarray:
    """``fine_ref`` with each gap pixel (``gaps``, default: not finite) taken from ``coarse_ref``; same dtype."""
    gaps = reference_gaps(fine_ref) if gaps is None else np.asarray(gaps, bool)
    if not gaps.any():
        return fine_ref
    return np.where(gaps[None], coarse_ref, fine_ref).astype(fine_ref.dtype, copy=False)
