"""Reflectance units: how stored integers map to reflectance, defined once for the whole study.

The CIA and LGC files, the synthetic scenes and the datacube store reflectance as int16 integers,
``REFLECTANCE_SCALE`` of them per unit reflectance (value 10000 = reflectance 1). The
``reflectance_scale`` of a file, a manifest, the CLI or a method is always this divisor; the datacube
also carries the CF ``scale_factor`` attribute, its inverse, because that is what CF-aware tools read.
"""

from __future__ import annotations

import numpy as np

__all__ = ["REFLECTANCE_SCALE", "is_valid_stored", "to_reflectance", "to_stored"]

REFLECTANCE_SCALE = 10000
"""Stored integers per unit reflectance (int16), as in the CIA and LGC files."""


def to_reflectance(values, reflectance_scale: float = REFLECTANCE_SCALE) -> np.ndarray:
    """Stored integers -> float32 reflectance (a division, so 10000 maps to exactly 1)."""
    return np.asarray(values, dtype=np.float32) / np.float32(reflectance_scale)


def to_stored(reflectance, reflectance_scale: int = REFLECTANCE_SCALE) -> np.ndarray:
    """Reflectance -> int16 stored values, rounded and clipped to [1, reflectance_scale] (0 and
    negatives mean invalid, so a valid dark pixel never becomes one)."""
    scaled = np.rint(np.asarray(reflectance) * reflectance_scale)  # in the input's precision
    return np.clip(scaled, 1, reflectance_scale, out=scaled).astype(np.int16)


def is_valid_stored(values, reflectance_scale: int = REFLECTANCE_SCALE) -> np.ndarray:
    """True where a stored value is a reflectance in (0, 1]: excludes fill values and wrapped negatives."""
    values = np.asarray(values)
    return (values > 0) & (values <= reflectance_scale)
