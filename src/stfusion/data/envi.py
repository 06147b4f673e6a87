"""Reading (and, for tests and fixtures, writing) ENVI raw binary rasters.

The CIA and LGC files are raw ENVI-style
binaries: no header inside the data file, 6 bands of int16 little-endian, reflectance x 10000.
The layout differs by file kind and nothing in the bytes tells it apart:

- CIA Landsat ``*.bil`` is **BIL** (band interleaved by line): for each line, all bands of that
  line follow each other. Reading it as BSQ silently gives striped garbage.
- every ``*.int`` file (CIA MODIS, LGC Landsat and MODIS) is **BSQ** (band sequential).

Whether companion ``.hdr`` files ship with the data is unconfirmed, so :func:`read_envi` uses a
header when one exists (``file.hdr`` or ``file.<ext>.hdr``, the two names GDAL looks for) and
trusts it; an explicit ``interleave``/``shape`` that contradicts it is an error, because one of
the two is wrong and guessing would give garbage. Without a header the caller must pass the
layout (the per-dataset table lives in :mod:`stfusion.data.real`).

The header is parsed here (no GDAL ENVI driver needed): ``samples``, ``lines``, ``bands``,
``interleave`` (bsq/bil/bip), ``data type`` (1 uint8, 2 int16, 3 int32, 4 float32, 5 float64,
12 uint16, 13 uint32, 14 int64, 15 uint64), ``byte order`` (0 little, 1 big), ``header
offset``, ``map info`` (pixel size and upper-left corner; UTM zone and datum), ``coordinate
system string`` (WKT; wins over map info for the CRS), ``band names`` and ``data ignore value``.
The file size must equal offset + bands x lines x samples x item size exactly: a truncated
download is caught here instead of being read as a shorter image.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError

from stfusion.data.raster import Grid, Raster
from stfusion.errors import ConfigError, InputError
from stfusion.io import atomic_path, write_text

INTERLEAVES = ("bsq", "bil", "bip")

# ENVI "data type" codes -> numpy kind + size (byte order is added from "byte order").
ENVI_DTYPES = {1: "u1", 2: "i2", 3: "i4", 4: "f4", 5: "f8", 12: "u2", 13: "u4", 14: "i8", 15: "u8"}
_DTYPE_CODES = {v: k for k, v in ENVI_DTYPES.items()}

# File axis order of each interleave, and the transpose that turns it into (band, y, x).
_FILE_AXES = {"bsq": ("b", "y", "x"), "bil": ("y", "b", "x"), "bip": ("y", "x", "b")}
_TO_BYX = {"bsq": (0, 1, 2), "bil": (1, 0, 2), "bip": (2, 0, 1)}

# UTM "map info" datum names -> EPSG base code (+ zone). Only used when the header has no
# "coordinate system string". AGD66/AMG is what the CIA "agd66" suffix suggests.
_UTM_DATUMS = {
    "wgs84": (32600, 32700),
    "northamerica1983": (26900, None),
    "nad83": (26900, None),
    "australiangeodetic1966": (20200, 20200),
    "agd66": (20200, 20200),
    "australiangeodetic1984": (20300, 20300),
    "agd84": (20300, 20300),
    "gda94": (28300, 28300),
    "geocentricdatumofaustralia1994": (28300, 28300),
}


class NoGeoreferenceWarning(UserWarning):
    """An ENVI file has no header map info; its grid has no CRS and an identity transform."""


@dataclass(frozen=True)
class EnviRaster(Raster):
    """A :class:`Raster` plus the header's band names (None without a header or names)."""

    band_names: tuple[str, ...] | None = None


def header_candidates(path: str | os.PathLike) -> list[Path]:
    """Companion header names, in GDAL's order: ``file.hdr`` then ``file.<ext>.hdr``."""
    path = Path(path)
    first = path.with_suffix(".hdr") if path.suffix else Path(f"{path}.hdr")
    return list(dict.fromkeys([first, Path(f"{path}.hdr")]))


def find_header(path: str | os.PathLike) -> Path | None:
    """The companion header of ``path`` if one exists."""
    return next((h for h in header_candidates(path) if h.is_file() and h != Path(path)), None)


