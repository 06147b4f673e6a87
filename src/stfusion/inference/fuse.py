"""Fusion of users' own images: the ``stfusion fuse`` command.

Reads a fine/coarse reference pair and the coarse image of the target date (any GDAL-readable
raster, ENVI included, with the coarse images resampled onto the fine grid as in CIA/LGC), runs a
method, and writes the prediction as a float32 reflectance Cloud-Optimised GeoTIFF (NaN = nodata) on the
inputs' grid, keeping their CRS and transform.

Pixels where the fine reference is nodata (clouds you masked, gaps) are gaps: a trained model predicts
them from a reference filled with the coarse reference there, as in the study; a method without
training leaves them NaN. Where a coarse image is nodata, nothing is predicted.

The method is either one that needs no training (``method_name``: STARFM, FSDAF, the reference
methods) or a trained deep model (``weights``: a ``model.pt`` written by the train stage, such as
``data/predictions/cia-sim/mcbam-gan/seed-42/model.pt``). A trained model runs through the study's tiled
inference, on CUDA when present. Stochastic models (STFDiff) average ``samples`` draws and, with two
or more, also write their per-pixel standard deviation beside the prediction, ``<out>_std.tif``.
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import numpy as np

from stfusion.data.formats import WindowedRaster
from stfusion.data.raster import Grid, write_geotiff
from stfusion.errors import ConfigError, InputError
from stfusion.inference.blocks import (block_halo, block_side, check_roles_units, fuse_blocks, open_sources,
                                      predict_layers, read_roles)
from stfusion.inference.outputs import PREDICTION_TAGS, check_output, fallback_tags, remove_stale_std, std_path
from stfusion.io import atomic_path
from stfusion.methods.baselines import check_window
from stfusion.methods.registry import get_method

PathOrPaths = str | os.PathLike | list
"""One input path, or a list of them (one per reference pair)."""
DEFAULT_TILE = 512  # inference tile side for weights files that do not record theirs


class NoGeoreferenceWarning(UserWarning):
    """The inputs have no CRS, so neither has the prediction."""


MAX_WINDOW = 1001
"""The widest search window ``fuse`` accepts: 30 km at 30 m, far beyond the methods' few dozen pixels."""


def untrained_predictor(method_name: str, window: int | None) -> tuple[Callable, dict]:
    method = get_method(method_name, key="--method")
    if method.predict is None:
        raise ConfigError(f"--method: {method_name} must be trained first; give its trained model.pt with --weights")
    if window is not None and "window" not in method.options:
        raise ConfigError(f"--window: method {method_name} has no search window")
    if window is not None:
        check_window(window, key="--window")
        if window > MAX_WINDOW:
            raise ConfigError(f"--window: {window} pixels is wider than {MAX_WINDOW}; the methods search a few dozen "
                              "(STARFM and FSDAF 31 to 61, ESTARFM 51), and memory grows with the window")
    options = {"window": window} if window is not None else {}
    predict = functools.partial(method.predict, **options)
    return predict, {"method": method_name, "uses_coarse_ref": True, "bands": None, "needs_ratio": method.needs_ratio,
                     "pairs": method.pairs, **options}


PIXEL_SIZE_TOLERANCE = 1.5
"""How far (as a factor) the images' pixel size may be from the one a model was trained on: Landsat's 30 m
fits weights trained on CIA's 25 m, Sentinel-2's 10 m does not."""


def trained_predictor(weights: str | os.PathLike, method_name: str | None, *, window: int | None, tile: int | None,
             samples: int | None, seed: int, device: str | None) -> tuple[Callable, dict]:
    from stfusion.methods.models import get_model_spec  # torch: imported only when a trained model is asked for
    from stfusion.methods.models.layers import check_positive_int
    from stfusion.inference.tiling import resolve_device
    from stfusion.inference.sampling import deep_predictor
    from stfusion.inference.weights import load_model

    if window is not None:
        raise ConfigError("--window: trained models have no search window")
    device = resolve_device(device, key="--device")
    model, payload = load_model(weights, expected=method_name)
    metadata = payload.get("metadata") or {}
    tile = check_positive_int("--tile", (metadata.get("tile") or DEFAULT_TILE) if tile is None else tile)
    samples = check_positive_int("--samples", (metadata.get("uncertainty_samples") or 1) if samples is None else samples)
    traits = model.traits
    stochastic = traits.stochastic
    predict = deep_predictor(model, tile=tile, device=device, samples=samples if stochastic else 0, seed=seed)
    bands_default = inspect.signature(get_model_spec(payload["model"]).generator_class()).parameters["bands"].default
    info = {"method": payload["model"], "weights": str(weights), "uses_coarse_ref": traits.uses_coarse_ref,
            "bands": int(payload["arch"].get("bands", bands_default)), "tile": tile,
            "samples": samples if stochastic else None, "trained_on": metadata.get("dataset"),
            "band_names": metadata.get("bands"), "pixel_size": metadata.get("pixel_size"),
            "ratio": traits.ratio, "pairs": (1,)}
    return predict, info


