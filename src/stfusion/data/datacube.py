"""The datacube: every date of one dataset in one CF-style NetCDF file.

``build_cube`` reads the files a verified :class:`~stfusion.data.manifest.Manifest` lists and
returns an :class:`xarray.Dataset` with

- ``fine`` and ``coarse``: int16 (time, band, y, x), reflectance x 10000 (CF ``scale_factor``
  1e-4, so CF-aware tools show reflectance). The coarse image sits on the fine grid, as the real
  CIA/LGC MODIS files are delivered.
- ``valid``: uint8 (time, y, x), 1 where both images hold a valid reflectance in every band,
  i.e. 0 < value <= 10000, and the fine image's QA mask (``fine_qa``, when the manifest has one)
  says clear: clouds and their shadows are invalid.
- ``cover`` and ``change``: uint8 (time, y, x), the synthetic generator's truth, when present.
- ``x``/``y`` pixel-centre coordinates and the CRS (``spatial_ref``, written by rioxarray).

The cube is kept as int16 in memory (a full LGC cube is ~2.9 GB as int16, twice that as float32);
:func:`reflectance` converts the slices a caller needs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from tqdm.auto import tqdm

from stfusion import BANDS
from stfusion.data.envi import read_envi
from stfusion.data.manifest import QA_CLEAR, Manifest
from stfusion.data.raster import Grid, Raster, read_geotiff
from stfusion.errors import InputError
from stfusion.io import atomic_path
from stfusion.units import is_valid_stored


def read_image(manifest: Manifest, date: str, role: str) -> Raster:
    """Read the ``role`` image of ``date`` in whatever format the manifest records."""
    path = manifest.file(date, role)
    rel = next(e[role] for e in manifest.dates if e["date"] == date)
    info = manifest.file_info(rel)
    fmt = info.get("format", "gtiff")
    bands = len(manifest.bands) if role in ("fine", "coarse") else 1  # QA and truth: one band
    if fmt == "gtiff":
        return read_geotiff(path, bands=bands)
    if fmt in ("envi-bil", "envi-bsq"):
        shape = tuple(info["shape"]) if "shape" in info else None
        raster = read_envi(path, interleave=fmt.removeprefix("envi-"), shape=shape)
        if raster.data.shape[0] != bands:
            raise InputError(f"{path}: has {raster.data.shape[0]} bands, expected {bands}")
        return raster
    raise InputError(f"{manifest.path}: file {rel} has unknown format {fmt!r}; expected gtiff, envi-bil or envi-bsq")


def valid_mask(image: np.ndarray) -> np.ndarray:
    """True where every band holds a valid reflectance (stored value in (0, reflectance scale])."""
    return np.all(is_valid_stored(image), axis=0)


def _read_checked(manifest: Manifest, date: str, role: str, grid: Grid | None) -> Raster:
    raster = read_image(manifest, date, role)
    if grid is not None:
        grid.require_same(raster.grid, what=f"{raster.path} ({role}, {date})")
    return raster


def build_cube(manifest: Manifest, *, progress: bool = True) -> xr.Dataset:
    """Read, check and stack every date of ``manifest`` into a datacube."""
    dates = manifest.date_list()
    grid: Grid | None = None
    stacks: dict[str, list[np.ndarray]] = {"fine": [], "coarse": [], "valid": []}
    truth_roles = [r for r in ("cover", "change") if all(r in e for e in manifest.dates)]
    for role in truth_roles:
        stacks[role] = []
    for date in tqdm(dates, desc=f"datacube {manifest.dataset}", disable=not progress):
        fine = _read_checked(manifest, date, "fine", grid)
        grid = grid or fine.grid
        coarse = _read_checked(manifest, date, "coarse", grid)
        valid = {}
        for role, raster in (("fine", fine), ("coarse", coarse)):
            valid[role] = valid_mask(raster.data)
            if not valid[role].any():
                raise InputError(f"{raster.path}: {role} image of {date} has no valid pixel (all nodata)")
            stacks[role].append(raster.data.astype(np.int16, copy=False))
        if "fine_qa" in next(e for e in manifest.dates if e["date"] == date):
            valid["fine"] &= _read_checked(manifest, date, "fine_qa", grid).data[0] == QA_CLEAR
        stacks["valid"].append((valid["fine"] & valid["coarse"]).astype(np.uint8))
        for role in truth_roles:
            stacks[role].append(_read_checked(manifest, date, role, grid).data[0].astype(np.uint8))
    return _assemble(manifest, dates, grid, stacks)


def _assemble(manifest: Manifest, dates: list[str], grid: Grid, stacks: dict[str, list[np.ndarray]]) -> xr.Dataset:
    t = grid.transform
    coords = {
        "time": pd.to_datetime(dates).values,
        "band": list(manifest.bands),
        "y": t.f + t.e * (np.arange(grid.height) + 0.5),
        "x": t.c + t.a * (np.arange(grid.width) + 0.5),
    }
    image_attrs = {"scale_factor": 1.0 / manifest.reflectance_scale, "add_offset": 0.0, "units": "1"}
    data_vars = {
        role: (("time", "band", "y", "x"), np.stack(stacks[role]),
               {**image_attrs, "long_name": f"{role} surface reflectance"})
        for role in ("fine", "coarse")
    }
    data_vars["valid"] = (("time", "y", "x"), np.stack(stacks["valid"]),
                          {"long_name": "1 where fine and coarse are valid in every band and fine is clear"})
    for role, name in (("cover", "true land-cover class"), ("change", "true change against the first date")):
        if role in stacks:
            data_vars[role] = (("time", "y", "x"), np.stack(stacks[role]), {"long_name": name})
    cube = xr.Dataset(data_vars, coords=coords, attrs={
        "dataset": manifest.dataset, "source": manifest.source, "ratio": manifest.ratio,
        "Conventions": "CF-1.8", "title": f"stfusion datacube of {manifest.dataset}",
    })
    offset = manifest.meta.get("config", {}).get("grid_offset")  # synthetic data: where its coarse pixels start
    if offset is not None:
        cube.attrs["coarse_grid_offset"] = np.asarray(offset, np.int32)
    if grid.crs is not None:
        cube = cube.rio.write_crs(grid.crs).rio.write_transform(grid.transform)
    return cube


def save_cube(cube: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``cube`` as compressed NetCDF-4, atomically."""
    cube = cube.copy()
    for name in cube.data_vars:
        # Update, not replace: rioxarray keeps the CRS link (grid_mapping) in each variable's encoding.
        cube[name].encoding.update(zlib=True, complevel=4)
    with atomic_path(path) as tmp:
        cube.to_netcdf(tmp, engine="netcdf4")
    return Path(path)


