"""Fusing a scene larger than memory: block by block, each read with a halo and written window by window.

Memory then holds one block (``side`` pixels square plus its halo) of every input, whatever the scene's size.
Each block's prediction keeps its core (the halo gives window methods and tiled models their neighbours) and
goes into a staged GeoTIFF, which becomes the Cloud-Optimised GeoTIFF at the end (GDAL copies it block by
block). Statistics a method takes over its whole input (STARFM's and ESTARFM's thresholds, FSDAF's classes)
are then each block's, as the official ESTARFM and FSDAF codes compute them per processing block.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window
from tqdm.auto import tqdm

from stfusion.data.formats import WindowedRaster, open_windows
from stfusion.data.raster import Grid, as_reflectance, bounded_gdal_cache
from stfusion.data.units_check import check_pair, check_units, mask_outside
from stfusion.errors import ConfigError, InputError
from stfusion.inference.outputs import PREDICTION_TAGS, fallback_tags, std_path
from stfusion.io import atomic_path
from stfusion.methods.baselines import FallbackWarning

DEFAULT_BLOCK = 4096
"""Side of the blocks, in fine pixels: a 4096-pixel block of 6 bands is ~400 MB per input as float64."""
SAMPLE = 1024
"""Side of the central box on which the units of the inputs are checked before a scene is fused."""
HALO = 64
"""Pixels read around each block: STARFM's (30) and ESTARFM's (25) windows and the tiled models' overlap fit."""
def block_boxes(height: int, width: int, side: int, align: int = 1) -> list[tuple[int, int, int, int]]:
    """(row0, row1, col0, col1) of the blocks covering the scene; ``side`` rounded down to a multiple of
    ``align`` (the coarse/fine ratio), so that every block starts on a coarse pixel's edge."""
    side = max(align, side // align * align)
    return [(r, min(r + side, height), c, min(c + side, width))
            for r in range(0, height, side) for c in range(0, width, side)]


def open_sources(paths: dict[str, Path], stack: ExitStack) -> dict[str, WindowedRaster]:
    """Every input by role, opened window by window on ``stack``; their band counts and grids must agree."""
    sources = {name: stack.enter_context(open_windows(path)) for name, path in paths.items()}
    first_name, first = next(iter(sources.items()))
    for name, source in sources.items():
        if source.count != first.count:
            raise InputError(f"{paths[name]}: has {source.count} bands but {paths[first_name]} has {first.count}")
        first.grid.require_same(source.grid, what=f"{paths[name]} against {paths[first_name]}")
    return sources


def read_roles(sources: dict[str, WindowedRaster], rows: slice, cols: slice, reflectance_scale: float | None,
               outside: Counter | None = None) -> dict[str, np.ndarray]:
    """Reflectance (NaN = nodata) of every input in the box ``rows`` x ``cols``, by role; values outside (0, 1]
    become nodata, counted by file in ``outside``."""
    data = {name: as_reflectance(_box(src, rows, cols), reflectance_scale)[0] for name, src in sources.items()}
    _mask_outside(data, sources, outside)
    return data


def _mask_outside(data: dict[str, np.ndarray], sources: dict[str, WindowedRaster], outside: Counter | None) -> None:
    for name, refl in data.items():
        counted = mask_outside(refl)
        if outside is not None:
            outside[str(sources[name].path)] += counted


def _box(src: WindowedRaster, rows: slice, cols: slice):
    try:
        return src.raster(rows, cols)
    except RasterioIOError as err:
        cause = str(err.__cause__ or err).splitlines()[0]
        raise InputError(f"{src.path}: cannot read rows {rows.start}-{rows.stop}, columns {cols.start}-{cols.stop}: "
                         f"the file is truncated or corrupt ({cause})") from None


def check_roles_units(sources: dict[str, WindowedRaster], reflectance_scale: float | None, side: int = SAMPLE,
                      outside: Counter | None = None) -> dict[str, np.ndarray] | None:
    """Every input holds reflectance once scaled, and each pair's fine and coarse images the same units
    (stfusion.data.units_check), judged on the central ``side`` x ``side`` pixels: before any work. Where that
    box is the whole scene, returns what :func:`read_roles` would (counting into ``outside``), so a small scene
    is read once; else None."""
    grid = next(iter(sources.values())).grid
    r0, c0 = max(0, (grid.height - side) // 2), max(0, (grid.width - side) // 2)
    rows, cols = slice(r0, min(grid.height, r0 + side)), slice(c0, min(grid.width, c0 + side))
    whole = (rows.stop - rows.start, cols.stop - cols.start) == (grid.height, grid.width)
    data = {}
    for name, src in sources.items():
        data[name], scale = as_reflectance(_box(src, rows, cols), reflectance_scale)
        check_units(data[name], src.path, scale)
    _mask_outside(data, sources, outside if whole else None)
    for suffix in ("", "_after"):
        if f"fine_ref{suffix}" in data and f"coarse_ref{suffix}" in data:
            check_pair(data[f"fine_ref{suffix}"], data[f"coarse_ref{suffix}"], sources[f"fine_ref{suffix}"].path,
                       sources[f"coarse_ref{suffix}"].path)
    return data if whole else None


def role_inputs(data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A method's fine references, coarse references and target (two pairs stacked as (pair, band, y, x), the
    earlier first), the pixels valid in every input, and those valid in every coarse image."""
    finite = {name: np.isfinite(d).all(axis=0) for name, d in data.items()}
    coarse_valid = np.logical_and.reduce([ok for name, ok in finite.items() if not name.startswith("fine_ref")])
    valid = coarse_valid & np.logical_and.reduce([ok for name, ok in finite.items() if name.startswith("fine_ref")])
    stack = lambda role: (np.stack([data[role], data[f"{role}_after"]]) if f"{role}_after" in data  # noqa: E731
                          else data.get(role))
    coarse_ref = stack("coarse_ref")
    # A model that ignores C1 still takes an array in its place: the target's coarse image.
    coarse_ref = data["coarse_target"] if coarse_ref is None else coarse_ref
    return stack("fine_ref"), coarse_ref, data["coarse_target"], valid, coarse_valid


def predict_layers(predict: Callable, data: dict[str, np.ndarray], ratio: int | None,
                   empty: str | None = None) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """``predict`` on the inputs by role: the layers by name ("prediction", "uncertainty"), the pixels valid in
    every coarse image, and the pixels that hold a fallback value (:class:`FallbackWarning`). Where no pixel is
    valid: an InputError saying ``empty``, or with ``empty`` None an all-NaN prediction (a block of a scene)."""
    fine_ref, coarse_ref, coarse_target, valid, coarse_valid = role_inputs(data)
    fallback = np.zeros(valid.shape, bool)
    if not valid.any():
        if empty is not None:
            raise InputError(empty)
        return {"prediction": np.full(data["fine_ref"].shape, np.nan, np.float32)}, coarse_valid, fallback
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FallbackWarning)
        result = predict(fine_ref, coarse_ref, coarse_target, valid=valid, ratio=ratio)
    for warning in caught:
        if isinstance(warning.message, FallbackWarning):
            fallback |= warning.message.holes
        else:  # not ours to handle: passed on as it came
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    layers = dict(result) if isinstance(result, dict) else {"prediction": result}
    return layers, coarse_valid, fallback & coarse_valid


def block_side(block: int | None) -> int:
    """``--block`` checked: the side of the blocks (default :data:`DEFAULT_BLOCK`)."""
    side = DEFAULT_BLOCK if block is None else block
    if isinstance(side, bool) or not isinstance(side, int) or side < 64:
        raise ConfigError(f"--block: expected a block side of at least 64 pixels, got {block!r}")
    return side


def block_halo(window: int | None) -> int:
    """Pixels read around each block: :data:`HALO`, or more for a traditional method's wider search window."""
    return max(HALO, (window or 0) // 2 + 1)


def fuse_blocks(predict: Callable, read_box: Callable[[slice, slice], dict[str, np.ndarray]], grid: Grid,
                out: str | os.PathLike, *, ratio: int | None, side: int = DEFAULT_BLOCK, halo: int = HALO,
                band_names: tuple[str, ...] | None = None, what: str = "the inputs",
                progress: bool = True) -> tuple[int, int, list[str]]:
    """Predict the scene on ``grid`` block by block into ``out`` (and ``<out>_std.tif`` for a stochastic
    model); ``read_box(rows, cols)`` gives every input's reflectance in a box by role (:func:`read_roles`).
    Returns the number of pixels predicted, how many of them hold a fallback value, and the layers written
    ("prediction", "uncertainty"); ``what`` names the inputs in the error raised when no pixel is valid."""
    align = ratio or 1
    halo = math.ceil(halo / align) * align
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        stack.enter_context(bounded_gdal_cache())
        staging = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=Path(out).parent,
                                                                        prefix=f".{Path(out).name}.")))
        writers: dict[str, rasterio.io.DatasetWriter] = {}
        predicted = fallback = 0
        boxes = block_boxes(grid.height, grid.width, side, align)
        for r0, r1, c0, c1 in tqdm(boxes, desc=f"blocks of {Path(out).name}", disable=not progress):
            rows = slice(max(0, r0 - halo), min(grid.height, r1 + halo))
            cols = slice(max(0, c0 - halo), min(grid.width, c1 + halo))
            layers, coarse_valid, holes = predict_layers(predict, read_box(rows, cols), ratio)
            core = (slice(r0 - rows.start, r1 - rows.start), slice(c0 - cols.start, c1 - cols.start))
            fallback += int(holes[core].sum())
            for name, array in layers.items():
                array = np.asarray(array, dtype=np.float32).copy()
                array[:, ~coarse_valid] = np.nan
                part = array[:, core[0], core[1]]
                if name not in writers:
                    writers[name] = stack.enter_context(_staged(staging / f"{name}.tif", grid, part.shape[0],
                                                                band_names, PREDICTION_TAGS[name]))
                writers[name].write(part, window=Window(c0, r0, c1 - c0, r1 - r0))
                if name == "prediction":
                    predicted += int(np.isfinite(part).all(axis=0).sum())
        if predicted == 0:
            raise InputError(f"{what}: no pixel is valid in all of them")
        writers["prediction"].update_tags(**fallback_tags(fallback))
        for writer in writers.values():
            writer.close()
        _publish({name: staging / f"{name}.tif" for name in writers}, out)
    return predicted, fallback, list(writers)