def fuse_files(method_name: str | None, fine_ref: PathOrPaths, coarse_ref: PathOrPaths | None,
               coarse_target: str | os.PathLike, out: str | os.PathLike, *, ratio: int | None = None,
               window: int | None = None, reflectance_scale: float | None = None, weights: str | os.PathLike | None = None,
               tile: int | None = None, samples: int | None = None, seed: int = 0,
               device: str | None = None, block: int | None = None, overwrite: bool = False,
               progress: bool = True) -> dict:
    """Predict the fine image of the target date and write it to ``out``.

    A scene wider or taller than ``block`` pixels (default :data:`~stfusion.inference.blocks.DEFAULT_BLOCK`)
    is fused block by block (:mod:`stfusion.inference.blocks`), so memory holds one block, not the scene.

    ``method_name`` names a method without training; ``weights`` a trained model's ``model.pt`` (then
    ``method_name``, if given, must be the model it holds). ``fine_ref`` and ``coarse_ref`` are one path each,
    or two (the pair before the target first) for a method that takes two pairs (ESTARFM; STARFM takes
    either). ``ratio`` is the coarse over fine pixel size
    (20 for 500 m / 25 m; needed by FSDAF, taken from a model built for one) and must divide the grid; ``window`` the side of a traditional method's search
    window in fine pixels (odd). Input values are divided by ``reflectance_scale`` (default: 10000 for
    integer files, 1 for float files). Trained models only: ``tile`` (default: the tile it was evaluated with), ``samples`` and
    ``seed`` (stochastic models; default samples: as in its study), ``device`` (default: CUDA when present).
    ``coarse_ref`` may be None for models that do not use it (GAN-STFM, MCBAM-GAN). ``out`` may not be an
    input, nor replace an existing file unless ``overwrite`` (:mod:`stfusion.inference.outputs`).
    """
    if weights is None and method_name is None:
        raise ConfigError("--method or --weights: say which method fuses the images")
    if weights is None:
        predict, info = untrained_predictor(method_name, window)
    else:
        predict, info = trained_predictor(weights, method_name, window=window, tile=tile, samples=samples, seed=seed,
                                          device=device)
    if ratio is None:
        ratio = info.get("ratio")
    if ratio is None and info.get("needs_ratio"):
        raise ConfigError(f"--ratio: {info['method']} needs the coarse over fine pixel size of your images, "
                          "an integer such as 20 for 500 m MODIS over 25 m Landsat")
    if info.get("ratio") is not None and ratio != info["ratio"]:
        raise ConfigError(f"--ratio: {ratio}, but {info['method']} in {weights} was built for coarse pixels "
                          f"{info['ratio']} fine pixels wide; its skip compares the images at that scale")
    if coarse_ref is None and info["uses_coarse_ref"]:
        raise ConfigError(f"--coarse-ref: {info['method']} needs the coarse image of the reference date")
    paths = _pair_paths(info, fine_ref, coarse_ref, coarse_target)
    out = check_output(out, [*paths.values(), *([Path(weights)] if weights else [])], overwrite=overwrite)
    side = block_side(block)
    with ExitStack() as stack:
        sources = open_sources(paths, stack)
        grid, bands = sources["fine_ref"].grid, sources["fine_ref"].count
        _check_scene(paths, grid, ratio, info["bands"], bands)
        if weights is not None:
            check_model_fits(Path(weights), info, sources["fine_ref"])
        outside = Counter()
        blockwise = grid.height > side or grid.width > side
        data = check_roles_units(sources, reflectance_scale, outside=None if blockwise else outside)
        if blockwise:
            if grid.crs is None:
                warnings.warn(f"{paths['fine_ref']} has no georeferencing: {out} is written without a CRS",
                              NoGeoreferenceWarning, stacklevel=2)
            predicted, fallback, layers = fuse_blocks(
                predict, lambda rows, cols: read_roles(sources, rows, cols, reflectance_scale, outside), grid, out,
                ratio=ratio,
                side=side, halo=block_halo(window), what=", ".join(map(str, paths.values())), progress=progress)
            return {**info, "out": str(out), "std": str(std_path(out)) if "uncertainty" in layers else None,
                    "pixels": predicted, "fallback": fallback, "georeferenced": grid.crs is not None,
                    "bands": bands, "block": side,
                    "removed": remove_stale_std(out, layers), "outside": dict(outside)}
        if data is None:  # wider than the units check's sample, yet one block
            data = read_roles(sources, slice(0, grid.height), slice(0, grid.width), reflectance_scale, outside)
    layers, coarse_valid, holes = predict_layers(
        predict, data, ratio, empty=f"{', '.join(map(str, paths.values()))}: no pixel is valid in all of them")
    fallback = int(holes.sum())
    predicted = write_layers(layers, grid, coarse_valid, out, paths["fine_ref"], fallback=fallback)
    return {**info, "out": str(out), "std": str(std_path(out)) if "uncertainty" in layers else None,
            "pixels": predicted, "fallback": fallback, "georeferenced": grid.crs is not None,
            "bands": int(layers["prediction"].shape[0]), "removed": remove_stale_std(out, layers),
            "outside": dict(outside)}


