"""Which units a user's raster holds, checked before it is fused: reflectance in (0, 1] once divided by its
reflectance scale, like every stored value of the study (``stfusion.units``).

A file whose values mostly fall outside (0, 1] was read with the wrong scale (a float file holding
reflectance x 10000, a file in percent) or has an undeclared fill value; one whose same-date partner (the
fine and coarse images of a reference pair) is many times brighter has another scale. Both are errors that
name the file and the fix. The few values outside (0, 1] of a file that fits (fill values such as -9999 or
32000 without a nodata tag, saturated pixels) become nodata and are counted, so the user sees how many.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stfusion.errors import InputError
from stfusion.units import REFLECTANCE_SCALE

MIN_FITTING = 0.5
"""The share of a file's finite values that must be reflectance in (0, 1] for its scale to be taken as right."""
MAX_PAIR_RATIO = 4.0
"""How many times brighter (median over the pixels valid in both) one image of a same-date pair may be."""
_SAMPLE = 200_000  # values the percentiles of an error message are taken from


def check_units(refl: np.ndarray, path: Path | str, scale: float) -> None:
    """Raise :class:`InputError` when fewer than half of the finite values of ``refl`` (stored values over
    ``scale``) are reflectance in (0, 1]: the scale is wrong or the file has undeclared fill values."""
    finite = refl[np.isfinite(refl)]
    if not finite.size:
        return
    share = float(((finite > 0) & (finite <= 1)).mean())
    if share < MIN_FITTING:
        stored = finite[:: max(1, finite.size // _SAMPLE)] * scale
        low, high = np.percentile(stored, [1, 99])
        raise InputError(f"{path}: only {share:.0%} of its values are reflectance in (0, 1] once divided by {scale:g} "
                         f"(1st to 99th percentile of the values: {low:.4g} to {high:.4g}); " + _hint(high, scale))


def mask_outside(refl: np.ndarray) -> int:
    """Set the values of ``refl`` outside (0, 1] to NaN (nodata), in place; return how many there were."""
    outside = np.isfinite(refl) & ~((refl > 0) & (refl <= 1))
    refl[outside] = np.nan
    return int(outside.sum())


def _hint(high: float, scale: float) -> str:
    if scale == 1 and 1 < high <= 100:
        return "they look like reflectance in percent: pass --reflectance-scale 100"
    if scale == 1 and 100 < high <= 2 * REFLECTANCE_SCALE:
        return f"they look like reflectance x {REFLECTANCE_SCALE}: pass --reflectance-scale {REFLECTANCE_SCALE}"
    return ("set --reflectance-scale to the files' stored units per unit reflectance, or give the file a nodata "
            "value for its fill values")


def check_pair(fine: np.ndarray, coarse: np.ndarray, fine_path: Path | str, coarse_path: Path | str) -> None:
    """The fine and coarse reflectance of one date are on the same scale: their medians over the pixels valid
    in both are within :data:`MAX_PAIR_RATIO` of each other."""
    both = np.isfinite(fine).all(axis=0) & np.isfinite(coarse).all(axis=0)
    if both.sum() < 100:
        return  # too few pixels to judge
    fine_median, coarse_median = float(np.median(fine[:, both])), float(np.median(coarse[:, both]))
    if min(fine_median, coarse_median) <= 0:
        return
    ratio = max(fine_median, coarse_median) / min(fine_median, coarse_median)
    if ratio > MAX_PAIR_RATIO:
        brighter = fine_path if fine_median > coarse_median else coarse_path
        raise InputError(f"{brighter}: its median reflectance ({max(fine_median, coarse_median):.4g}) is "
                         f"{ratio:.1f} times that of the other image of its pair ({min(fine_median, coarse_median):.4g}, "
                         f"{coarse_path if brighter == fine_path else fine_path}); the two must hold the same units: "
                         "check each file's scale and nodata value")


def outside_summary(counts: dict[str, int]) -> str | None:
    """One line on the values counted as nodata because they lay outside (0, 1], or None where there were none."""
    counted = {path: n for path, n in counts.items() if n}
    if not counted:
        return None
    parts = ", ".join(f"{n} in {path}" for path, n in counted.items())
    return f"{sum(counted.values())} values outside reflectance (0, 1] counted as nodata ({parts})"


__all__ = ["MAX_PAIR_RATIO", "MIN_FITTING", "check_pair", "check_units", "mask_outside", "outside_summary"]
