"""Train one model on one dataset: the function the notebooks, the CLI and ``torchrun`` all call.

What a run guarantees:

- **Same seed, same numbers on CPU.** The seed fixes model initialisation and every patch
  (samplers are pure functions of seed, epoch and index); Lightning runs with
  ``deterministic=True``.
- **Resume.** Lightning checkpoints go to ``checkpoint_dir`` after every epoch (``last.ckpt``) and
  at every new best validation score (``best.ckpt``). A run that finds a ``last.ckpt`` there
  continues from it instead of restarting, provided the folder's ``fingerprint.json`` matches
  this run (model, settings, seed, data, package version); otherwise the stale folder is cleared. A
  damaged ``last.ckpt`` is moved aside (``<folder>.damaged-last.ckpt``) with a warning, and the run restarts.
  The folder is removed after a successful run: the exported weights are the product.
- **Model selection on validation dates only.** ``best.ckpt`` minimises ``val_rmse`` over fixed
  patches of the validation pairs; test pairs are never loaded while training.
- **Logs.** CSV logs per run segment in ``checkpoint_dir/logs``, merged into a tidy history
  (epoch, split, metric, value) that the training figure and the DVC plots read.
- **Devices.** CUDA when present, with bf16 autocast (``precision="bf16-mixed"``; losses stay in
  float32) and channels-last memory; CPU otherwise. Under ``torchrun`` (stfusion.train.distributed)
  every process trains one device with Lightning's DDP, CPU processes over gloo; only rank 0 prepares
  the checkpoint folder and writes to it.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import shutil
import time
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
import xarray as xr
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning_utilities.core import rank_zero

import stfusion
from stfusion.data.datacube import cube_ratio, date_index
from stfusion.data.splits import Splits
from stfusion.errors import ConfigError
from stfusion.io import write_json
from stfusion.methods.models.standardize import Standardized, band_statistics
from stfusion.methods.models import (AUTOENCODER, arch_for_data, build_autoencoder, build_model, construct, count_parameters,
                             discriminator_for_data, get_model_spec)
from stfusion.train.config import TrainConfig
from stfusion.train.datamodule import FusionDataModule, micro_batches
from stfusion.train.tasks import AdversarialTask, AutoencoderTask, DiffusionTask, FusionTask, RegressionTask
from stfusion.inference.weights import load_feature_encoder
from stfusion.units import REFLECTANCE_SCALE

HISTORY_COLUMNS = ("epoch", "split", "metric", "value")


@dataclass
class TrainResult:
    model: torch.nn.Module  # the generator (or autoencoder) with the best validation weights, in eval mode
    record: dict[str, Any]  # what run.json stores: parameters, seconds, best epoch, settings
    history: pd.DataFrame  # tidy: epoch, split, metric, value
    is_global_zero: bool = True  # False on the other ranks of a DDP run: they must not write outputs


def use_cuda(accelerator: str) -> bool:
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def data_fingerprint(cube: xr.Dataset, splits: Splits) -> str:
    digest = hashlib.sha256()
    for name in ("fine", "coarse", "valid"):
        digest.update(np.ascontiguousarray(cube[name].values).tobytes())
    digest.update(json.dumps(splits.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()


def run_fingerprint(name: str, config: TrainConfig, seed: int, data: str) -> dict[str, Any]:
    return {"model": name, "config": config.to_dict(), "seed": seed, "data": data, "version": stfusion.__version__}


def resumable(folder: Path, fingerprint: dict[str, Any]) -> Path | None:
    """``folder/last.ckpt`` when ``folder`` holds an unfinished run of this very fingerprint."""
    stamp = folder / "fingerprint.json"
    same = stamp.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(fingerprint, default=str))
    return folder / "last.ckpt" if same and (folder / "last.ckpt").is_file() else None


def damage(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` (a zip archive, as torch saves) cannot be read, or None when every member checks out."""
    try:
        with zipfile.ZipFile(checkpoint) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return str(err) or type(err).__name__
    return f"member {bad} fails its checksum" if bad else None


