"""Image helpers for display: colour composites, NDVI and difference maps of (band, y, x) images.

Float reflectance, NaN = no data. The figures and the notebooks share them.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from stfusion import BANDS
from stfusion.errors import ConfigError

TRUE_COLOUR_MAX = 0.25  # reflectance shown as white: keeps fields and soil readable, clips clouds
DIFFERENCE_PERCENTILE = 99  # the difference scale ignores the 1 % largest |differences| (edges, outliers)


def band_index(bands, name: str) -> int:
    bands = [str(b) for b in bands]
    if name not in bands:
        raise ConfigError(f"figures.difference_band: {name!r} is not a band; bands are {bands}")
    return bands.index(name)


def composite(image: np.ndarray, channels: tuple[str, str, str], vmax, bands=BANDS) -> np.ndarray:
    """(y, x, 4) RGBA of three bands stretched 0..vmax (per channel or one for all); transparent where any is NaN."""
    rgb = np.stack([image[band_index(bands, c)] for c in channels], axis=-1) / np.asarray(vmax, np.float32)
    alpha = np.isfinite(rgb).all(axis=-1)
    return np.dstack([np.clip(np.nan_to_num(rgb), 0, 1), alpha]).astype(np.float32)


def true_colour(image: np.ndarray, vmax: float = TRUE_COLOUR_MAX, bands=BANDS) -> np.ndarray:
    """(band, y, x) float reflectance -> (y, x, 3) RGB in [0, 1], black where NaN."""
    return composite(image, ("red", "green", "blue"), vmax, bands)[..., :3]


def show_true_colour(images: dict[str, np.ndarray], title: str | None = None, bands=BANDS) -> Figure:
    """One true-colour panel per ``{panel title: (band, y, x) reflectance}`` with ``bands`` named, side by side
    (the notebooks' views)."""
    fig, axes = plt.subplots(1, len(images), figsize=(4.5 * len(images), 4.5), constrained_layout=True, squeeze=False)
    for ax, (name, image) in zip(axes[0], images.items()):
        ax.imshow(true_colour(image, bands=bands))
        ax.set_title(name)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return fig


def ndvi(image: np.ndarray, bands=BANDS) -> np.ndarray:
    """NDVI = (NIR - red) / (NIR + red); NaN where either is missing or the sum is not positive."""
    nir = image[band_index(bands, "nir")].astype(np.float64)
    red = image[band_index(bands, "red")].astype(np.float64)
    total = nir + red
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (nir - red) / total, np.nan).astype(np.float32)


def difference(image: np.ndarray, observed: np.ndarray, band: str, bands=BANDS) -> np.ndarray:
    """``image - observed`` in one band (NaN propagates)."""
    k = band_index(bands, band)
    return (image[k] - observed[k]).astype(np.float32)


def symmetric_limit(arrays, percentile: float = DIFFERENCE_PERCENTILE) -> float:
    """One colour limit for every array: the largest ``percentile`` of |value|; 0.01 if all are zero or NaN."""
    values = np.concatenate([np.abs(a[np.isfinite(a)]).ravel() for a in arrays])
    limit = float(np.percentile(values, percentile)) if values.size else 0.0
    return limit if limit > 0 else 0.01


# --- parameters: the showcase pair and the crop window --------------------------------------------