def parse_header(path: str | os.PathLike) -> dict[str, str]:
    """Parse an ENVI header into ``{lower-case key: value}``; braces are stripped from values."""
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    first, _, body = text.lstrip().partition("\n")
    if first.strip() != "ENVI":
        raise InputError(f"{path}: not an ENVI header (first line must be 'ENVI', got {first.strip()[:40]!r})")
    fields = {}
    # A value is either {...} (may span lines; WKT uses [] so has no braces) or the rest of the line.
    for match in re.finditer(r"^[ \t]*([^=\n{}]+?)[ \t]*=[ \t]*(\{[^}]*\}|[^\n]*)", body, re.M):
        value = match.group(2).strip()
        if value.startswith("{"):
            value = " ".join(value[1:-1].split())
        fields[match.group(1).strip().lower()] = value
    return fields


def _int_field(fields: dict[str, str], key: str, where: Path, default: int | None = None) -> int:
    if key not in fields:
        if default is None:
            raise InputError(f"{where}: ENVI header has no '{key}'")
        return default
    try:
        return int(fields[key])
    except ValueError:
        raise InputError(f"{where}: ENVI header '{key}' = {fields[key]!r} is not an integer") from None


def _size_field(fields: dict[str, str], key: str, where: Path, default: int | None = None) -> int:
    size = _int_field(fields, key, where, default)
    if size < 1:
        raise InputError(f"{where}: ENVI header '{key}' = {size}; expected a positive number of {key}")
    return size


def _header_dtype(fields: dict[str, str], where: Path, fallback: str) -> np.dtype:
    if "data type" not in fields:
        return np.dtype(fallback)
    code = _int_field(fields, "data type", where)
    if code not in ENVI_DTYPES:
        raise InputError(f"{where}: ENVI data type {code} is not supported (supported: {sorted(ENVI_DTYPES)})")
    order = ">" if _int_field(fields, "byte order", where, default=0) == 1 else "<"
    return np.dtype(order + ENVI_DTYPES[code])


def _split_map_info(value: str) -> tuple[list[str], dict[str, str]]:
    """Positional items and ``key=value`` items of a map info string."""
    parts = [p.strip() for p in value.split(",")]
    positional = [p for p in parts if "=" not in p]
    named = dict((k.strip().lower(), v.strip()) for k, v in (p.split("=", 1) for p in parts if "=" in p))
    return positional, named


def _map_info_transform(value: str, where: Path) -> tuple[Affine, list[str]]:
    """Affine transform from ``map info``: the reference pixel (1-based, (1, 1) = upper-left
    corner of the upper-left pixel) sits at (easting, northing); pixel sizes are positive."""
    positional, named = _split_map_info(value)
    try:
        ref_x, ref_y, east, north, size_x, size_y = (float(v) for v in positional[1:7])
    except (ValueError, IndexError):
        raise InputError(f"{where}: cannot parse ENVI map info {{{value}}}") from None
    if float(named.get("rotation", 0) or 0) != 0:
        raise InputError(f"{where}: rotated ENVI map info is not supported (rotation={named['rotation']})")
    x0 = east - (ref_x - 1) * size_x
    y0 = north + (ref_y - 1) * size_y
    return Affine(size_x, 0.0, x0, 0.0, -size_y, y0), positional


def _map_info_crs(positional: list[str]) -> CRS | None:
    """EPSG CRS for ``UTM, ..., zone, North|South, datum`` map info, None when unknown."""
    if positional[0].lower() == "geographic lat/lon":
        return CRS.from_epsg(4326) if len(positional) > 7 and "84" in positional[7] else None
    if positional[0].upper() != "UTM" or len(positional) < 10:
        return None
    datum = re.sub(r"[^a-z0-9]", "", positional[9].lower())
    north_base, south_base = _UTM_DATUMS.get(datum, (None, None))
    base = north_base if positional[8].lower().startswith("n") else south_base
    if base is None:
        return None
    try:
        return CRS.from_epsg(base + int(positional[7]))
    except (ValueError, CRSError):
        return None


def _header_grid(fields: dict[str, str], lines: int, samples: int, where: Path) -> Grid:
    """Grid from map info / coordinate system string; warn when georeferencing is missing."""
    if "map info" not in fields:
        warnings.warn(
            f"{where}: ENVI header has no 'map info', so the raster has no georeferencing "
            "(crs=None, identity transform)", NoGeoreferenceWarning, stacklevel=3,
        )
        return Grid(lines, samples)
    transform, positional = _map_info_transform(fields["map info"], where)
    crs = None
    if fields.get("coordinate system string"):
        try:
            crs = CRS.from_wkt(fields["coordinate system string"])
        except CRSError as err:  # keep the pixels readable; the map info may still name the CRS
            warnings.warn(f"{where}: cannot parse 'coordinate system string' ({err}); using map info", stacklevel=3)
    crs = crs or _map_info_crs(positional)
    if crs is None:
        warnings.warn(
            f"{where}: map info projection {positional[0]!r} is not translated to a CRS; crs=None",
            NoGeoreferenceWarning, stacklevel=3,
        )
    return Grid(lines, samples, transform, crs)


