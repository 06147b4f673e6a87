"""Your own site: a folder of dated fine and coarse rasters, described by the ``site.yaml`` beside them.

:func:`ingest_site` turns such a folder into the study's raw layout (a manifest and int16 GeoTIFFs
on the fine grid), so that preprocess and every later stage treat it like CIA or LGC. Coarse files
may come at their native resolution, CRS and grid: they are warped onto the fine grid here. The
user's folder is only read. The format of site.yaml is documented in docs/sites.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import Resampling, reproject, transform_bounds
from rasterio.warp import transform as warp_transform
from tqdm.auto import tqdm

from stfusion.data.formats import WindowedRaster, read_raster
from stfusion.data.manifest import QA_CLEAR, QA_CLOUD, Manifest, describe_file
from stfusion.data.raster import Grid, Raster, write_geotiff
from stfusion.data.real import check_band_order
from stfusion.errors import ConfigError, InputError, require
from stfusion.io import atomic_dir
from stfusion.units import REFLECTANCE_SCALE, to_stored

SITE_FILE = "site.yaml"
RESAMPLING = ("nearest", "bilinear", "cubic", "average")
RATIO_TOLERANCE = 0.01
"""How far (as a share) the coarse over fine pixel size may be from an integer and still count as one."""
BAND_MARGIN = 0.1
"""A coarse band is taken for the wrong one only when another correlates better by this much (visible bands
correlate closely with each other, and a site may have few coarse pixels)."""
FIGURE_BANDS = ("blue", "green", "red", "nir")
_DATE = re.compile(r"\{date:([^{}]+)\}")


@dataclass(frozen=True)
class SensorFiles:
    """One sensor's files in a site folder and how to read them."""

    sensor: str
    files: str  # a path pattern relative to the folder, with one {date:FORMAT} (strftime codes)
    band_indices: tuple[int, ...] | None  # 1-based bands of each file, in the order of the site's bands
    nodata: float | None  # None: the file's own nodata value
    scale: float | None  # reflectance = stored * scale + offset; None: 1e-4 for integers, 1 for floats
    offset: float

    def dates(self, folder: Path, what: str) -> dict[str, Path]:
        """ISO date -> file of every file that matches the pattern; a date that does not parse is an error."""
        return match_dates(folder, self.files, what=what)


@dataclass(frozen=True)
class Site:
    """A parsed site.yaml: the sensors, the bands and how coarse files reach the fine grid."""

    folder: Path
    bands: tuple[str, ...]
    fine: SensorFiles
    coarse: SensorFiles
    mask: str | None  # pattern of the fine image's cloud/QA mask per date
    clear: tuple[int, ...]  # mask values that mean clear
    resampling: str
    ratio: int | None  # None: derived from the pixel sizes
    check_bands: bool

    @property
    def path(self) -> Path:
        return self.folder / SITE_FILE


def load_site(folder: str | os.PathLike) -> Site:
    """Read and check ``folder``/site.yaml; errors name the file and the key."""
    folder = Path(folder)
    path = folder / SITE_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: site description not found; a site folder holds a {SITE_FILE} (docs/sites.md)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    need = _needs(path)
    need(isinstance(raw, dict), "", "a mapping with fine, coarse and bands", raw)
    unknown = sorted(set(raw) - {"bands", "fine", "coarse", "mask", "resampling", "ratio", "check_bands"})
    need(not unknown, unknown[0] if unknown else "", "bands, fine, coarse, mask, resampling, ratio or check_bands", None)
    bands = raw.get("bands")
    need(isinstance(bands, list) and bands and all(isinstance(b, str) for b in bands) and len(set(bands)) == len(bands),
         "bands", "a list of distinct band names, e.g. [blue, green, red, nir]", bands)
    missing = [b for b in FIGURE_BANDS if b not in bands]
    need(not missing, "bands", f"names that include {list(FIGURE_BANDS)} (the figures' composites and NDVI use them)",
         bands)
    mask = raw.get("mask")
    need(mask is None or (isinstance(mask, dict) and isinstance(mask.get("files"), str)), "mask",
         "null or {files: PATTERN, clear: [values]}", mask)
    clear = (mask or {}).get("clear", [0])
    need(isinstance(clear, list) and clear and all(isinstance(v, int) for v in clear), "mask.clear",
         "a list of the integer mask values that mean clear", clear)
    if mask:
        _check_pattern(mask["files"], need, "mask.files")
    resampling = raw.get("resampling", "nearest")
    need(resampling in RESAMPLING, "resampling", f"one of {list(RESAMPLING)}", resampling)
    ratio = raw.get("ratio")
    need(ratio is None or (isinstance(ratio, int) and not isinstance(ratio, bool) and ratio >= 2), "ratio",
         "null (derived from the pixel sizes) or an integer >= 2", ratio)
    check_bands = raw.get("check_bands", True)
    need(isinstance(check_bands, bool), "check_bands", "true or false", check_bands)
    return Site(folder, tuple(bands), _sensor(raw, "fine", len(bands), need), _sensor(raw, "coarse", len(bands), need),
                mask["files"] if mask else None, tuple(clear), resampling, ratio, check_bands)


