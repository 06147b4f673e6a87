"""Clouds and cloud shadows on fine images, with the QA mask a real Landsat product gives.

A cloud field is a smooth random field; the ``cover`` share of the scene with the highest values is
cloud (exactly that many pixels), thicker towards its cores. Each cloud casts a shadow displaced by
``height * tan(solar zenith)`` away from the sun, with the sun where it stands at Landsat's morning
overpass on that date and latitude. Shadows wrap around the scene's edges (a cloud just outside the
scene shades pixels inside), so the shadowed area equals the clouded one less their overlap.
Values and their sources are in docs/data.md.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
from scipy import ndimage

from stfusion.data.manifest import QA_CLEAR, QA_CLOUD, QA_SHADOW

CLOUD_SPECTRUM = (0.45, 0.44, 0.43, 0.45, 0.36, 0.26)
"""Reflectance of a thick cloud, blue..SWIR2: bright and flat in the visible, lower in the SWIR."""
SHADOW_TRANSMISSION = (0.50, 0.42, 0.38, 0.32, 0.30, 0.30)
"""Share of the reflectance a shadowed pixel keeps (diffuse skylight, bluer than direct sun)."""
OVERPASS_SOLAR_HOUR = 10.0
"""Local solar time of Landsat 5/7's descending overpass (about 10:00)."""


def cloud_field(rng: np.random.Generator, shape: tuple[int, int], cover: float, size_px: float) -> np.ndarray:
    """Cloud opacity in [0, 1] per pixel; exactly ``round(cover * pixels)`` pixels are above 0.

    ``size_px``: the field's correlation length in pixels (the size of a cloud). Opacity rises from
    0.5 at a cloud's edge to 1 in its core, so thin edges let some of the ground through.
    """
    if not 0.0 <= cover < 1.0:
        raise ValueError(f"cloud cover must be in [0, 1), got {cover}")
    n_cloud = int(round(cover * shape[0] * shape[1]))
    opacity = np.zeros(shape, np.float32)
    if n_cloud == 0:
        return opacity
    field = ndimage.gaussian_filter(rng.standard_normal(shape), size_px, mode="wrap").ravel()
    order = np.argsort(field, kind="stable")[::-1][:n_cloud]  # the n_cloud highest values
    edge, core = field[order[-1]], field[order[0]]
    depth = (field[order] - edge) / max(core - edge, 1e-12)
    opacity.ravel()[order] = 0.5 + 0.5 * np.sqrt(depth)
    return opacity


def solar_angles(date: str, latitude_deg: float, solar_hour: float = OVERPASS_SOLAR_HOUR) -> tuple[float, float]:
    """Solar zenith and azimuth (degrees, azimuth clockwise from north) at ``solar_hour`` local solar time.

    Declination from Cooper's formula; accurate to about a degree, ample for shadow offsets.
    """
    day = dt.date.fromisoformat(date).timetuple().tm_yday
    decl = math.radians(23.44) * math.sin(2 * math.pi * (284 + day) / 365)
    lat, hour = math.radians(latitude_deg), math.radians(15.0 * (solar_hour - 12.0))
    cos_zen = math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(hour)
    zenith = math.acos(max(-1.0, min(1.0, cos_zen)))
    azimuth = math.atan2(-math.sin(hour) * math.cos(decl),
                         math.cos(lat) * math.sin(decl) - math.sin(lat) * math.cos(decl) * math.cos(hour))
    return math.degrees(zenith), math.degrees(azimuth) % 360.0


def shadow_offset(height_m: float, zenith_deg: float, azimuth_deg: float, pixel_m: float) -> tuple[int, int]:
    """(rows, cols) from a cloud to its shadow on a north-up grid: away from the sun, ``height * tan(zenith)``."""
    length = height_m * math.tan(math.radians(zenith_deg)) / pixel_m
    az = math.radians(azimuth_deg)
    return int(round(length * math.cos(az))), int(round(-length * math.sin(az)))  # rows grow southwards


def add_clouds(image: np.ndarray, opacity: np.ndarray, offset: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The (band, y, x) reflectance ``image`` under clouds of ``opacity`` and their shadows, and its QA mask.

    QA codes (:data:`~stfusion.data.manifest.QA_CLEAR` etc.): cloud where opacity > 0, shadow where the
    displaced cloud falls on a cloud-free pixel, clear elsewhere.
    """
    cloud = opacity > 0
    shadow = np.roll(cloud, offset, axis=(0, 1)) & ~cloud
    out = image.astype(np.float32, copy=True)
    for b in range(out.shape[0]):
        out[b][shadow] *= np.float32(SHADOW_TRANSMISSION[b])
        out[b] = out[b] * (1 - opacity) + np.float32(CLOUD_SPECTRUM[b]) * opacity
    qa = np.full(cloud.shape, QA_CLEAR, np.uint8)
    qa[shadow], qa[cloud] = QA_SHADOW, QA_CLOUD
    return out, qa
