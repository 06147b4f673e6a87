"""Reading and writing rasters, and checking that grids agree.

GeoTIFF (and anything else GDAL opens through rasterio) is read here; headerless ENVI files
are read by :mod:`stfusion.data.envi`. Every reader returns a :class:`Raster`: a (band, y, x)
array plus its :class:`Grid`.
"""

from __future__ import annotations

import math
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.env import get_gdal_config, set_gdal_config
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from stfusion.errors import ConfigError, InputError
from stfusion.io import atomic_path
from stfusion.units import REFLECTANCE_SCALE


GDAL_CACHE_MB = 128
"""GDAL's block cache while a GeoTIFF is written or a scene fused block by block, unless ``GDAL_CACHEMAX`` is set:
GDAL's default (5 % of the machine's memory) fills with the tiles written, so memory grew with the scene.
128 MB holds the part-written tiles along a row of blocks up to ~20,000 px wide (6 bands); wider, GDAL writes
them out and reads them back, which costs time, not correctness."""


@contextmanager
def bounded_gdal_cache() -> Iterator[None]:
    """GDAL's block cache bounded to :data:`GDAL_CACHE_MB` for the ``with`` block, then restored; the user's
    ``GDAL_CACHEMAX`` wins. (``rasterio.Env`` leaves the bound in place when it exits inside another Env.)"""
    if "GDAL_CACHEMAX" in os.environ:
        yield
        return
    previous = get_gdal_config("GDAL_CACHEMAX")  # bytes, as GDALGetCacheMax64 gives them
    set_gdal_config("GDAL_CACHEMAX", GDAL_CACHE_MB * 2**20)
    try:
        yield
    finally:
        set_gdal_config("GDAL_CACHEMAX", previous)


@dataclass(frozen=True)
class Grid:
    """Shape and georeferencing of a raster. ``crs`` is None for files without georeferencing."""

    height: int
    width: int
    transform: Affine = Affine.identity()
    crs: CRS | None = None

    def mismatch(self, other: "Grid") -> str | None:
        """Say how ``other`` differs from this grid, or None if they agree."""
        if (self.height, self.width) != (other.height, other.width):
            return f"shape {other.height}x{other.width} differs from {self.height}x{self.width}"
        if (self.crs is None) != (other.crs is None) or (self.crs and self.crs != other.crs):
            return f"CRS {other.crs} differs from {self.crs}"
        if not self.transform.almost_equals(other.transform, precision=1e-6):
            return f"transform {tuple(other.transform)[:6]} differs from {tuple(self.transform)[:6]}"
        return None

    def require_same(self, other: "Grid", *, what: str) -> None:
        """Raise :class:`InputError` naming ``what`` if ``other`` is not this grid."""
        problem = self.mismatch(other)
        if problem:
            raise InputError(f"{what}: grid does not match: {problem}")


@dataclass(frozen=True)
class Raster:
    """A (band, y, x) array with its grid and nodata value."""

    data: np.ndarray
    grid: Grid
    nodata: float | None = None
    path: Path | None = None


def read_geotiff(path: str | os.PathLike, *, bands: int | None = None) -> Raster:
    """Read a GDAL-readable raster. ``bands`` checks the band count. Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: raster file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                data = src.read()
                grid = Grid(src.height, src.width, src.transform, src.crs)
                nodata = src.nodata
    except RasterioIOError as err:  # truncated or not a raster at all
        raise InputError(f"{path}: cannot read raster ({err})") from err
    if bands is not None and data.shape[0] != bands:
        raise InputError(f"{path}: has {data.shape[0]} bands, expected {bands}")
    return Raster(data, grid, nodata, path)


def as_reflectance(raster: Raster, reflectance_scale: float | None = None, *,
                   key: str = "--reflectance-scale") -> tuple[np.ndarray, float]:
    """Float64 reflectance of ``raster`` with NaN at nodata, and the reflectance scale used.

    Values are divided by ``reflectance_scale`` (stored units per unit reflectance); by default
    :data:`~stfusion.units.REFLECTANCE_SCALE` for integer rasters and 1 for float rasters.
    """
    if reflectance_scale is None:
        reflectance_scale = REFLECTANCE_SCALE if np.issubdtype(raster.data.dtype, np.integer) else 1
    if isinstance(reflectance_scale, bool) or not (isinstance(reflectance_scale, (int, float))
                                                   and math.isfinite(reflectance_scale) and reflectance_scale > 0):
        raise ConfigError(f"{key}: expected a positive number of stored units per unit reflectance "
                          f"(10000 for reflectance x 10000), got {reflectance_scale!r}")
    data = raster.data.astype(np.float64)
    if raster.nodata is not None and not np.isnan(raster.nodata):
        data[raster.data == raster.nodata] = np.nan
    return data / reflectance_scale, reflectance_scale


def write_geotiff(
    path: str | os.PathLike,
    data: np.ndarray,
    grid: Grid,
    *,
    nodata: float | None = None,
    band_names: tuple[str, ...] | None = None,
    cog: bool = False,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write a (band, y, x) array as a tiled, compressed GeoTIFF, atomically.

    Float data gets the floating-point predictor, integers the horizontal one, so files stay small.
    ``cog``: a Cloud-Optimised GeoTIFF (GDAL's COG driver: 256-pixel tiles, overviews by averaging, scale 1
    and offset 0 per band), what GIS users expect of a prediction. ``tags`` are written to the file.
    """
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    if data.shape[1:] != (grid.height, grid.width):
        raise ValueError(f"{path}: array shape {data.shape[1:]} does not match grid {grid.height}x{grid.width}")
    predictor = 3 if np.issubdtype(data.dtype, np.floating) else 2
    profile = dict(
        driver="GTiff", height=grid.height, width=grid.width, count=data.shape[0], dtype=data.dtype,
        crs=grid.crs, transform=grid.transform, nodata=nodata, compress="deflate", predictor=predictor,
    )
    if cog:
        profile.update(driver="COG", blocksize=256, overview_resampling="average", bigtiff="if_safer")
    elif grid.height >= 256 and grid.width >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with atomic_path(path) as tmp, warnings.catch_warnings(), bounded_gdal_cache():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            for i, name in enumerate(band_names or (), start=1):
                dst.set_band_description(i, name)
            if cog:
                dst.scales, dst.offsets = (1.0,) * data.shape[0], (0.0,) * data.shape[0]
            if tags:
                dst.update_tags(**tags)
    return Path(path)
