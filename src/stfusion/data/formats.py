"""Any raster a user gives: a GeoTIFF, an ENVI file with its header, or anything else GDAL reads."""

from __future__ import annotations

import os
from pathlib import Path

from stfusion.data.envi import find_header, read_envi
from stfusion.data.raster import Raster, read_geotiff
from stfusion.errors import InputError


def read_raster(path: str | os.PathLike) -> Raster:
    """A GeoTIFF, an ENVI file with its header, or anything else GDAL reads (for users' own files)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: raster file not found")
    is_tiff = path.suffix.lower() in (".tif", ".tiff")  # never mistake a neighbour's .hdr for this file's
    return read_envi(path) if not is_tiff and find_header(path) is not None else read_geotiff(path)
