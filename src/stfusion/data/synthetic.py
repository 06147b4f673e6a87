"""Synthetic stand-ins for the CIA and LGC benchmarks: fine and coarse image series with known truth.

Two templates mimic the two landscapes of Emelyanova et al. (2013):

- ``cia`` (dataset ``cia-sim``): small irrigated fields, 8-25 fine pixels (200-625 m) on a side, laid
  out as rows of random height cut into fields of random width, with 1-2 pixel roads, channels and
  banks between them. Crops are clustered by farm (about 1.5 km squares with a dominant crop), so the
  scene has variance at the coarse scale as well as within each coarse pixel. Crops: rice, maize,
  summer cereal, winter cereal, pasture and fallow, plus a few farm dams and a small town. Rice bays
  are ponded after sowing, so they go soil -> water -> canopy; that is management, not cover change.
- ``lgc`` (dataset ``lgc-sim``): larger fields (30-90 pixels), a meandering river, grassland and
  riparian woodland in irregular patches biased towards the river, and the December 2004 flood.

Both templates use the real acquisition calendars and a fixed pixel
size of 25 m; field sizes are physical and do not scale with the scene, while the river, the natural
vegetation patches and the flood do scale with it (they are fractions of the scene).

Reflectance model. Every pixel belongs to one *unit* (a field, a road, a natural patch, the river)
and is a linear mixture of three end-members::

    R = background * (1 - fv - fw) + vegetation * fv + water * fw,   times a static texture

``background`` is bare soil scaled by a per-unit brightness (or an urban spectrum), ``vegetation``
a per-class green-canopy spectrum, ``water`` a moderately turbid water spectrum. The vegetation
fraction ``fv`` follows a double-logistic season (green-up at ``sos``, senescence at ``eos``) per
cover class, shifted by a per-unit sowing offset (sd 7 days) and scaled by a per-unit vigour; a
static smooth texture perturbs ``fv`` by about 10% and the brightness by about 3%, so fields are
not flat, and a km-scale soil tone (+-10%) varies the background across the scene. Spectra (reflectance, blue..SWIR2) are textbook shapes: green canopy red 0.03-0.05, NIR
0.30-0.48, SWIR1 about 0.2, SWIR2 about 0.1; dry soil rising from 0.08 (blue) to 0.30 (SWIR1);
water NIR and SWIR 0.007-0.02.

Flood model (``lgc``). A flood score is the distance to the river plus smooth noise (lobes of a
few km); on a flood date the flooded area is the set of pixels whose score is below the quantile
that gives the stage's target fraction of the scene, kept only where connected to the river. The
stages follow the real event: rising on 2004-12-12 (10% of the scene), peak on 2004-12-28 (22%),
receding on 2005-01-13 (14%); on 2005-01-29 the peak extent is left as wet, dark soil with damaged
vegetation. Stages are nested because they threshold the same score. Flood water and wet soil are
cover classes, so they show in the change masks; phenology and harvest do not.

Coarse sensor model, the way MODIS relates to Landsat in the real files: band-wise gain and offset
(:data:`COARSE_GAIN`, :data:`COARSE_OFFSET`: plausible cross-sensor differences from spectral
response, atmospheric correction and view geometry, gain within 0.95-1.06 and offset within
+-0.01), optional misregistration (a sub-pixel shift in fine pixels, random direction per date),
a Gaussian point spread function (sigma in coarse pixels, default 0.5 = 10 fine pixels), block mean
over ``ratio`` x ``ratio`` fine pixels, optional Gaussian noise at coarse resolution, and finally
nearest-neighbour resampling back to the fine grid, which is how the CIA and LGC MODIS files come.

Band-pass differences (``bandpass``): the coarse sensor sees a second rendering of the date in which
the canopy and water end-members are scaled by ``1 + bandpass * BANDPASS_CANOPY`` and
``BANDPASS_WATER`` (soil and urban are the reference), so the cross-sensor difference follows land
cover and changes with the season.

Clouds (:mod:`stfusion.data.clouds`): on ``round(cloudy_dates * n_dates)`` dates drawn from the seed,
``cloud_cover`` of the fine image is cloud and the clouds cast shadows; ``qa/<date>.tif`` marks them
(0 clear, 1 cloud, 2 shadow) as a decoded Landsat QA band does. Coarse images stay clear.

Presets: ``preset: clean`` (the default here) is the idealised sensor and sky of the first study
versions; ``realistic`` (the study's default in params.yaml) takes every magnitude from the literature.

Grid: WGS 84 / UTM zone 55S (EPSG:32755), 25 m pixels, the scene centred on the site coordinates
(CIA 145.0675E 34.0034S -> about E 321500 N 6235800; LGC 149.2815E 29.0855S -> about E 722000
N 6780400), so any size stays in zone 55 near the real site.

Determinism: one ``seed`` drives everything; each purpose (scene, each date's coarse noise and
misregistration) gets its own generator from ``(seed, purpose code, calendar index)``, so a date
draws the same randomness whichever subset of dates is generated. Images are built one date at a
time in float32, so full-size scenes fit in a few hundred MB.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage

from stfusion import BANDS
from stfusion.data.clouds import add_clouds, cloud_field, shadow_offset, solar_angles
from stfusion.data.coarse_sensor import PSF_SHAPES, date_calibration, geolocation_shift, simulate_coarse
from stfusion.data.manifest import Manifest, describe_file
from stfusion.data.raster import Grid, write_geotiff
from stfusion.errors import ConfigError
from stfusion.io import atomic_dir
from stfusion.units import REFLECTANCE_SCALE, to_stored

# --------------------------------------------------------------------------------------------
# Cover classes and spectra

WATER, BARE, URBAN, RICE, MAIZE, SUMMER_CEREAL, WINTER_CEREAL, COTTON, GRASS, WOOD, WET_SOIL = range(11)
COVER_CLASSES: dict[int, str] = {
    WATER: "water", BARE: "bare soil", URBAN: "urban", RICE: "rice", MAIZE: "maize",
    SUMMER_CEREAL: "summer cereal", WINTER_CEREAL: "winter cereal", COTTON: "cotton",
    GRASS: "grassland", WOOD: "woodland", WET_SOIL: "wet soil",
}
"""Truth class ids written to ``truth/cover_<date>.tif`` (uint8)."""

# End-member spectra, reflectance in BANDS order (blue, green, red, nir, swir1, swir2).
SOIL = (0.08, 0.11, 0.15, 0.21, 0.30, 0.24)
URBAN_SPECTRUM = (0.10, 0.12, 0.14, 0.19, 0.23, 0.20)
WATER_SPECTRUM = (0.065, 0.06, 0.045, 0.02, 0.012, 0.007)
GREEN_VEG = (0.03, 0.07, 0.04, 0.42, 0.20, 0.09)
VEG_SPECTRA = {  # canopy spectra per class; classes not listed use GREEN_VEG (weeds, verges)
    RICE: (0.03, 0.075, 0.04, 0.40, 0.18, 0.08),
    MAIZE: (0.03, 0.07, 0.035, 0.46, 0.21, 0.09),
    SUMMER_CEREAL: (0.035, 0.07, 0.045, 0.40, 0.21, 0.10),
    WINTER_CEREAL: (0.035, 0.075, 0.045, 0.38, 0.22, 0.11),
    COTTON: (0.03, 0.065, 0.035, 0.48, 0.21, 0.09),
    GRASS: (0.04, 0.08, 0.05, 0.33, 0.25, 0.13),
    WOOD: (0.025, 0.05, 0.03, 0.30, 0.15, 0.07),
}

# Coarse-sensor (MODIS-like) band-wise gain and offset relative to the fine sensor, in reflectance.
COARSE_GAIN = (0.97, 1.03, 0.95, 1.06, 0.98, 1.02)
COARSE_OFFSET = (0.010, 0.006, 0.004, -0.008, 0.005, 0.002)

# Band-pass differences by end-member: the coarse band's reflectance over the fine band's, minus 1, per unit
# of ``bandpass``. Soil and urban are the reference (their difference is in COARSE_GAIN); the signs follow
# where the narrow MODIS bands sit inside the broad Landsat ones (docs/data.md).
BANDPASS_CANOPY = (-1.0, 1.0, 1.0, 0.5, 0.0, -0.5)
BANDPASS_WATER = (0.5, 0.5, 0.5, -1.0, 0.0, 0.0)

# --------------------------------------------------------------------------------------------
# Templates: calendars, sites, phenology

CIA_DATES = (
    "2001-10-08", "2001-10-17", "2001-11-02", "2001-11-09", "2001-11-25", "2001-12-04", "2002-01-05",
    "2002-01-12", "2002-02-13", "2002-02-22", "2002-03-10", "2002-03-17", "2002-04-02", "2002-04-11",
    "2002-04-18", "2002-04-27", "2002-05-04",
)
LGC_DATES = (
    "2004-04-16", "2004-05-02", "2004-07-05", "2004-08-06", "2004-08-22", "2004-10-25", "2004-11-26",
    "2004-12-12", "2004-12-28", "2005-01-13", "2005-01-29", "2005-02-14", "2005-03-02", "2005-04-03",
)
FLOOD_STAGES = {"2004-12-12": 0.10, "2004-12-28": 0.22, "2005-01-13": 0.14}
"""LGC flood dates and the flooded fraction of the scene aimed at on each (before the river-connectivity cut)."""
WET_AFTER_FLOOD = {"2005-01-29": "2004-12-28"}
"""Dates that show wet soil where the flood of another date was."""

PIXEL_SIZE = 25.0
CRS_EPSG = 32755

# Double-logistic phenology per class: (base, amplitude, sos, eos, green-up rate, senescence rate),
# times in days since the template's season start. Classes not listed keep a constant ``fv``.
_PHENOLOGY = {
    "cia": {  # season start 2001-10-01: summer crops peak Jan-Mar, winter cereal senesces in November
        RICE: (0.04, 0.85, 80, 185, 8, 9), MAIZE: (0.04, 0.85, 75, 170, 7, 8),
        SUMMER_CEREAL: (0.04, 0.75, 90, 175, 8, 8), WINTER_CEREAL: (0.08, 0.75, -60, 45, 10, 8),
        GRASS: (0.25, 0.35, -40, 75, 15, 15), WOOD: (0.45, 0.10, 60, 180, 20, 20),
    },
    "lgc": {  # season start 2004-04-01: wheat peaks Aug-Sep, cotton and sorghum peak Feb
        WINTER_CEREAL: (0.06, 0.80, 100, 205, 10, 9), COTTON: (0.04, 0.80, 265, 350, 10, 10),
        SUMMER_CEREAL: (0.04, 0.75, 280, 345, 8, 8), GRASS: (0.20, 0.25, 160, 240, 20, 20),
        WOOD: (0.45, 0.10, 180, 300, 20, 20),
    },
}
_CONSTANT_FV = {BARE: 0.04, URBAN: 0.05, WATER: 0.0}
RICE_PONDING = (0.7, 30, 160, 5, 8)  # water fraction of rice bays: (max, start, end, rates), CIA only


@dataclass(frozen=True)
class _Template:
    dates: tuple[str, ...]
    season_start: str
    centre: tuple[float, float]  # UTM 55S easting, northing of the site
    field_px: tuple[int, int]  # field side range in fine pixels
    crop_mix: dict[int, float]  # crop probabilities of fields
    site: str
    latitude: float  # degrees, for the sun's position (cloud shadows)


_TEMPLATES = {
    "cia": _Template(
        CIA_DATES, "2001-10-01", (321500.0, 6235800.0), (8, 25),
        {RICE: 0.25, MAIZE: 0.15, SUMMER_CEREAL: 0.12, WINTER_CEREAL: 0.15, GRASS: 0.10, BARE: 0.23},
        "Coleambally Irrigation Area, 145.0675E 34.0034S", -34.0034,
    ),
    "lgc": _Template(
        LGC_DATES, "2004-04-01", (722000.0, 6780400.0), (30, 90),
        {WINTER_CEREAL: 0.30, COTTON: 0.25, SUMMER_CEREAL: 0.15, BARE: 0.30},
        "Lower Gwydir Catchment, 149.2815E 29.0855S", -29.0855,
    ),
}

PRESETS: dict[str, dict] = {
    # The first study versions: cloud-free fine images, and every coarse imperfection off but the PSF.
    "clean": {"psf": "gaussian", "psf_sigma": 0.5, "grid_offset": [0, 0], "geolocation_m": 0.0,
              "misregistration": 0.0, "date_gain_sd": 0.0, "date_offset_sd": 0.0, "noise": 0.0,
              "cloudy_dates": 0.0, "cloud_cover": 0.0, "cloud_size_m": 500.0, "cloud_height_m": 1500.0,
              "bandpass": 0.0},
    # Real MODIS and Landsat magnitudes from the literature (docs/data.md gives each value's source).
    "realistic": {"psf": "scan", "psf_sigma": 0.5, "grid_offset": [7, 13], "geolocation_m": 50.0,
                  "misregistration": 0.0, "date_gain_sd": 0.03, "date_offset_sd": 0.003, "noise": 0.001,
                  "cloudy_dates": 0.5, "cloud_cover": 0.2, "cloud_size_m": 500.0, "cloud_height_m": 1500.0,
                  "bandpass": 0.04},
}
"""Sensor and sky settings by name; ``preset`` picks one, and keys given beside it override its values."""

SYNTHETIC_DEFAULTS: dict[str, dict] = {
    "cia-sim": {"template": "cia", "height": 320, "width": 280, "n_dates": 17, "ratio": 20, "seed": 2001,
                "preset": "clean", **PRESETS["clean"]},
    "lgc-sim": {"template": "lgc", "height": 400, "width": 360, "n_dates": 14, "ratio": 20, "seed": 2004,
                "preset": "clean", **PRESETS["clean"]},
}
"""Default generator configuration per synthetic dataset (the study's params.yaml picks ``realistic``)."""

# --------------------------------------------------------------------------------------------
# Configuration


def synthetic_config(dataset: str, overrides: dict | None = None) -> dict:
    """Defaults of ``dataset`` merged with ``overrides``, validated; errors name ``download.synthetic.<dataset>.<key>`` (its place in params.yaml)."""
    if dataset not in SYNTHETIC_DEFAULTS:
        raise ConfigError(f"download.synthetic.{dataset}: unknown synthetic dataset; known: {', '.join(SYNTHETIC_DEFAULTS)}")
    config = dict(SYNTHETIC_DEFAULTS[dataset])
    overrides = dict(overrides or {})
    preset = overrides.get("preset", config["preset"])
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ConfigError(f"download.synthetic.{dataset}.preset: {preset!r} is not one of {list(PRESETS)}")
    config.update(PRESETS[preset])
    for key, value in overrides.items():
        if key not in config:
            raise ConfigError(f"download.synthetic.{dataset}.{key}: unknown key; allowed: {', '.join(config)}")
        config[key] = value
    return _validated(dataset, config)


def _validated(dataset: str, config: dict) -> dict:
    def fail(key: str, why: str) -> None:
        raise ConfigError(f"download.synthetic.{dataset}.{key}: {config[key]!r} {why}")

    if not isinstance(config["template"], str) or config["template"] not in _TEMPLATES:
        fail("template", f"is not one of {sorted(_TEMPLATES)}")
    for key in ("height", "width", "n_dates", "ratio", "seed"):
        if isinstance(config[key], bool) or not isinstance(config[key], (int, np.integer)):
            fail(key, "is not an integer")
        config[key] = int(config[key])
    if config["psf"] not in PSF_SHAPES:
        fail("psf", f"is not one of {list(PSF_SHAPES)}")
    offset = config["grid_offset"]
    if (not isinstance(offset, (list, tuple)) or len(offset) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in offset)):
        fail("grid_offset", "is not two whole numbers of fine pixels [y, x]")
    config["grid_offset"] = [int(v) for v in offset]
    for key in ("psf_sigma", "geolocation_m", "misregistration", "date_gain_sd", "date_offset_sd", "noise",
                "cloudy_dates", "cloud_cover", "cloud_size_m", "cloud_height_m", "bandpass"):
        if isinstance(config[key], bool) or not isinstance(config[key], (int, float, np.number)):
            fail(key, "is not a number")
        config[key] = float(config[key])
        if not math.isfinite(config[key]) or config[key] < 0:
            fail(key, "must be a finite number >= 0")
    if config["cloudy_dates"] > 1:
        fail("cloudy_dates", "is a share of the dates: must be in [0, 1]")
    if config["cloud_cover"] > 0.9:
        fail("cloud_cover", "is a share of each cloudy date's pixels: must be in [0, 0.9]")
    if config["bandpass"] > 0.2:
        fail("bandpass", "is a relative band difference: must be in [0, 0.2]")
    if config["ratio"] < 2:
        fail("ratio", "must be at least 2")
    if any(not 0 <= v < config["ratio"] for v in config["grid_offset"]):
        fail("grid_offset", f"must lie in [0, ratio {config['ratio']}) fine pixels")
    if config["seed"] < 0:
        fail("seed", "must be >= 0")
    for key in ("height", "width"):
        if config[key] <= 0 or config[key] % config["ratio"]:
            fail(key, f"is not a positive multiple of ratio {config['ratio']}")
    n_real = len(_TEMPLATES[config["template"]].dates)
    if not 2 <= config["n_dates"] <= n_real:
        fail("n_dates", f"must be between 2 and the {n_real} real {config['template'].upper()} dates")
    return config