def _needs(path: Path):
    """:func:`~stfusion.errors.require` for the keys of ``path`` (a site.yaml): errors name the file, then the key."""
    return lambda condition, key, expected, value: require(condition, f"{path}: {key}" if key else str(path),
                                                           expected, value)


def _sensor(raw: dict, role: str, n_bands: int, need) -> SensorFiles:
    spec = raw.get(role)
    need(isinstance(spec, dict), role, "a mapping {sensor, files, ...}", spec)
    unknown = sorted(set(spec) - {"sensor", "files", "bands", "nodata", "scale", "offset"})
    need(not unknown, f"{role}.{unknown[0] if unknown else ''}", "sensor, files, bands, nodata, scale or offset", None)
    need(isinstance(spec.get("sensor", role), str), f"{role}.sensor", "a sensor name", spec.get("sensor"))
    need(isinstance(spec.get("files"), str), f"{role}.files", "a path pattern such as 'fine/S2_{date:%Y%m%d}.tif'",
         spec.get("files"))
    _check_pattern(spec["files"], need, f"{role}.files")
    indices = spec.get("bands")
    need(indices is None or (isinstance(indices, list) and len(indices) == n_bands
                             and all(isinstance(i, int) and not isinstance(i, bool) and i >= 1 for i in indices)),
         f"{role}.bands", f"null (bands 1..{n_bands}) or {n_bands} band numbers (1-based), one per site band", indices)
    numbers = {k: spec.get(k) for k in ("nodata", "scale", "offset")}
    for key, value in numbers.items():
        need(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)),
             f"{role}.{key}", "null or a number", value)
    need(numbers["scale"] is None or numbers["scale"] > 0, f"{role}.scale", "a positive number", numbers["scale"])
    return SensorFiles(spec.get("sensor", role), spec["files"], tuple(indices) if indices else None,
                       numbers["nodata"], numbers["scale"], float(numbers["offset"] or 0.0))


def _check_pattern(pattern: str, need, key: str) -> None:
    need(len(_DATE.findall(pattern)) == 1 and not Path(pattern).is_absolute() and ".." not in Path(pattern).parts,
         key, "a path inside the site folder with exactly one {date:FORMAT}, e.g. 'coarse/MOD09GA.A{date:%Y%j}.tif'",
         pattern)


def match_dates(folder: Path, pattern: str, *, what: str) -> dict[str, Path]:
    """ISO date -> path of each file under ``folder`` that ``pattern`` matches; errors name the file."""
    (fmt,) = _DATE.findall(pattern)
    head, tail = _DATE.split(pattern)[0], _DATE.split(pattern)[-1]
    regex = re.compile(re.escape(head) + f"(?P<date>{_format_regex(fmt)})" + re.escape(tail))
    found: dict[str, Path] = {}
    for path in sorted(folder.glob(_DATE.sub("*", pattern))):
        rel = path.relative_to(folder).as_posix()
        match = regex.fullmatch(rel)
        if match is None or not path.is_file():
            continue
        try:
            date = dt.datetime.strptime(match["date"], fmt).date().isoformat()
        except ValueError:
            raise InputError(f"{path}: the date {match['date']!r} in its name does not parse as {fmt} "
                             f"({what} in {folder / SITE_FILE})") from None
        if date in found:
            raise InputError(f"{path}: date {date} also given by {found[date]} ({what})")
        found[date] = path
    return found