def _pair_paths(info: dict, fine_ref, coarse_ref, coarse_target) -> dict[str, Path]:
    """The inputs by role; two pairs are ``*_ref`` (before the target) and ``*_ref_after``."""
    fines = list(fine_ref) if isinstance(fine_ref, (list, tuple)) else [fine_ref]
    coarses = None if coarse_ref is None else list(coarse_ref) if isinstance(coarse_ref, (list, tuple)) else [coarse_ref]
    if len(fines) not in info["pairs"]:
        wanted = " or ".join(map(str, info["pairs"]))
        raise ConfigError(f"--fine-ref: {info['method']} takes {wanted} reference pair(s), got {len(fines)} fine images"
                          + (" (the earlier pair first)" if 2 in info["pairs"] else ""))
    if coarses is not None and len(coarses) != len(fines):
        raise ConfigError(f"--coarse-ref: {len(coarses)} coarse images for {len(fines)} fine ones; give one per pair")
    paths = {"fine_ref": Path(fines[0]), "coarse_target": Path(coarse_target)}
    if len(fines) == 2:
        paths["fine_ref_after"] = Path(fines[1])
    for name, path in zip(("coarse_ref", "coarse_ref_after"), coarses or ()):
        paths[name] = Path(path)
    return paths


def _check_scene(paths: dict[str, Path], grid: Grid, ratio: int | None, model_bands: int | None, bands: int) -> None:
    if model_bands is not None and bands != model_bands:
        raise InputError(f"{paths['fine_ref']}: has {bands} bands; the model was trained on {model_bands}")
    if ratio is not None and ratio < 1:
        raise ConfigError(f"--ratio: expected the coarse over fine pixel size, a positive integer such as 20, got {ratio}")
    if ratio is not None and (grid.height % ratio or grid.width % ratio):
        raise InputError(f"--ratio: {ratio} does not divide the grid of {paths['fine_ref']} ({grid.height} x {grid.width})")


def check_model_fits(weights: Path, info: dict, fine_ref: WindowedRaster) -> None:
    """Refuse images whose named bands, or whose pixel size, differ from those the model in ``weights`` was
    trained on (its card's ``bands`` and ``pixel_size``): either would predict, and predict wrongly."""
    trained, named = info.get("band_names"), fine_ref.band_names
    if trained and named and [b.lower() for b in named] != [b.lower() for b in trained]:
        raise InputError(f"{fine_ref.path}: bands {', '.join(named)}; the model in {weights} was trained on "
                         f"{', '.join(trained)} in that order: reorder the bands or use weights trained on yours")
    size, grid = info.get("pixel_size"), fine_ref.grid
    if size and grid.crs is not None and grid.crs.is_projected:
        yours = abs(grid.transform.a)
        if not 1 / PIXEL_SIZE_TOLERANCE <= yours / size[0] <= PIXEL_SIZE_TOLERANCE:
            raise InputError(f"{fine_ref.path}: {yours:g} m pixels; the model in {weights} was trained on "
                             f"{size[0]:g} m pixels, and its filters are sized for them: resample the images to "
                             f"{size[0]:g} m or use weights trained at your resolution")


def write_layers(layers: dict[str, np.ndarray], grid: Grid, valid: np.ndarray, out: str | os.PathLike,
                 fine_ref: Path, band_names: tuple[str, ...] | None = None, fallback: int = 0) -> int:
    """The prediction (and the samples' std) as float32 Cloud-Optimised GeoTIFFs, NaN outside ``valid`` and
    wherever the method gave NaN; both or neither. The prediction's tags say how many pixels hold the
    ``fallback`` value. Returns the number of pixels predicted."""
    if grid.crs is None:
        warnings.warn(f"{fine_ref} has no georeferencing: {out} is written without a CRS",
                      NoGeoreferenceWarning, stacklevel=3)
    targets = {"prediction": Path(out), "uncertainty": std_path(out)}
    with ExitStack() as renames:  # every file is renamed into place only once all are written
        for name, array in layers.items():
            tmp = renames.enter_context(atomic_path(targets[name]))
            array = np.asarray(array, dtype=np.float32).copy()
            array[:, ~valid] = np.nan
            tags = {**PREDICTION_TAGS[name], **(fallback_tags(fallback) if name == "prediction" else {})}
            write_geotiff(tmp, array, grid, nodata=float("nan"), band_names=band_names, cog=True, tags=tags)
            if name == "prediction":
                predicted = int(np.isfinite(array).all(axis=0).sum())
    return predicted