def _pick_dates(template: str, n_dates: int) -> list[str]:
    """``n_dates`` dates spread evenly over the real calendar, first and last kept; LGC keeps its flood."""
    calendar = _TEMPLATES[template].dates
    last = len(calendar) - 1
    picked = set(np.floor(np.linspace(0, last, n_dates) + 0.5).astype(int).tolist())
    if template == "lgc" and n_dates >= 6:
        flood = {calendar.index(date) for date in FLOOD_STAGES}
        for index in sorted(flood - picked):
            spare = sorted(picked - flood - {0, last}, key=lambda i: (abs(i - index), i))
            picked.remove(spare[0])
            picked.add(index)
    return [calendar[i] for i in sorted(picked)]


def _rng(seed: int, purpose: str, index: int = 0) -> np.random.Generator:
    """An independent generator per purpose and date, all from one seed."""
    return np.random.default_rng([seed, zlib.crc32(purpose.encode()), index])


# --------------------------------------------------------------------------------------------
# Scene


@dataclass
class _Scene:
    unit: np.ndarray  # (y, x) int32 unit id of every pixel
    cover: np.ndarray  # (y, x) uint8 static cover class
    cls: np.ndarray  # per unit: cover class
    shift: np.ndarray  # per unit: phenology shift in days
    vigour: np.ndarray  # per unit: amplitude scale
    background: np.ndarray  # (unit, band) soil or urban spectrum
    vegetation: np.ndarray  # (unit, band) canopy spectrum
    brightness: np.ndarray  # (y, x) float32 multiplicative texture
    soil_tone: np.ndarray  # (y, x) float32 km-scale multiplier of the background (soil colour varies)
    density: np.ndarray  # (y, x) float32 multiplicative texture of fv
    river: np.ndarray | None = None  # (y, x) bool, lgc only
    flood_score: np.ndarray | None = None  # (y, x) float32, lgc only


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Unit-variance Gaussian random field with correlation length ``sigma`` pixels (float32).

    Wide fields are made on a grid ``step`` times coarser and interpolated, which is much cheaper
    than a wide Gaussian filter at full size and looks the same.
    """
    step = max(1, int(sigma // 4))
    small = [-(-n // step) + 1 for n in shape]
    field = ndimage.gaussian_filter(rng.standard_normal(small, dtype=np.float32), sigma / step, mode="reflect")
    if step > 1:
        field = ndimage.zoom(field, step, order=1)[: shape[0], : shape[1]]
    field = field[: shape[0], : shape[1]]
    return (field - field.mean()) / field.std()


def _runs(rng: np.random.Generator, length: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut [0, length) into field runs of lo..hi px alternating with 1-2 px gaps, at a random phase."""
    n = length // lo + 2
    sizes = np.stack([rng.integers(lo, hi + 1, n), rng.integers(1, 3, n)], axis=1).ravel()
    edges = np.concatenate([[0], np.cumsum(sizes)]) - rng.integers(0, sizes[0])
    starts, stops = np.clip(edges[:-1], 0, length), np.clip(edges[1:], 0, length)
    keep = stops > starts
    return starts[keep], stops[keep], (np.arange(sizes.size) % 2 == 1)[keep]