_CODES = {"Y": r"\d{4}", "y": r"\d{2}", "m": r"\d{1,2}", "d": r"\d{1,2}", "j": r"\d{1,3}", "H": r"\d{1,2}",
          "M": r"\d{1,2}", "S": r"\d{1,2}", "b": "[A-Za-z]{3}", "B": "[A-Za-z]+", "%": "%"}


def _format_regex(fmt: str) -> str:
    """A regex for what strftime ``fmt`` can produce, so that e.g. a mask file beside an image is not taken for it."""
    parts = re.split(r"(%.)", fmt)
    return "".join(_CODES.get(p[1], "[^/]+?") if p.startswith("%") and len(p) == 2 else re.escape(p) for p in parts)


def site_dates(site: Site) -> tuple[list[str], dict[str, Path], dict[str, Path], dict[str, Path]]:
    """The dates with both a fine and a coarse file, and every fine, coarse and mask file by date."""
    fine = site.fine.dates(site.folder, "fine.files")
    coarse = site.coarse.dates(site.folder, "coarse.files")
    masks = match_dates(site.folder, site.mask, what="mask.files") if site.mask else {}
    if not fine:
        raise InputError(f"{site.path}: no file matches fine.files {site.fine.files!r}")
    if not coarse:
        raise InputError(f"{site.path}: no file matches coarse.files {site.coarse.files!r}")
    paired = sorted(set(fine) & set(coarse))
    if len(paired) < 4:
        raise InputError(f"{site.path}: only {len(paired)} dates have both a fine and a coarse file "
                         f"({paired}); the study needs at least 4 (training, validation and test dates)")
    return paired, fine, coarse, masks


def _reflectance(raster: Raster, sensor: SensorFiles, n_bands: int, what: str) -> np.ndarray:
    """float32 (band, y, x) reflectance of the site's bands, NaN where invalid (nodata, non-finite, outside (0, 1])."""
    count = raster.data.shape[0]
    if sensor.band_indices is None and count != n_bands:
        raise InputError(f"{raster.path}: has {count} bands, the site has {n_bands}; list the band numbers of "
                         f"the site's bands under {what}.bands in {SITE_FILE}")
    indices = sensor.band_indices or tuple(range(1, count + 1))
    if max(indices) > count:
        raise InputError(f"{raster.path}: has {count} bands, {what}.bands asks for band {max(indices)}")
    data = raster.data[[i - 1 for i in indices]]
    nodata = sensor.nodata if sensor.nodata is not None else raster.nodata
    scale = sensor.scale if sensor.scale is not None else (
        1.0 / REFLECTANCE_SCALE if np.issubdtype(data.dtype, np.integer) else 1.0)
    invalid = ~np.isfinite(data) if np.issubdtype(data.dtype, np.floating) else np.zeros(data.shape, bool)
    if nodata is not None and not np.isnan(nodata):
        invalid |= data == nodata
    refl = data.astype(np.float32) * np.float32(scale) + np.float32(sensor.offset)
    invalid |= (refl <= 0) | (refl > 1)
    refl[invalid] = np.nan
    return refl


def _grid_bounds(grid: Grid) -> tuple[float, float, float, float]:
    t = grid.transform
    xs, ys = (t.c, t.c + t.a * grid.width), (t.f, t.f + t.e * grid.height)
    return min(xs), min(ys), max(xs), max(ys)


def _check_overlap(fine: Raster, coarse: Raster) -> None:
    """The coarse raster covers part of the fine image's extent (compared in the coarse CRS)."""
    left, bottom, right, top = transform_bounds(fine.grid.crs, coarse.grid.crs, *_grid_bounds(fine.grid))
    c_left, c_bottom, c_right, c_top = _grid_bounds(coarse.grid)
    if min(right, c_right) <= max(left, c_left) or min(top, c_top) <= max(bottom, c_bottom):
        raise InputError(f"{coarse.path}: does not overlap the fine image {fine.path}: its bounds "
                         f"{tuple(round(v) for v in (c_left, c_bottom, c_right, c_top))} and the fine image's "
                         f"{tuple(round(v) for v in (left, bottom, right, top))} (in {coarse.grid.crs}) are apart")


