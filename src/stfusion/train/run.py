"""From a datacube to a method's prediction folder: train (when the method learns), then predict.

``run_method`` is what the train notebook calls for every method, trained or not, and
``run_autoencoder`` what the autoencoder notebook calls. Both write their folder atomically:

- ``data/predictions/<dataset>/<method>/``: the test predictions (float GeoTIFFs), ``run.json``
  (parameters, measured training and inference seconds, best epoch, settings, inference tile),
  and for deep models ``model.pt`` (the best validation weights) and ``history.csv``;
- ``data/autoencoders/<dataset>/``: ``autoencoder.pt``, ``history.csv`` and ``run.json``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import xarray as xr

from stfusion.data.datacube import cube_grid, cube_ratio
from stfusion.data.splits import Splits
from stfusion.io import atomic_dir, write_json
from stfusion.paths import code_root
from stfusion.provenance import code_version
from stfusion.methods.registry import get_method
from stfusion.methods.models import AUTOENCODER
from stfusion.inference.predict import predict_split
from stfusion.inference.sampling import deep_predictor, sampling_record
from stfusion.inference.weights import export_weights
from stfusion.train.config import TrainConfig
from stfusion.train.distributed import train_distributed
from stfusion.train.fit import TrainResult, config_for_data, finish, train_model, use_cuda


def _train_options(options: dict[str, Any] | None) -> dict[str, Any]:
    options = dict(options or {})
    return {k: options[k] for k in ("accelerator", "devices", "strategy", "num_workers", "micro_batch", "progress") if k in options}


def _train(name: str, cube: xr.Dataset, splits: Splits, config: TrainConfig, *, seed: int, checkpoint_dir,
           feature_encoder_path, train_options: dict[str, Any] | None) -> TrainResult:
    """Train here, or first in ``train.devices`` torchrun processes and then resume the finished run
    here, where the best weights are loaded and the products written (stfusion.train.distributed)."""
    options = _train_options(train_options)
    devices = options.pop("devices", 1)
    if devices == "auto":
        devices = torch.cuda.device_count() if use_cuda(options.get("accelerator", "auto")) else 1
    if devices > 1:
        train_distributed(name, cube, splits, config, seed=seed, checkpoint_dir=checkpoint_dir, devices=devices,
                          feature_encoder_path=feature_encoder_path,
                          **{k: v for k, v in options.items() if k != "progress"})
    result = train_model(name, cube, splits, config, seed=seed, checkpoint_dir=checkpoint_dir,
                         feature_encoder_path=feature_encoder_path, **options)
    result.record["processes"] = devices
    return result


def weights_card(cube: xr.Dataset, splits: Splits, config: TrainConfig, *, seed: int, tier: str | None,
                 best_epoch: int | None) -> dict[str, Any]:
    """What ``model.pt`` says about its training, all of it fixed by the data, settings and seed (so a rerun
    writes the same bytes; the measured time, device and code go to run.json, and both into the exported card)."""
    grid = cube_grid(cube)
    return {"dataset": splits.dataset, "seed": seed, "tier": tier, "best_epoch": best_epoch, "tile": config.tile,
            "uncertainty_samples": config.uncertainty_samples, "bands": [str(b) for b in cube["band"].values],
            "reflectance_scale": round(1.0 / float(cube["fine"].attrs["scale_factor"]), 6), "ratio": cube_ratio(cube),
            "pixel_size": [abs(grid.transform.a), abs(grid.transform.e)] if grid.crs is not None and grid.crs.is_projected else None,
            "crs": grid.crs.to_string() if grid.crs is not None else None,
            "patch_size": config.patch_size, "batch_size": config.batch_size, "epochs": config.epochs,
            "steps": config.epochs * config.steps_per_epoch, "train_dates": list(splits.train_dates),
            "validation_targets": sorted(splits.val_targets)}


def run_method(name: str, cube: xr.Dataset, splits: Splits, out_dir: str | os.PathLike, *, seed: int,
               config: TrainConfig | None = None, checkpoint_dir: str | os.PathLike | None = None,
               feature_encoder_path: str | os.PathLike | None = None, tier: str | None = None,
               train_options: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``name`` if it learns, then write its test predictions to ``out_dir``; return run.json
    (``extra`` adds entries, such as the ablation variant)."""
    method = get_method(name)
    if not method.trainable:
        return predict_split(method, cube, splits, out_dir, extra={"seed": seed, **(extra or {})})
    if config is None or checkpoint_dir is None:
        raise ValueError(f"{name} is trained: pass its TrainConfig and a checkpoint_dir")
    config = config_for_data(name, config, cube)  # the arch stored with the weights is the one trained
    result = _train(name, cube, splits, config, seed=seed, checkpoint_dir=checkpoint_dir,
                    feature_encoder_path=feature_encoder_path, train_options=train_options)
    predictor = deep_predictor(result.model, tile=config.tile, samples=config.uncertainty_samples, seed=seed)
    trained = dataclasses.replace(method, predictor=predictor,
                                  parameters=result.record["parameters"])
    extra = {**{k: v for k, v in result.record.items() if k != "parameters"}, "tier": tier, "tile": config.tile,
             **sampling_record(result.model, config.uncertainty_samples), "code": code_version(code_root()),
             "feature_encoder": str(feature_encoder_path) if feature_encoder_path else None, **(extra or {})}
    with tempfile.TemporaryDirectory(prefix="stfusion-train-") as staging:
        weights = export_weights(Path(staging) / "model.pt", name, result.model, config.arch,
                                 standardize=result.record["standardize"],
                                 **weights_card(cube, splits, config, seed=seed, tier=tier,
                                                best_epoch=result.record["best_epoch"]))
        history = Path(staging) / "history.csv"
        result.history.to_csv(history, index=False)
        record = predict_split(trained, cube, splits, out_dir, extra=extra, attach=(weights, history),
                               progress=_train_options(train_options).get("progress", True))
    finish(checkpoint_dir)
    return record


def run_autoencoder(cube: xr.Dataset, splits: Splits, out_dir: str | os.PathLike, *, seed: int,
                    config: TrainConfig, checkpoint_dir: str | os.PathLike, tier: str | None = None,
                    train_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the feature autoencoder on training-date fine images; write ``out_dir/autoencoder.pt``."""
    config = config_for_data(AUTOENCODER, config, cube)  # the arch stored with the weights is the one trained
    result = _train(AUTOENCODER, cube, splits, config, seed=seed, checkpoint_dir=checkpoint_dir,
                    feature_encoder_path=None, train_options=train_options)
    record = {**result.record, "dataset": splits.dataset, "tier": tier, "train_dates": list(splits.train_dates)}
    with atomic_dir(out_dir) as tmp:
        export_weights(Path(tmp) / "autoencoder.pt", AUTOENCODER, result.model, config.arch,
                       dataset=splits.dataset, seed=seed, tier=tier, train_dates=list(splits.train_dates))
        result.history.to_csv(Path(tmp) / "history.csv", index=False)
        write_json(Path(tmp) / "run.json", record)
    finish(checkpoint_dir)
    return record