def _mosaic(rng: np.random.Generator, height: int, width: int, tpl: _Template):
    """Rectangular fields in rows, separated by roads, channels and banks.

    Returns the unit raster and each unit's cover class.
    """
    unit = np.empty((height, width), np.int32)
    classes, cy, cx = [], [], []
    for y0, y1, gap in zip(*_runs(rng, height, *tpl.field_px)):
        if gap:  # a road or channel along the whole row
            unit[y0:y1] = len(classes)
            classes.append(WATER if rng.random() < 0.3 else URBAN)
            cy.append((y0 + y1) / 2)
            cx.append(width / 2)
            continue
        starts, stops, col_gap = _runs(rng, width, *tpl.field_px)
        unit[y0:y1] = len(classes) + np.repeat(np.arange(starts.size), stops - starts)[None]
        # gaps inside a row are banks (bare), channels or tracks; -1 marks a field awaiting its crop
        gap_cls = rng.choice([BARE, WATER, URBAN], size=starts.size, p=[0.6, 0.25, 0.15])
        classes.extend(np.where(col_gap, gap_cls, -1).tolist())
        cy.extend([(y0 + y1) / 2] * starts.size)
        cx.extend(((starts + stops) / 2).tolist())
    cls, centres = np.array(classes), np.stack([cy, cx], axis=1)
    cls[cls < 0] = _crops(rng, centres[cls < 0], tpl.crop_mix)
    _town_and_dams(rng, cls, centres, (height, width))
    return unit, cls