def coarse_ratio(site: Site, fine: Raster | WindowedRaster, coarse: Raster | WindowedRaster) -> int:
    """site.yaml's ``ratio``, or the coarse over fine pixel size when it is an integer (within 1 %)."""
    if site.ratio is not None:
        return site.ratio
    if fine.grid.crs is None or coarse.grid.crs is None or fine.grid.mismatch(coarse.grid) is None:
        raise InputError(f"{coarse.path}: the coarse pixel size cannot be read (the file is on the fine grid or "
                         f"has no CRS); set ratio: in {site.path} to the coarse over fine pixel size")
    size = _pixel_size(coarse.grid, fine.grid.crs)
    fine_size = (abs(fine.grid.transform.a) + abs(fine.grid.transform.e)) / 2
    ratio = size / fine_size
    if round(ratio) < 2 or abs(ratio - round(ratio)) > RATIO_TOLERANCE * round(ratio):
        raise InputError(f"{coarse.path}: its pixel ({size:.1f} in the fine CRS's units) is {ratio:.2f} fine pixels of "
                         f"{fine_size:.1f}, not an integer ratio; set ratio: in {site.path} to the coarse pixel size "
                         "in fine pixels the methods should use (e.g. 15 for MODIS 463 m over Landsat 30 m)")
    return int(round(ratio))


def _pixel_size(grid: Grid, crs) -> float:
    """Mean side of ``grid``'s central pixel measured in ``crs`` (edge vectors, so a rotation does not inflate it)."""
    t, row, col = grid.transform, grid.height // 2, grid.width // 2
    corners = [t * (col, row), t * (col + 1, row), t * (col, row + 1)]
    xs, ys = warp_transform(grid.crs, crs, [c[0] for c in corners], [c[1] for c in corners])
    return (math.hypot(xs[1] - xs[0], ys[1] - ys[0]) + math.hypot(xs[2] - xs[0], ys[2] - ys[0])) / 2


def _aligned_offset(fine: Grid, coarse: Grid, ratio: int) -> list[int] | None:
    """(y, x) fine pixels from the fine grid's origin to the first coarse pixel edge, when the coarse grid
    is the fine grid coarsened by ``ratio`` in the same CRS (else None: unknown)."""
    f, c = fine.transform, coarse.transform
    if fine.crs != coarse.crs or not math.isclose(c.a, f.a * ratio) or not math.isclose(c.e, f.e * ratio):
        return None
    shift = ((c.f - f.f) / f.e, (c.c - f.c) / f.a)
    if any(abs(v - round(v)) > 1e-6 for v in shift):
        return None
    return [int(round(v)) % ratio for v in shift]