def prepare_checkpoint_dir(folder: Path, fingerprint: dict[str, Any]) -> Path | None:
    """Make ``folder`` hold this run's state; return ``last.ckpt`` when it can be resumed.

    A damaged ``last.ckpt`` (a kill while it was written, a full disk) is moved aside, named in a warning,
    and the run starts again from scratch rather than failing the same way on every rerun."""
    resume = resumable(folder, fingerprint)
    if resume is not None and (why := damage(resume)) is None:
        return resume
    if resume is not None:
        aside = folder.with_name(f"{folder.name}.damaged-last.ckpt")
        os.replace(resume, aside)
        warnings.warn(f"{resume}: cannot be resumed ({why}); moved to {aside}, training starts again from scratch",
                      stacklevel=2)
    if folder.exists():
        shutil.rmtree(folder)  # another run's (or an empty) state: never resume from it
    folder.mkdir(parents=True)
    write_json(folder / "fingerprint.json", fingerprint)
    return None


def torchrun_world() -> tuple[int, int, int] | None:
    """(rank, processes per node, nodes) of a ``torchrun`` launch; None outside one."""
    if "LOCAL_WORLD_SIZE" not in os.environ:
        return None
    world, local = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return int(os.environ.get("RANK", 0)), local, max(1, world // local)


class TrainingClock(Callback):
    """Training seconds summed over interrupted and resumed segments (kept in ``clock.json``)."""

    def __init__(self, path: Path):
        self.path = path
        self.before = json.loads(path.read_text())["seconds"] if path.is_file() else 0.0
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            write_json(self.path, {"seconds": self.seconds})


def read_history(log_dir: Path) -> pd.DataFrame:
    """Merge the CSV logs of every run segment into a tidy history (later segments win)."""
    frames = [pd.read_csv(path) for path in sorted(log_dir.glob("version_*/metrics.csv"),
                                                    key=lambda p: int(p.parent.name.split("_")[1]))]
    if not frames:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    wide = pd.concat(frames, ignore_index=True)
    rows = []
    for column in wide.columns:
        split, _, metric = column.partition("_")
        if split not in ("train", "val") or not metric:
            continue
        values = wide[["epoch", column]].dropna().drop_duplicates("epoch", keep="last")
        rows += [(int(e), split, metric, float(v)) for e, v in values.itertuples(index=False)]
    history = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    return history.sort_values(["metric", "split", "epoch"], ignore_index=True)


def training_statistics(cube: xr.Dataset, splits: Splits) -> dict[str, list[float]]:
    """Per-band mean and deviation of the training dates' fine images (never validation or test dates)."""
    index = [date_index(cube, date) for date in splits.train_dates]
    mean, std = band_statistics(cube["fine"].values[index], cube["valid"].values[index], REFLECTANCE_SCALE)
    return {"mean": mean.tolist(), "std": std.tolist()}


def config_for_data(name: str, config: TrainConfig, cube: xr.Dataset) -> TrainConfig:
    """``config`` with what the networks take from the data (the band count, the pixel-size ratio)."""
    bands = cube.sizes["band"]
    arch = arch_for_data(name, config.arch, None if name == AUTOENCODER else cube_ratio(cube), bands=bands)
    changes = {"arch": arch} if arch != dict(config.arch) else {}
    if name != AUTOENCODER and get_model_spec(name).discriminator:
        discriminator = discriminator_for_data(name, config.discriminator, bands)
        if discriminator != dict(config.discriminator):
            changes["discriminator"] = discriminator
    return replace(config, **changes) if changes else config


def build_task(name: str, config: TrainConfig, *, feature_encoder_path: str | os.PathLike | None,
               statistics: dict[str, list[float]] | None = None) -> FusionTask:
    """The Lightning task of model ``name`` (or of the feature autoencoder)."""
    if name == AUTOENCODER:
        return AutoencoderTask(build_autoencoder(config.arch), config)
    spec = get_model_spec(name)
    if spec.discriminator and config.gradient_clip:
        raise ConfigError(f"models.{name}.gradient_clip: not supported for GANs (manual optimisation); use 0")
    generator = build_model(name, config.arch)
    if config.standardize:
        if statistics is None:
            raise ConfigError(f"models.{name}: standardize needs the training dates' band statistics")
        generator = Standardized(generator, statistics["mean"], statistics["std"])
    if spec.diffusion:
        return DiffusionTask(generator, config)
    encoder = None
    if spec.feature_encoder and (config.feature_weight or config.cosine_weight):
        if feature_encoder_path is None:
            raise ConfigError(f"{name}: its loss needs the feature autoencoder; run the autoencoder stage "
                              "first and pass feature_encoder_path")
        encoder = load_feature_encoder(feature_encoder_path)
    if spec.discriminator:
        discriminator = construct(spec.discriminator_class(), dict(config.discriminator),
                                  key=f"models.{name}.discriminator")
        return AdversarialTask(generator, discriminator, config, encoder)
    return RegressionTask(generator, config, encoder)


def no_advert(record: logging.LogRecord) -> bool:
    """Lightning advertises its cloud logging service whenever a trainer has no LitLogger: not news about the run."""
    return "litlogger" not in record.getMessage()


def make_trainer(config: TrainConfig, checkpoint_dir: Path, *, accelerator: str, devices: int | str,
                 strategy: str, progress: bool, callbacks: list[Callback], accumulate: int = 1,
                 launch: tuple[int, int, int] | None = None, manual: bool = False) -> L.Trainer:
    """``launch``: :func:`torchrun_world` of the caller (None outside torchrun); ``manual``: the task
    optimises itself, in several backward passes per step (the GANs)."""
    cuda = use_cuda(accelerator)
    _, local, nodes = launch or (0, 1, 1)
    if launch:  # DDP, one device per torchrun process (on CPU: one process each, gloo)
        # A GAN's discriminator step leaves the generator out of its loss: DDP must look for unused parameters.
        ddp = "ddp_find_unused_parameters_true" if manual else "ddp"
        devices, strategy = local, ddp if strategy == "auto" else strategy
    elif not cuda:
        devices = 1
    best = ModelCheckpoint(dirpath=checkpoint_dir, filename="best", monitor="val_rmse", mode="min",
                           save_top_k=1, save_last=True, enable_version_counter=False)
    bar = [TQDMProgressBar(refresh_rate=max(1, config.steps_per_epoch // 10))] if progress else []
    rank_zero.log.addFilter(no_advert)  # the logger Lightning's rank-zero messages go through (once per filter)
    return L.Trainer(
        max_epochs=config.epochs, accelerator="gpu" if cuda else "cpu", devices=devices, num_nodes=nodes,
        strategy=strategy, use_distributed_sampler=False,  # the data module shares each batch out itself
        sync_batchnorm=cuda and local * nodes > 1, precision="bf16-mixed" if cuda else "32-true", deterministic=not cuda,
        callbacks=[best, *bar, *callbacks], logger=CSVLogger(checkpoint_dir, name="logs"),
        enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
        gradient_clip_val=config.gradient_clip or None, accumulate_grad_batches=accumulate,
        log_every_n_steps=max(1, config.steps_per_epoch), default_root_dir=checkpoint_dir,
    )


def train_model(name: str, cube: xr.Dataset, splits: Splits, config: TrainConfig, *, seed: int,
                checkpoint_dir: str | os.PathLike, feature_encoder_path: str | os.PathLike | None = None,
                accelerator: str = "auto", devices: int | str = 1, strategy: str = "auto",
                num_workers: int = 0, micro_batch: int | None = None, progress: bool = True,
                callbacks: list[Callback] = ()) -> TrainResult:
    """Train model ``name`` (or ``"autoencoder"``) and return it with its best validation weights;
    ``micro_batch`` splits each batch to bound memory (stfusion.train.datamodule)."""
    checkpoint_dir = Path(checkpoint_dir)
    config = config_for_data(name, config, cube)
    fingerprint = run_fingerprint(name, config, seed, data_fingerprint(cube, splits))
    if micro_batch:  # batch norm sees micro-batches: a run with other micro-batches is another run
        fingerprint["micro_batch"] = micro_batch
    launch = torchrun_world()
    rank, world_size = (launch[0], launch[1] * launch[2]) if launch else (0, 1)
    resume = prepare_checkpoint_dir(checkpoint_dir, fingerprint) if rank == 0 else resumable(checkpoint_dir, fingerprint)
    L.seed_everything(seed, workers=True, verbose=False)
    statistics = training_statistics(cube, splits) if config.standardize and name != AUTOENCODER else None
    task = build_task(name, config, feature_encoder_path=feature_encoder_path, statistics=statistics)
    if use_cuda(accelerator):
        task = task.to(memory_format=torch.channels_last)
    references = "self" if name == AUTOENCODER else get_model_spec(name).references
    _, accumulate = micro_batches(config.batch_size, world_size, micro_batch)
    task.micro_batch = micro_batch if accumulate > 1 else None  # the GANs split their batches by it
    data = FusionDataModule(cube, splits, config, references=references, seed=seed, num_workers=num_workers,
                            micro_batch=micro_batch, whole_batches=not task.automatic_optimization)
    clock = TrainingClock(checkpoint_dir / "clock.json")
    trainer = make_trainer(config, checkpoint_dir, accelerator=accelerator, devices=devices, strategy=strategy,
                           progress=progress, callbacks=[clock, *callbacks],
                           accumulate=accumulate if task.automatic_optimization else 1, launch=launch,
                           manual=not task.automatic_optimization)
    with warnings.catch_warnings():
        # Our checkpoint folder holds the run's fingerprint, so Lightning always finds it "not empty".
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        if task.feature_encoder is not None:  # the loss's autoencoder is frozen: in eval mode on purpose
            warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
        trainer.fit(task, datamodule=data, ckpt_path=resume)
    seconds = clock.seconds

    checkpoint = next(c for c in trainer.callbacks if isinstance(c, ModelCheckpoint))
    state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
    task.load_state_dict(state)
    model = task.generator.cpu().float().to(memory_format=torch.contiguous_format).eval()
    history = read_history(checkpoint_dir / "logs")
    val_rmse = history[(history["split"] == "val") & (history["metric"] == "rmse")]
    best_epoch = int(val_rmse.loc[val_rmse["value"].idxmin(), "epoch"]) if not val_rmse.empty else None
    record = {
        # Every parameter of the exported model (an EMA copy is not trainable itself).
        "model": name, "parameters": sum(p.numel() for p in model.parameters()), "train_seconds": seconds, "seed": seed,
        "best_epoch": best_epoch, "best_val_rmse": float(checkpoint.best_model_score or float("nan")),
        "epochs": config.epochs, "micro_batch": task.micro_batch, "resumed": resume is not None, "device": "cuda" if use_cuda(accelerator) else "cpu",
        "cpu_threads": torch.get_num_threads(),  # CPU results can differ in the last digits between thread counts
        "settings": config.to_dict(), "standardize": statistics,
        "discriminator_parameters": (count_parameters(task.discriminator) if isinstance(task, AdversarialTask) else 0),
    }
    is_global_zero = trainer.is_global_zero
    # Lightning's trainer and task refer to each other: collect them now, before the caller predicts
    # whole scenes, rather than carry the discriminator, optimiser state and patches alongside.
    del trainer, task, data, checkpoint, state
    gc.collect()
    return TrainResult(model, record, history, is_global_zero)


def finish(checkpoint_dir: str | os.PathLike) -> None:
    """Remove a finished run's resume state once its products are safely written, and for a per-seed
    folder its model's folder when no other seed's run is left in it."""
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    if Path(checkpoint_dir).name.startswith("seed-"):  # Workspace.checkpoints(dataset, name, seed)
        try:
            Path(checkpoint_dir).parent.rmdir()  # only if empty
        except OSError:
            pass
