"""Methods that need no training: the reference predictors, STARFM, ESTARFM and FSDAF."""

from __future__ import annotations

import warnings

import numpy as np

from stfusion.errors import InputError


def check_window(window, *, key: str = "window") -> int:
    """A search-window side in fine pixels: an odd integer >= 3 (so the window has a centre)."""
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 3 or window % 2 == 0:
        raise InputError(f"{key}: expected an odd number of pixels >= 3, got {window!r}")
    return int(window)


class FallbackWarning(UserWarning):
    """The ``holes`` (a (y, x) mask) of the ``pixels`` pixels with valid inputs hold the fallback, not ``method``'s
    own prediction; callers that predict a scene in parts count the holes of each part's core."""

    def __init__(self, method: str, holes: np.ndarray, pixels: int):
        self.method, self.holes, self.pixels = method, holes, pixels
        super().__init__(f"{method}: {self.count} of {pixels} pixels with valid inputs had no similar pixel and "
                         "hold the temporal-difference value F1 + (C2 - C1) instead")

    @property
    def count(self) -> int:
        return int(self.holes.sum())


def fill_holes(method: str, pred: np.ndarray, fine_refs: np.ndarray, coarse_refs: np.ndarray,
               coarse_target: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """``pred`` with every NaN whose inputs are valid replaced by F1 + (C2 - C1) (the mean over the pairs).

    A window method predicts nothing where it finds no similar pixel; the user asked for a prediction
    wherever the inputs allow one, so those pixels fall back, are counted and are reported as a
    :class:`FallbackWarning`. Pixels with an invalid input stay NaN.
    """
    target = np.asarray(coarse_target, np.float32)
    fine = np.asarray(fine_refs, np.float32).reshape((-1,) + target.shape)
    coarse = np.asarray(coarse_refs, np.float32).reshape((-1,) + target.shape)
    ok = np.isfinite(target).all(axis=0) & np.isfinite(fine).all(axis=(0, 1)) & np.isfinite(coarse).all(axis=(0, 1))
    if valid is not None:
        ok &= np.asarray(valid, bool).reshape((-1,) + ok.shape).all(axis=0)
    holes = ok & ~np.isfinite(pred).all(axis=0)
    count = int(holes.sum())
    if count:
        fallback = (fine[:, :, holes] + (target[:, holes] - coarse[:, :, holes])).mean(axis=0)
        pred[:, holes] = np.where(np.isfinite(pred[:, holes]), pred[:, holes], fallback)
        warnings.warn(FallbackWarning(method, holes, int(ok.sum())), stacklevel=2)
    return pred