def _crops(rng: np.random.Generator, centres: np.ndarray, mix: dict[int, float], farm_px: int = 60) -> np.ndarray:
    """Crop per field; half of each farm's fields grow the farm's dominant crop, so crops cluster."""
    classes, probs = np.array(list(mix)), np.array(list(mix.values()))
    farm_yx = (centres // farm_px).astype(np.int64)
    farm = farm_yx[:, 0] * (farm_yx[:, 1].max() + 1) + farm_yx[:, 1]
    dominant = rng.choice(classes, size=farm.max() + 1, p=probs / probs.sum())
    own = rng.choice(classes, size=len(centres), p=probs / probs.sum())
    return np.where(rng.random(len(centres)) < 0.5, dominant[farm], own)


def _town_and_dams(rng: np.random.Generator, cls: np.ndarray, centres: np.ndarray, shape) -> None:
    """A small town (fields centred within 500 m of a random point) and a few farm dams, in place."""
    town = rng.uniform(0, 1, 2) * shape
    cls[np.hypot(*(centres - town).T) < 20] = URBAN
    cls[(rng.random(cls.size) < 0.015) & (cls != URBAN)] = WATER


def _river(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A meandering west-east river: its mask and every pixel's distance to it (pixels, float32)."""
    x = np.arange(width, dtype=np.float64)
    centre, amp1, amp2 = rng.uniform(0.35, 0.65) * height, 0.10 * height, 0.04 * height
    k1, k2 = 2 * np.pi / (width * rng.uniform(0.6, 1.0)), 2 * np.pi / (width * rng.uniform(0.2, 0.3))
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    y_river = centre + amp1 * np.sin(k1 * x + p1) + amp2 * np.sin(k2 * x + p2)
    slope = amp1 * k1 * np.cos(k1 * x + p1) + amp2 * k2 * np.cos(k2 * x + p2)
    # distance to the local tangent line: vertical offset times the cosine of the channel's angle
    cosine = (1.0 / np.sqrt(1.0 + slope**2)).astype(np.float32)
    distance = np.abs(np.arange(height, dtype=np.float32)[:, None] - y_river.astype(np.float32)) * cosine
    return distance <= 1.5, distance


def _lgc_layout(rng: np.random.Generator, height: int, width: int, tpl: _Template):
    """Large fields, natural grassland and riparian woodland patches, and a river; plus the flood score."""
    unit, cls = _mosaic(rng, height, width, tpl)
    river, distance = _river(rng, height, width)
    size = min(height, width)
    # natural vegetation: about 40% of the scene in blobs, more of it near the river
    natural_score = _smooth_noise(rng, (height, width), 0.06 * size) - distance / (0.25 * size)
    natural = natural_score > np.quantile(natural_score, 0.6)
    woodland = natural & ((distance < 8) | (_smooth_noise(rng, (height, width), 0.03 * size) > 1.0))
    extra = [cls]
    for mask, cover in ((natural & ~woodland, GRASS), (woodland, WOOD)):
        labels, n = ndimage.label(mask)  # each connected patch is a unit with its own phenology
        unit[mask] = labels[mask] - 1 + sum(len(c) for c in extra)
        extra.append(np.full(n, cover))
    unit[river] = sum(len(c) for c in extra)
    extra.append(np.array([WATER]))
    flood_score = distance + 0.08 * size * _smooth_noise(rng, (height, width), 0.05 * size)
    return unit, np.concatenate(extra), river, flood_score.astype(np.float32)


def _build_scene(tpl_name: str, height: int, width: int, seed: int) -> _Scene:
    rng = _rng(seed, "scene")
    tpl = _TEMPLATES[tpl_name]
    river = flood_score = None
    if tpl_name == "lgc":
        unit, cls, river, flood_score = _lgc_layout(rng, height, width, tpl)
    else:
        unit, cls = _mosaic(rng, height, width, tpl)
    n = cls.size
    bright = rng.uniform(0.8, 1.2, (n, 1)).astype(np.float32)
    background = np.where((cls == URBAN)[:, None], np.float32(URBAN_SPECTRUM), np.float32(SOIL) * bright)
    vegetation = np.array([VEG_SPECTRA.get(c, GREEN_VEG) for c in cls], np.float32)
    vegetation *= rng.uniform(0.95, 1.05, (n, 1)).astype(np.float32)
    return _Scene(
        unit=unit, cover=cls.astype(np.uint8)[unit], cls=cls,
        shift=np.clip(rng.normal(0.0, 7.0, n), -15, 15), vigour=rng.uniform(0.8, 1.05, n),
        background=background, vegetation=vegetation,
        brightness=1 + 0.03 * _smooth_noise(rng, (height, width), 1.5),
        soil_tone=1 + 0.10 * _smooth_noise(rng, (height, width), 50.0),
        density=1 + 0.10 * _smooth_noise(rng, (height, width), 2.0),
        river=river, flood_score=flood_score,
    )


# --------------------------------------------------------------------------------------------
# Rendering one date


def _double_logistic(t: np.ndarray, sos, eos, up, down) -> np.ndarray:
    return 1 / (1 + np.exp(-(t - sos) / up)) - 1 / (1 + np.exp(-(t - eos) / down))


def _unit_fractions(scene: _Scene, tpl_name: str, day: float) -> tuple[np.ndarray, np.ndarray]:
    """Vegetation and water fractions of every unit on ``day`` (days since the season start)."""
    t = day - scene.shift  # a later-sown field sees the season later
    fv = np.zeros(scene.cls.size)
    for cover, value in _CONSTANT_FV.items():
        fv[scene.cls == cover] = value
    for cover, (base, amp, sos, eos, up, down) in _PHENOLOGY[tpl_name].items():
        sel = scene.cls == cover
        fv[sel] = base + amp * scene.vigour[sel] * _double_logistic(t[sel], sos, eos, up, down)
    fw = (scene.cls == WATER).astype(float)
    if tpl_name == "cia":
        peak, start, end, up, down = RICE_PONDING
        rice = scene.cls == RICE
        fw[rice] = peak * _double_logistic(t[rice], start, end, up, down)
    return np.clip(fv, 0, 1).astype(np.float32), np.clip(fw, 0, 1).astype(np.float32)


def _flooded(scene: _Scene, fraction: float) -> np.ndarray:
    """Pixels under water at the stage that floods about ``fraction`` of the scene, connected to the river."""
    wet = (scene.flood_score <= np.quantile(scene.flood_score, fraction)) | scene.river
    labels, _ = ndimage.label(wet)
    connected = np.unique(labels[scene.river])
    return np.isin(labels, connected[connected > 0])


def _render(scene: _Scene, tpl_name: str, date: str, bandpass: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The fine reflectance image (band, y, x float32) and the cover classes (uint8) on ``date``; with
    ``bandpass`` > 0, the same scene through the coarse sensor's bands (canopy and water seen differently)."""
    day = (dt.date.fromisoformat(date) - dt.date.fromisoformat(_TEMPLATES[tpl_name].season_start)).days
    fv_unit, fw_unit = _unit_fractions(scene, tpl_name, day)
    fv = np.clip(fv_unit[scene.unit] * scene.density, 0, 1)
    fw = fw_unit[scene.unit]
    cover = scene.cover.copy()
    if date in WET_AFTER_FLOOD:  # receded flood: dark wet soil, vegetation knocked down
        wet = _flooded(scene, FLOOD_STAGES[WET_AFTER_FLOOD[date]]) & (scene.cover != WATER)
        fw[wet], fv[wet] = 0.35, fv[wet] * 0.5
        cover[wet] = WET_SOIL
    if date in FLOOD_STAGES:  # water replaces whatever was there
        flood = _flooded(scene, FLOOD_STAGES[date])
        fw[flood], fv[flood] = 1.0, 0.0
        cover[flood] = WATER
    fw = np.minimum(fw, 1 - fv)  # a closed canopy hides the ponded water under it
    soil = (1 - fv - fw) * scene.soil_tone
    image = np.empty((len(BANDS), *scene.unit.shape), np.float32)
    for b in range(len(BANDS)):
        canopy, water = 1 + bandpass * BANDPASS_CANOPY[b], 1 + bandpass * BANDPASS_WATER[b]
        image[b] = scene.background[:, b][scene.unit] * soil + scene.vegetation[:, b][scene.unit] * (fv * canopy)
        image[b] += np.float32(WATER_SPECTRUM[b] * water) * fw
        image[b] *= scene.brightness
    return image, cover


# --------------------------------------------------------------------------------------------
# Dataset


def _grid(tpl: _Template, height: int, width: int) -> Grid:
    """25 m UTM 55S grid centred on the site."""
    x0 = tpl.centre[0] - width * PIXEL_SIZE / 2
    y0 = tpl.centre[1] + height * PIXEL_SIZE / 2
    return Grid(height, width, Affine(PIXEL_SIZE, 0.0, x0, 0.0, -PIXEL_SIZE, y0), CRS.from_epsg(CRS_EPSG))


def generate_dataset(dataset: str, folder: str | os.PathLike, config: dict | None = None) -> Manifest:
    """Write the synthetic ``dataset`` (fine, coarse, truth, manifest.json) to ``folder``, atomically.

    ``config`` is merged over the dataset's defaults (a full config from :func:`synthetic_config`
    works too). Returns the manifest loaded back from ``folder``.
    """
    cfg = synthetic_config(dataset, config)
    tpl = _TEMPLATES[cfg["template"]]
    grid = _grid(tpl, cfg["height"], cfg["width"])
    scene = _build_scene(cfg["template"], cfg["height"], cfg["width"], cfg["seed"])
    dates = _pick_dates(cfg["template"], cfg["n_dates"])
    cloudy = cloudy_dates(cfg, dates)
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        for sub in ("fine", "coarse", "truth", *(["qa"] if cloudy else [])):
            (tmp / sub).mkdir()
        entries, first_cover = [], None
        for date in dates:
            sky = (date in cloudy) if cloudy else None  # None: no QA files at all (a cloud-free dataset)
            entry, cover = _write_date(tmp, date, scene, tpl, cfg, grid, first_cover, sky)
            first_cover = cover if first_cover is None else first_cover
            entries.append(entry)
        files = {e[role]: describe_file(tmp, e[role], "gtiff") for e in entries for role in e if role != "date"}
        Manifest(dataset=dataset, source="synthetic", dates=entries, files=files, folder=tmp, bands=list(BANDS),
                 ratio=cfg["ratio"], reflectance_scale=REFLECTANCE_SCALE,
                 meta=_meta(cfg, tpl, grid, dates, cloudy)).save()
    return Manifest.load(folder)


def cloudy_dates(cfg: dict, dates: list[str]) -> list[str]:
    """The dates whose fine image has clouds: ``round(cloudy_dates * len(dates))`` of them, drawn from the seed."""
    count = int(round(cfg["cloudy_dates"] * len(dates))) if cfg["cloud_cover"] > 0 else 0
    picked = _rng(cfg["seed"], "cloudy-dates").choice(len(dates), size=count, replace=False)
    return [dates[i] for i in sorted(picked)]


def _clouded(fine: np.ndarray, cfg: dict, tpl: _Template, date: str) -> tuple[np.ndarray, np.ndarray]:
    """``fine`` under clouds and their shadows on ``date``, and its QA mask."""
    opacity = cloud_field(_rng(cfg["seed"], "clouds", tpl.dates.index(date)), fine.shape[1:], cfg["cloud_cover"],
                          cfg["cloud_size_m"] / PIXEL_SIZE)
    zenith, azimuth = solar_angles(date, tpl.latitude)
    return add_clouds(fine, opacity, shadow_offset(cfg["cloud_height_m"], zenith, azimuth, PIXEL_SIZE))


def _sense(fine: np.ndarray, cfg: dict, index: int) -> np.ndarray:
    """The coarse image of one date (calendar ``index``); each random effect draws from its own generator,
    so turning one on leaves the others' draws (and the clean sensor's output) unchanged."""
    rng = _rng(cfg["seed"], "coarse", index)
    angle = rng.uniform(0, 2 * np.pi)
    shift = (cfg["misregistration"] * np.sin(angle), cfg["misregistration"] * np.cos(angle))
    if cfg["geolocation_m"]:
        dy, dx = geolocation_shift(_rng(cfg["seed"], "geolocation", index), cfg["geolocation_m"] / PIXEL_SIZE)
        shift = (shift[0] + dy, shift[1] + dx)
    gain, offset = COARSE_GAIN, COARSE_OFFSET
    if cfg["date_gain_sd"] or cfg["date_offset_sd"]:
        gain, offset = date_calibration(_rng(cfg["seed"], "calibration", index), gain, offset, bands=fine.shape[0],
                                        gain_sd=cfg["date_gain_sd"], offset_sd=cfg["date_offset_sd"])
    return simulate_coarse(fine, cfg["ratio"], psf_sigma=cfg["psf_sigma"], gain=gain, offset=offset, shift=shift,
                           noise=cfg["noise"], rng=rng, psf=cfg["psf"], grid_offset=cfg["grid_offset"])


def _write_date(tmp: Path, date: str, scene: _Scene, tpl: _Template, cfg: dict, grid: Grid,
                first_cover: np.ndarray | None, cloudy: bool | None) -> tuple[dict[str, str], np.ndarray]:
    """Render, degrade and write one date; returns its manifest entry and its cover classes.

    The coarse image sees the cloud-free scene (the study assumes a clear coarse image, as a daily
    sensor's users pick or composite one); ``cloudy`` None writes no QA mask.
    """
    fine, cover = _render(scene, cfg["template"], date)
    seen = _render(scene, cfg["template"], date, cfg["bandpass"])[0] if cfg["bandpass"] else fine
    coarse = _sense(seen, cfg, tpl.dates.index(date))
    del seen
    entry = {"date": date, "fine": f"fine/{date}.tif", "coarse": f"coarse/{date}.tif",
             "cover": f"truth/cover_{date}.tif", "change": f"truth/change_{date}.tif"}
    if cloudy is not None:
        entry["fine_qa"] = f"qa/{date}.tif"
        qa = np.zeros(fine.shape[1:], np.uint8)
        if cloudy:
            fine, qa = _clouded(fine, cfg, tpl, date)
        write_geotiff(tmp / entry["fine_qa"], qa, grid, band_names=("qa",))
    write_geotiff(tmp / entry["fine"], to_stored(fine), grid, band_names=BANDS)
    del fine
    write_geotiff(tmp / entry["coarse"], to_stored(coarse), grid, band_names=BANDS)
    write_geotiff(tmp / entry["cover"], cover, grid, band_names=("cover",))
    change = (cover != (cover if first_cover is None else first_cover)).astype(np.uint8)
    write_geotiff(tmp / entry["change"], change, grid, band_names=("change",))
    return entry, cover


def _meta(cfg: dict, tpl: _Template, grid: Grid, dates: list[str], cloudy: list[str]) -> dict[str, Any]:
    return {
        "generator": "stfusion.data.synthetic",
        "config": cfg,
        "site": tpl.site,
        "crs": f"EPSG:{CRS_EPSG}",
        "transform": list(grid.transform)[:6],
        "pixel_size_m": PIXEL_SIZE,
        "cover_classes": {str(k): v for k, v in COVER_CLASSES.items()},
        "coarse_model": {
            "gain": list(COARSE_GAIN), "offset": list(COARSE_OFFSET),
            "psf": f"{cfg['psf']}, optics sigma {cfg['psf_sigma']} coarse px",
            "aggregation": f"block mean, grid edges at {cfg['grid_offset']} fine px from the origin",
            "geolocation_sd_m": cfg["geolocation_m"], "date_gain_sd": cfg["date_gain_sd"],
            "date_offset_sd": cfg["date_offset_sd"], "noise_sd": cfg["noise"],
            "bandpass": {"scale": cfg["bandpass"], "canopy": list(BANDPASS_CANOPY), "water": list(BANDPASS_WATER)},
            "resampling": "nearest neighbour back to the fine grid",
        },
        **({"clouds": {"cloudy_dates": cloudy, "cover": cfg["cloud_cover"], "size_m": cfg["cloud_size_m"],
                       "height_m": cfg["cloud_height_m"], "qa": "qa/<date>.tif: 0 clear, 1 cloud, 2 cloud shadow"}}
           if cloudy else {}),
        "flood_dates": [d for d in dates if d in FLOOD_STAGES],
    }