def _check_interleave(value: str, what: str) -> str:
    value = value.strip().lower()
    if value not in INTERLEAVES:
        raise ConfigError(f"{what}: interleave {value!r} is not one of {INTERLEAVES}")
    return value


def read_envi(
    path: str | os.PathLike,
    *,
    interleave: str | None = None,
    shape: tuple[int, int, int] | None = None,
    dtype: str = "<i2",
    mmap: bool = False,
) -> EnviRaster:
    """Read an ENVI raw binary as a (band, y, x) :class:`EnviRaster` (a :class:`Raster`).

    ``shape`` is (bands, lines, samples). With a companion header, the header gives layout,
    dtype, offset and georeferencing; ``interleave``/``shape`` are optional and must agree with
    it (``dtype`` is only used when the header has no ``data type``). Without a header,
    ``interleave`` and ``shape`` are required and ``dtype`` applies; the grid then has no CRS
    and a :class:`NoGeoreferenceWarning` is issued.

    ``mmap=True`` returns a read-only memory-mapped view (file byte order, no copy) instead of a
    native-endian in-memory array.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: ENVI raster file not found")
    if interleave is not None:
        interleave = _check_interleave(interleave, f"{path}: argument")
    header = find_header(path)
    names: tuple[str, ...] | None = None
    nodata = None
    if header is not None:
        fields = parse_header(header)
        layout = (
            _size_field(fields, "bands", header, default=1),
            _size_field(fields, "lines", header),
            _size_field(fields, "samples", header),
        )
        file_interleave = _check_interleave(fields.get("interleave", "bsq"), str(header))
        if interleave is not None and interleave != file_interleave:
            raise InputError(
                f"{path}: interleave {interleave!r} was requested but the header {header} says "
                f"{file_interleave!r}; fix the header or drop the argument"
            )
        if shape is not None and tuple(shape) != layout:
            raise InputError(
                f"{path}: shape {tuple(shape)} (bands, lines, samples) was requested but the header "
                f"{header} says {layout}"
            )
        interleave, shape = file_interleave, layout
        np_dtype = _header_dtype(fields, header, dtype)
        offset = _int_field(fields, "header offset", header, default=0)
        if fields.get("band names"):
            names = tuple(n.strip() for n in fields["band names"].split(","))
        if fields.get("data ignore value"):
            try:
                nodata = float(fields["data ignore value"])
            except ValueError:
                raise InputError(f"{header}: 'data ignore value' {fields['data ignore value']!r} is not a number") from None
    else:
        if interleave is None or shape is None:
            raise InputError(
                f"{path}: no ENVI header ({' or '.join(h.name for h in header_candidates(path))}) found, "
                "so the layout is needed: pass interleave ('bsq', 'bil' or 'bip') and "
                "shape (bands, lines, samples)"
            )
        shape = tuple(int(n) for n in shape)
        np_dtype, offset = np.dtype(dtype), 0
    data = _map(path, np_dtype, offset, interleave, shape, mmap)
    if header is None:
        warnings.warn(
            f"{path}: ENVI file has no header, so the raster has no georeferencing (crs=None, "
            "identity transform)", NoGeoreferenceWarning, stacklevel=2,
        )
        grid = Grid(shape[1], shape[2])
    else:
        grid = _header_grid(fields, shape[1], shape[2], header)
    if names is not None and len(names) != shape[0]:
        raise InputError(f"{header}: lists {len(names)} band names for {shape[0]} bands")
    return EnviRaster(data, grid, nodata, path, names)


def _map(path: Path, dtype: np.dtype, offset: int, interleave: str, shape: tuple, mmap: bool) -> np.ndarray:
    """Memory-map the pixels after an exact size check, return them as (band, y, x)."""
    bands, lines, samples = shape
    expected = offset + bands * lines * samples * dtype.itemsize
    actual = path.stat().st_size
    if actual != expected:
        raise InputError(
            f"{path}: has {actual} bytes, expected {expected} "
            f"({bands} bands x {lines} lines x {samples} samples x {dtype.itemsize} B + {offset} B offset); "
            "the file is truncated or the layout/dtype is wrong"
        )
    sizes = {"b": bands, "y": lines, "x": samples}
    file_shape = tuple(sizes[a] for a in _FILE_AXES[interleave])
    mm = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=file_shape)
    view = mm.transpose(_TO_BYX[interleave])
    if mmap:
        return view
    data = np.ascontiguousarray(view, dtype=dtype.newbyteorder("="))
    del mm, view  # release the mapping (and the file handle) now
    return data


def _format_map_info(grid: Grid) -> str:
    """ENVI map info for a north-up grid; UTM/WGS84 is written in ENVI's named form."""
    t = grid.transform
    if t.b != 0 or t.d != 0 or t.e >= 0:
        raise ValueError(f"ENVI map info needs a north-up grid, got transform {tuple(t)[:6]}")
    core = f"1, 1, {t.c!r}, {t.f!r}, {t.a!r}, {-t.e!r}"
    epsg = grid.crs.to_epsg() if grid.crs is not None else None
    if epsg and (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760):
        hemisphere = "North" if epsg < 32700 else "South"
        return f"{{UTM, {core}, {epsg % 100}, {hemisphere}, WGS-84, units=Meters}}"
    name = "Arbitrary"
    if grid.crs is not None:  # the WKT's own name, e.g. "AGD66 / AMG zone 55"; the WKT follows anyway
        found = re.match(r'\s*\w+\[\s*"([^"]*)"', grid.crs.to_wkt())
        name = re.sub(r"[,{}]", " ", found.group(1)) if found else "Unknown"
    return f"{{{name}, {core}, units=Meters}}"