def open_cube(path: str | os.PathLike) -> xr.Dataset:
    """Load a datacube into memory, keeping the raw int16 values (no CF decoding to float)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: datacube not found; run the preprocess stage first")
    cube = xr.load_dataset(path, engine="netcdf4", mask_and_scale=False, decode_coords="all")
    return cube


def cube_grid(cube: xr.Dataset) -> Grid:
    """The fine grid of ``cube`` (shape, transform and CRS, if any)."""
    return Grid(cube.sizes["y"], cube.sizes["x"], transform=cube.rio.transform(), crs=cube.rio.crs)


def cube_ratio(cube: xr.Dataset) -> int:
    """The coarse over fine pixel size of ``cube`` (20 for 500 m MODIS over 25 m Landsat), as its manifest said."""
    if "ratio" not in cube.attrs:
        raise InputError(f"datacube of {cube.attrs.get('dataset')}: no 'ratio' attribute (the coarse over fine pixel "
                         "size); rerun the preprocess stage")
    return int(cube.attrs["ratio"])


def cube_grid_offset(cube: xr.Dataset) -> tuple[int, int]:
    """(y, x) fine pixels from the grid's origin to the first coarse pixel edge: known for synthetic data,
    taken as (0, 0) otherwise."""
    return tuple(int(v) for v in cube.attrs.get("coarse_grid_offset", (0, 0)))


def date_index(cube: xr.Dataset, date: str) -> int:
    """Position of the ISO ``date`` on the cube's time axis."""
    stamps = pd.DatetimeIndex(cube["time"].values).strftime("%Y-%m-%d").tolist()
    try:
        return stamps.index(date)
    except ValueError:
        raise InputError(f"datacube of {cube.attrs.get('dataset')}: no date {date}; dates are {stamps}") from None


__all__ = ["BANDS", "build_cube", "save_cube", "open_cube", "reflectance", "cube_grid", "date_index", "valid_mask"]
