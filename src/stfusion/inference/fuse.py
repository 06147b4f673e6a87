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
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import numpy as np

from stfusion.methods.baselines import check_window
from stfusion.data.formats import open_windows, read_raster
from stfusion.data.raster import Grid, as_reflectance, write_geotiff
from stfusion.errors import ConfigError, InputError
from stfusion.inference.blocks import DEFAULT_BLOCK, HALO, fuse_blocks
from stfusion.inference.predict import PREDICTION_TAGS, std_path
from stfusion.io import atomic_path
from stfusion.methods.registry import get_method

PathOrPaths = str | os.PathLike | list
"""One input path, or a list of them (one per reference pair)."""
DEFAULT_TILE = 512  # inference tile side for weights files that do not record theirs


class NoGeoreferenceWarning(UserWarning):
    """The inputs have no CRS, so neither has the prediction."""


def _read_inputs(paths: dict[str, Path], reflectance_scale: float | None):
    """Reflectance of the inputs, their common grid, the mask of pixels valid in all, and that of the
    pixels valid in every coarse image."""
    rasters = {name: read_raster(path) for name, path in paths.items()}
    first_name, first = next(iter(rasters.items()))
    for name, raster in rasters.items():
        if raster.data.shape[0] != first.data.shape[0]:
            raise InputError(f"{paths[name]}: has {raster.data.shape[0]} bands but {paths[first_name]} has {first.data.shape[0]}")
        first.grid.require_same(raster.grid, what=f"{paths[name]} against {paths[first_name]}")
    data = {name: as_reflectance(raster, reflectance_scale)[0] for name, raster in rasters.items()}
    finite = {name: np.isfinite(d).all(axis=0) for name, d in data.items()}
    coarse_valid = np.logical_and.reduce([ok for name, ok in finite.items() if not name.startswith("fine_ref")])
    fine_valid = np.logical_and.reduce([ok for name, ok in finite.items() if name.startswith("fine_ref")])
    return data, first.grid, fine_valid & coarse_valid, coarse_valid


def untrained_predictor(method_name: str, window: int | None) -> tuple[Callable, dict]:
    method = get_method(method_name, key="--method")
    if method.predict is None:
        raise ConfigError(f"--method: {method_name} must be trained first; give its trained model.pt with --weights")
    if window is not None and "window" not in method.options:
        raise ConfigError(f"--window: method {method_name} has no search window")
    if window is not None:
        check_window(window, key="--window")
    options = {"window": window} if window is not None else {}
    predict = functools.partial(method.predict, **options)
    return predict, {"method": method_name, "uses_coarse_ref": True, "bands": None, "needs_ratio": method.needs_ratio,
                     "pairs": method.pairs, **options}


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
            "ratio": traits.ratio, "pairs": (1,)}
    return predict, info


