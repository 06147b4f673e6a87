"""A worked example of a user's site: a Sentinel-2-like 10 m series with a Sentinel-3-like 300 m series.

The scene is the synthetic CIA-like generator's, written the way the two products come: the fine files as
Sentinel-2 L2A (uint16, reflectance = value x 1e-4 - 0.1, nodata 0, six bands of which the site uses four,
a scene-classification mask per date) in UTM zone 55S, the coarse files as Sentinel-3 OLCI reflectance
(float32, NaN nodata, day-of-year in the name) at its native ~300 m in geographic coordinates (EPSG:4326),
covering more than the fine tile. One date has a coarse file only: a target for ``stfusion fuse``.
docs/sites.md walks through it; the tests run the study on it.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import yaml
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import Resampling, calculate_default_transform, reproject

from stfusion.data.coarse_pixel import block_mean
from stfusion.data.manifest import QA_CLEAR, QA_CLOUD, QA_SHADOW, Manifest
from stfusion.data.raster import Grid, read_geotiff, write_geotiff
from stfusion.data.synthetic import generate_dataset
from stfusion.errors import InputError
from stfusion.io import atomic_dir
from stfusion.units import REFLECTANCE_SCALE

FINE_CRS, COARSE_CRS = CRS.from_epsg(32755), CRS.from_epsg(4326)
FINE_METRES, RATIO = 10.0, 30  # Sentinel-2's 10 m bands, Sentinel-3 OLCI's 300 m
ORIGIN = (405_000.0, 6_165_000.0)  # upper-left corner in UTM 55S (near Coleambally)
SCL = {QA_CLEAR: 4, QA_CLOUD: 9, QA_SHADOW: 3}  # Sentinel-2 scene classes: vegetation, cloud (high), shadow
SITE_YAML = {
    "bands": ["blue", "green", "red", "nir"],
    "fine": {"sensor": "Sentinel-2 MSI (L2A)", "files": "S2/S2_MSIL2A_{date:%Y%m%d}.tif", "bands": [1, 2, 3, 4],
             "nodata": 0, "scale": 1.0e-4, "offset": -0.1},
    "coarse": {"sensor": "Sentinel-3 OLCI", "files": "S3/S3_OL_2_{date:%Y%j}.tif"},
    "mask": {"files": "S2/S2_MSIL2A_{date:%Y%m%d}_SCL.tif", "clear": [4, 5, 6, 7]},
    "resampling": "bilinear",
}


def write_example_site(folder: str | os.PathLike, *, tiles: int = 8, n_dates: int = 8, seed: int = 1) -> Path:
    """Write the example site into the new folder ``folder``: ``tiles`` x ``tiles`` coarse pixels of fine data."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise InputError(f"{folder}: exists and is not empty; the example site is written into a new folder")
    margin = 1  # coarse pixels of scene around the fine tile, so the coarse files cover all of it
    side = (tiles + 2 * margin) * RATIO
    with tempfile.TemporaryDirectory() as scratch:
        scene = generate_dataset("cia-sim", Path(scratch) / "scene", {
            "height": side, "width": side, "ratio": RATIO, "n_dates": n_dates, "seed": seed, "preset": "realistic",
            "cloudy_dates": 0.3})
        with atomic_dir(folder) as tmp:
            for sub in ("S2", "S3"):
                (tmp / sub).mkdir()
            for i, date in enumerate(scene.date_list()):
                if i < n_dates - 1:  # the last date: a coarse file only
                    _write_fine(tmp, scene, date, margin * RATIO, tiles * RATIO)
                _write_coarse(tmp, scene, date)
            (tmp / "site.yaml").write_text(
                "# A worked example (stfusion example-site): see docs/sites.md\n" + yaml.safe_dump(SITE_YAML, sort_keys=False))
    return folder


def _write_fine(tmp: Path, scene: Manifest, date: str, start: int, size: int) -> None:
    cut = (slice(None), slice(start, start + size), slice(start, start + size))
    fine = read_geotiff(scene.file(date, "fine")).data[cut].astype(np.int32)
    l2a = np.where(fine > 0, np.clip(fine + 1000, 1, 65535), 0).astype(np.uint16)  # L2A's +1000 offset
    grid = Grid(size, size, Affine(FINE_METRES, 0, ORIGIN[0], 0, -FINE_METRES, ORIGIN[1]), FINE_CRS)
    name = f"S2/S2_MSIL2A_{date.replace('-', '')}"
    write_geotiff(tmp / f"{name}.tif", l2a, grid, nodata=0)
    qa = np.full((size, size), QA_CLEAR, np.uint8)
    if "fine_qa" in next(e for e in scene.dates if e["date"] == date):
        qa = read_geotiff(scene.file(date, "fine_qa")).data[0][cut[1:]]
    write_geotiff(tmp / f"{name}_SCL.tif", np.vectorize(SCL.get)(qa).astype(np.uint8), grid)


def _write_coarse(tmp: Path, scene: Manifest, date: str) -> None:
    """The synthetic coarse image averaged to 300 m pixels in UTM, then warped to ~300 m in EPSG:4326."""
    coarse = read_geotiff(scene.file(date, "coarse")).data[:4].astype(np.float64)
    valid = np.all(coarse > 0, axis=0)
    utm = (block_mean(coarse, RATIO, valid) / REFLECTANCE_SCALE).astype(np.float32)
    margin_origin = (ORIGIN[0] - RATIO * FINE_METRES, ORIGIN[1] + RATIO * FINE_METRES)
    src = Affine(RATIO * FINE_METRES, 0, margin_origin[0], 0, -RATIO * FINE_METRES, margin_origin[1])
    height, width = utm.shape[1:]
    latitude = -34.6
    resolution = (RATIO * FINE_METRES / (111_320 * math.cos(math.radians(latitude))), RATIO * FINE_METRES / 110_950)
    bounds = (src.c, src.f + src.e * height, src.c + src.a * width, src.f)
    transform, w, h = calculate_default_transform(FINE_CRS, COARSE_CRS, width, height, *bounds, resolution=resolution)
    out = np.full((4, h, w), np.nan, np.float32)
    reproject(utm, out, src_transform=src, src_crs=FINE_CRS, src_nodata=np.nan, dst_transform=transform,
              dst_crs=COARSE_CRS, dst_nodata=np.nan, resampling=Resampling.bilinear)
    day = f"{date[:4]}{np.datetime64(date).astype('datetime64[D]').item().timetuple().tm_yday:03d}"
    write_geotiff(tmp / f"S3/S3_OL_2_{day}.tif", out, Grid(h, w, transform, COARSE_CRS), nodata=float("nan"))