def write_envi(
    path: str | os.PathLike,
    array: np.ndarray,
    *,
    interleave: str,
    header: bool = True,
    grid: Grid | None = None,
    band_names: tuple[str, ...] | list[str] | None = None,
    dtype: str = "<i2",
) -> Path:
    """Write a (band, y, x) array as an ENVI raw binary (int16 little-endian by default),
    atomically, plus a ``file.hdr`` header unless ``header=False``.

    The header carries map info and the WKT ``coordinate system string`` when ``grid`` has a
    transform or CRS. Values that do not fit ``dtype`` raise ValueError (no silent wrapping).
    """
    path = Path(path)
    interleave = _check_interleave(interleave, f"{path}: argument")
    data = np.asarray(array)
    data = data[None] if data.ndim == 2 else data
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a (band, y, x) array, got shape {data.shape}")
    out_dtype = np.dtype(dtype)
    if out_dtype.kind in "iu" and data.size:
        info = np.iinfo(out_dtype)
        if data.min() < info.min or data.max() > info.max:
            raise ValueError(f"{path}: values {data.min()}..{data.max()} do not fit {out_dtype}")
    if grid is not None and (grid.height, grid.width) != data.shape[1:]:
        raise ValueError(f"{path}: array shape {data.shape[1:]} does not match grid {grid.height}x{grid.width}")
    file_order = np.argsort(_TO_BYX[interleave])  # inverse of the read transpose
    raw = np.ascontiguousarray(data.transpose(file_order), dtype=out_dtype)
    text = _header_text(data.shape, interleave, out_dtype, grid, band_names) if header else None
    with atomic_path(path) as tmp:
        raw.tofile(tmp)
    if text is not None:
        write_text(header_candidates(path)[0], text)
    return path


def _is_big_endian(dtype: np.dtype) -> bool:
    return dtype.byteorder == ">" or (dtype.byteorder == "=" and sys.byteorder == "big")


def _header_text(shape, interleave, dtype: np.dtype, grid: Grid | None, band_names) -> str:
    code = _DTYPE_CODES[dtype.kind + str(dtype.itemsize)]
    lines = [
        "ENVI", "description = {written by stfusion}", f"samples = {shape[2]}", f"lines = {shape[1]}",
        f"bands = {shape[0]}", "header offset = 0", "file type = ENVI Standard", f"data type = {code}",
        f"interleave = {interleave}", f"byte order = {1 if _is_big_endian(dtype) else 0}",
    ]
    if grid is not None and (grid.crs is not None or grid.transform != Affine.identity()):
        lines.append(f"map info = {_format_map_info(grid)}")
        if grid.crs is not None:
            lines.append(f"coordinate system string = {{{grid.crs.to_wkt()}}}")
    if band_names is not None:
        if len(band_names) != shape[0]:
            raise ValueError(f"{len(band_names)} band names for {shape[0]} bands")
        lines.append("band names = {" + ", ".join(band_names) + "}")
    return "\n".join(lines) + "\n"
