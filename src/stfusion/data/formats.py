"""Any raster a user gives: a GeoTIFF, an ENVI file with its header, or anything else GDAL reads; whole, or
window by window for scenes larger than memory (:func:`open_windows`)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from stfusion.data.envi import find_header, read_envi
from stfusion.data.raster import Grid, Raster, read_geotiff
from stfusion.errors import InputError


def read_raster(path: str | os.PathLike) -> Raster:
    """A GeoTIFF, an ENVI file with its header, or anything else GDAL reads (for users' own files)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: raster file not found")
    is_tiff = path.suffix.lower() in (".tif", ".tiff")  # never mistake a neighbour's .hdr for this file's
    return read_envi(path) if not is_tiff and find_header(path) is not None else read_geotiff(path)


@dataclass(frozen=True)
class WindowedRaster:
    """A raster read window by window: ``read(rows, cols)`` gives the (band, y, x) values of that box."""

    path: Path
    grid: Grid
    count: int
    nodata: float | None
    dtype: np.dtype
    read: Callable[[slice, slice], np.ndarray]
    band_names: tuple[str, ...] | None = None  # the file's band descriptions, when it names every band

    def raster(self, rows: slice, cols: slice) -> Raster:
        """The box as a :class:`Raster` (its grid's transform is the box's)."""
        data = self.read(rows, cols)
        t = self.grid.transform * self.grid.transform.translation(cols.start, rows.start)
        return Raster(data, Grid(data.shape[1], data.shape[2], t, self.grid.crs), self.nodata, self.path)


@contextmanager
def open_windows(path: str | os.PathLike) -> Iterator[WindowedRaster]:
    """:func:`read_raster` for one window at a time: memory holds a window, not the scene."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: raster file not found")
    if path.suffix.lower() not in (".tif", ".tiff") and find_header(path) is not None:
        envi = read_envi(path, mmap=True)  # memory-mapped: slicing reads only the box
        yield WindowedRaster(path, envi.grid, envi.data.shape[0], envi.nodata, envi.data.dtype,
                             lambda rows, cols: np.array(envi.data[:, rows, cols]))
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path)
    except RasterioIOError as err:
        raise InputError(f"{path}: cannot read raster ({err})") from err
    with src:
        grid = Grid(src.height, src.width, src.transform, src.crs)

        def read(rows: slice, cols: slice) -> np.ndarray:
            return src.read(window=Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start))

        names = tuple(src.descriptions) if all(src.descriptions) else None
        yield WindowedRaster(path, grid, src.count, src.nodata, np.dtype(src.dtypes[0]), read, names)