def _staged(path: Path, grid: Grid, bands: int, band_names, tags: dict[str, str]):
    """A tiled float32 GeoTIFF the blocks are written into (the COG driver cannot be written window by window)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        dst = rasterio.open(path, "w", driver="GTiff", height=grid.height, width=grid.width, count=bands,
                            dtype="float32", crs=grid.crs, transform=grid.transform, nodata=float("nan"),
                            tiled=True, blockxsize=256, blockysize=256, compress="deflate", predictor=3,
                            bigtiff="if_safer")
    for i, name in enumerate(band_names or (), start=1):
        dst.set_band_description(i, name)
    dst.scales, dst.offsets = (1.0,) * bands, (0.0,) * bands
    dst.update_tags(**tags)
    return dst


def _publish(staged: dict[str, Path], out: str | os.PathLike) -> None:
    """Copy the staged files to Cloud-Optimised GeoTIFFs at their places, all renamed in only once all are written."""
    targets = {"prediction": Path(out), "uncertainty": std_path(out)}
    with ExitStack() as renames, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for name, path in staged.items():
            tmp = renames.enter_context(atomic_path(targets[name]))
            rasterio.shutil.copy(path, tmp, driver="COG", compress="deflate", predictor=3, blocksize=256,
                                 overview_resampling="average", bigtiff="if_safer")