def fuse_files(method_name: str | None, fine_ref: PathOrPaths, coarse_ref: PathOrPaths | None,
               coarse_target: str | os.PathLike, out: str | os.PathLike, *, ratio: int | None = None,
               window: int | None = None, reflectance_scale: float | None = None, weights: str | os.PathLike | None = None,
               tile: int | None = None, samples: int | None = None, seed: int = 0,
               device: str | None = None, block: int | None = None, progress: bool = True) -> dict:
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
    ``coarse_ref`` may be None for models that do not use it (GAN-STFM, MCBAM-GAN).
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
    side = DEFAULT_BLOCK if block is None else block
    if isinstance(side, bool) or not isinstance(side, int) or side < 64:
        raise ConfigError(f"--block: expected a block side of at least 64 pixels, got {block!r}")
    grid, bands = _scene(paths)
    if grid.height > side or grid.width > side:
        _check_scene(paths, grid, ratio, info["bands"], bands)
        if grid.crs is None:
            warnings.warn(f"{paths['fine_ref']} has no georeferencing: {out} is written without a CRS",
                          NoGeoreferenceWarning, stacklevel=2)
        predicted, layers = fuse_blocks(predict, paths, out, ratio=ratio, reflectance_scale=reflectance_scale,
                                        side=side, halo=max(HALO, (window or 0) // 2 + 1), progress=progress)
        return {**info, "out": str(out), "std": str(std_path(out)) if "uncertainty" in layers else None,
                "pixels": predicted, "georeferenced": grid.crs is not None, "bands": bands, "block": side}
    data, grid, valid, coarse_valid = _read_inputs(paths, reflectance_scale)
    _check_inputs(paths, grid, valid, ratio, info["bands"], next(iter(data.values())).shape[0])
    fine_in, coarse_in = _stacked(data, "fine_ref"), _stacked(data, "coarse_ref")
    # A model that ignores C1 still takes an array in its place: the target's coarse image.
    result = predict(fine_in, data["coarse_target"] if coarse_in is None else coarse_in, data["coarse_target"],
                     valid=valid, ratio=ratio)
    layers = dict(result) if isinstance(result, dict) else {"prediction": result}
    predicted = write_layers(layers, grid, coarse_valid, out, paths["fine_ref"])
    return {**info, "out": str(out), "std": str(std_path(out)) if "uncertainty" in layers else None,
            "pixels": predicted, "georeferenced": grid.crs is not None,
            "bands": int(layers["prediction"].shape[0])}


def _scene(paths: dict[str, Path]) -> tuple[Grid, int]:
    """The inputs' common grid and band count, from their headers (nothing is read yet)."""
    with ExitStack() as stack:
        sources = {name: stack.enter_context(open_windows(path)) for name, path in paths.items()}
        first_name, first = next(iter(sources.items()))
        for name, source in sources.items():
            if source.count != first.count:
                raise InputError(f"{paths[name]}: has {source.count} bands but {paths[first_name]} has {first.count}")
            first.grid.require_same(source.grid, what=f"{paths[name]} against {paths[first_name]}")
        return first.grid, first.count


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


def _stacked(data: dict[str, np.ndarray], role: str) -> np.ndarray | None:
    """One pair's image, or (pair, band, y, x) for two."""
    if role not in data:
        return None
    return np.stack([data[role], data[f"{role}_after"]]) if f"{role}_after" in data else data[role]


def _check_scene(paths: dict[str, Path], grid: Grid, ratio: int | None, model_bands: int | None, bands: int) -> None:
    if model_bands is not None and bands != model_bands:
        raise InputError(f"{paths['fine_ref']}: has {bands} bands; the model was trained on {model_bands}")
    if ratio is not None and (ratio < 1 or grid.height % ratio or grid.width % ratio):
        raise InputError(f"--ratio: {ratio} does not divide the grid of {paths['fine_ref']} ({grid.height} x {grid.width})")


def _check_inputs(paths: dict[str, Path], grid: Grid, valid: np.ndarray, ratio: int | None, model_bands: int | None,
                  bands: int) -> None:
    _check_scene(paths, grid, ratio, model_bands, bands)
    if not valid.any():
        raise InputError(f"{', '.join(map(str, paths.values()))}: no pixel is valid in all of them")


def write_layers(layers: dict[str, np.ndarray], grid: Grid, valid: np.ndarray, out: str | os.PathLike,
           fine_ref: Path, band_names: tuple[str, ...] | None = None) -> int:
    """The prediction (and the samples' std) as float32 Cloud-Optimised GeoTIFFs, NaN outside ``valid`` and
    wherever the method gave NaN; both or neither. Returns the number of pixels predicted."""
    if grid.crs is None:
        warnings.warn(f"{fine_ref} has no georeferencing: {out} is written without a CRS",
                      NoGeoreferenceWarning, stacklevel=3)
    targets = {"prediction": Path(out), "uncertainty": std_path(out)}
    with ExitStack() as renames:  # every file is renamed into place only once all are written
        for name, array in layers.items():
            tmp = renames.enter_context(atomic_path(targets[name]))
            array = np.asarray(array, dtype=np.float32).copy()
            array[:, ~valid] = np.nan
            write_geotiff(tmp, array, grid, nodata=float("nan"), band_names=band_names, cog=True,
                          tags=PREDICTION_TAGS[name])
            if name == "prediction":
                predicted = int(np.isfinite(array).all(axis=0).sum())
    return predicted