def _on_fine_grid(refl: np.ndarray, coarse: Raster, fine: Grid, resampling: str) -> np.ndarray:
    """The coarse reflectance warped onto the fine grid (NaN outside the coarse extent)."""
    if coarse.grid.mismatch(fine) is None:
        return refl
    _require_crs(coarse, fine)
    out = np.full((refl.shape[0], fine.height, fine.width), np.nan, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        reproject(refl, out, src_transform=coarse.grid.transform, src_crs=coarse.grid.crs, src_nodata=np.nan,
                  dst_transform=fine.transform, dst_crs=fine.crs, dst_nodata=np.nan,
                  resampling=Resampling[resampling])
    return out


def _require_crs(coarse: Raster | WindowedRaster, fine: Grid) -> None:
    if coarse.grid.crs is None or fine.crs is None:
        raise InputError(f"{coarse.path}: has no CRS and is not on the fine grid ({coarse.grid.mismatch(fine)}); "
                         "georeferenced coarse files, or files already on the fine grid, are expected")


def _covering(coarse: Grid, box: Grid, margin: int = 3) -> tuple[slice, slice] | None:
    """The rows and columns of ``coarse`` under the fine ``box``, with ``margin`` pixels more for the
    resampling kernels (cubic reads 2 on each side); None where they do not meet."""
    left, bottom, right, top = transform_bounds(box.crs, coarse.crs, *_grid_bounds(box), densify_pts=21)
    inverse = ~coarse.transform
    cols, rows = zip(*(inverse * corner for corner in ((left, bottom), (left, top), (right, bottom), (right, top))))
    r0, r1 = max(0, math.floor(min(rows)) - margin), min(coarse.height, math.ceil(max(rows)) + margin)
    c0, c1 = max(0, math.floor(min(cols)) - margin), min(coarse.width, math.ceil(max(cols)) + margin)
    return (slice(r0, r1), slice(c0, c1)) if r0 < r1 and c0 < c1 else None


def _stored(refl: np.ndarray) -> np.ndarray:
    """int16 stored reflectance, 0 (invalid) where ``refl`` is NaN."""
    return np.where(np.isnan(refl), 0, to_stored(np.nan_to_num(refl, nan=0.0))).astype(np.int16)


def fine_reflectance(site: Site, path: Path, grid: Grid, mask: Path | None = None) -> np.ndarray:
    """float32 (band, y, x) reflectance of a fine file, NaN where invalid or (with ``mask``) not clear."""
    fine = read_raster(path)
    grid.require_same(fine.grid, what=f"{fine.path} (fine)")
    refl = _reflectance(fine, site.fine, len(site.bands), "fine")
    if mask is not None:
        refl[:, _qa(mask, site, grid) != QA_CLEAR] = np.nan
    return refl


def coarse_reflectance(site: Site, coarse: Path | Raster, grid: Grid) -> np.ndarray:
    """float32 (band, y, x) reflectance of a coarse file (or its raster) warped onto the fine ``grid``, NaN where
    invalid."""
    coarse = coarse if isinstance(coarse, Raster) else read_raster(coarse)
    return _on_fine_grid(_reflectance(coarse, site.coarse, len(site.bands), "coarse"), coarse, grid, site.resampling)


def fine_box(site: Site, fine: WindowedRaster, rows: slice, cols: slice,
             mask: WindowedRaster | None = None) -> np.ndarray:
    """:func:`fine_reflectance` of the box ``rows`` x ``cols`` of an opened fine file (and its mask), whose
    grids the caller has checked: memory holds the box, not the scene."""
    refl = _reflectance(fine.raster(rows, cols), site.fine, len(site.bands), "fine")
    if mask is not None:
        refl[:, ~_clear(site, mask.read(rows, cols)[0])] = np.nan
    return refl


def coarse_box(site: Site, coarse: WindowedRaster, fine: Grid, rows: slice, cols: slice) -> np.ndarray:
    """:func:`coarse_reflectance` of the box ``rows`` x ``cols`` of the fine grid: only the coarse pixels under
    the box (and a margin for the resampling) are read and warped."""
    if coarse.grid.mismatch(fine) is None:
        return _reflectance(coarse.raster(rows, cols), site.coarse, len(site.bands), "coarse")
    _require_crs(coarse, fine)
    box = Grid(rows.stop - rows.start, cols.stop - cols.start,
               fine.transform * fine.transform.translation(cols.start, rows.start), fine.crs)
    under = _covering(coarse.grid, box)
    if under is None:
        return np.full((len(site.bands), box.height, box.width), np.nan, np.float32)
    part = coarse.raster(*under)
    return _on_fine_grid(_reflectance(part, site.coarse, len(site.bands), "coarse"), part, box, site.resampling)


def _qa(path: Path, site: Site, grid: Grid) -> np.ndarray:
    mask = read_raster(path)
    grid.require_same(mask.grid, what=f"{mask.path} (mask)")
    return np.where(_clear(site, mask.data[0]), QA_CLEAR, QA_CLOUD).astype(np.uint8)


def _clear(site: Site, values: np.ndarray) -> np.ndarray:
    """Where a mask band's ``values`` are among the site's ``mask.clear`` values."""
    return np.isin(values, site.clear)


def ingest_site(name: str, site_folder: str | os.PathLike, out_folder: str | os.PathLike, *,
                progress: bool = True) -> Manifest:
    """Read, check and align a site folder into ``out_folder`` (manifest + int16 GeoTIFFs on the fine grid).

    Everything is checked before ``out_folder`` changes; a failure leaves it as it was.
    """
    site = load_site(site_folder)
    dates, fine_files, coarse_files, masks = site_dates(site)
    first = read_raster(fine_files[dates[0]])
    grid, n_bands, ratio, meta = first.grid, len(site.bands), None, _meta(site, dates, fine_files, coarse_files)
    with atomic_dir(out_folder) as tmp:
        entries, files = [], {}
        for date in tqdm(dates, desc=f"site {name}", disable=not progress):
            fine = read_raster(fine_files[date])
            grid.require_same(fine.grid, what=f"{fine.path} (fine, {date}; the fine grid is {first.path}'s)")
            coarse = read_raster(coarse_files[date])
            if coarse.grid.crs is not None and grid.crs is not None:
                _check_overlap(fine, coarse)
            if ratio is None:
                ratio = coarse_ratio(site, fine, coarse)
                meta["ratio_source"] = "site.yaml" if site.ratio else "pixel sizes"
                if (offset := _aligned_offset(grid, coarse.grid, ratio)) is not None:
                    meta["config"] = {"grid_offset": offset}
            images = {"fine": _stored(_reflectance(fine, site.fine, n_bands, "fine")),
                      "coarse": _stored(coarse_reflectance(site, coarse, grid))}
            meta["coarse_cover"][date] = round(float((images["coarse"] > 0).any(axis=0).mean()), 4)
            if date in masks:
                images["fine_qa"] = _qa(masks[date], site, grid)
            if site.check_bands:
                clear = images["fine_qa"] == QA_CLEAR if "fine_qa" in images else True
                check_band_order(np.where(clear, images["fine"], 0), images["coarse"], ratio, margin=BAND_MARGIN,
                                 what=f"{fine.path} and {coarse.path}")
            entry = {"date": date}
            for role, data in images.items():
                entry[role] = f"{role}/{date}.tif"
                write_geotiff(tmp / entry[role], data, grid, nodata=None if role == "fine_qa" else 0,
                              band_names=None if role == "fine_qa" else site.bands)
            files.update({entry[r]: describe_file(tmp, entry[r], "gtiff") for r in entry if r != "date"})
            entries.append(entry)
        Manifest(name, "site", entries, files, tmp, ratio=ratio, reflectance_scale=REFLECTANCE_SCALE,
                 bands=list(site.bands), meta=meta).save()
    return Manifest.load(out_folder)


def site_fingerprint(folder: str | os.PathLike) -> str:
    """SHA-256 of site.yaml and of the name, size and modification time of every file under the folder:
    it changes when the user changes the site (the study then reads it again)."""
    folder = Path(folder)
    digest = hashlib.sha256((folder / SITE_FILE).read_bytes())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def stale_site(site_folder: str | os.PathLike, raw_folder: str | os.PathLike) -> bool:
    """Whether the site's files changed since the download stage read them into ``raw_folder``."""
    manifest = Path(raw_folder) / "manifest.json"
    if not manifest.is_file():
        return False  # never read: the download stage will run anyway
    recorded = json.loads(manifest.read_text()).get("meta", {}).get("fingerprint")
    return recorded != site_fingerprint(site_folder)


def _meta(site: Site, dates: list[str], fine: dict[str, Path], coarse: dict[str, Path]) -> dict[str, Any]:
    return {
        "fingerprint": site_fingerprint(site.folder),
        "site_folder": str(site.folder.resolve()), "fine_sensor": site.fine.sensor, "coarse_sensor": site.coarse.sensor,
        "resampling": site.resampling, "coarse_cover": {},
        "originals": {d: {"fine": str(fine[d].relative_to(site.folder)), "coarse": str(coarse[d].relative_to(site.folder))}
                      for d in dates},
        "coarse_only_dates": sorted(set(coarse) - set(fine)), "fine_only_dates": sorted(set(fine) - set(coarse)),
    }
