"""An ablation study on one dataset: every variant of a model trained and its test pairs predicted.

Each variant trains exactly as the train stage trains a method (:func:`stfusion.train.run.run_method`)
and writes ``<out_dir>/<variant>/`` the same way, atomically.

**Side by side on CPU.** The quick-tier models are small: a second intra-op thread speeds one
MCBAM-GAN run up by about 10 %, while two single-thread runs side by side train two variants in
about the time of one (measured on 2 cores: 70 s alone on two threads, 75 s and 79 s for two runs
side by side on one thread each). So on CPU the variants train in ``workers`` spawned processes,
one thread each, by default one per core. Every variant's numbers are then those of a
single-thread run, whatever the machine's core count and whichever worker trains it.
With CUDA, or several devices (DDP), the variants train one after another in this process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from stfusion.errors import StfusionError


@dataclass(frozen=True)
class VariantRun:
    """One variant to train: everything a worker process needs, as plain picklable values."""

    model: str
    variant: str
    settings: dict[str, Any]  # the variant's merged settings (stfusion.train.config.variant_settings)
    dataset: str
    out_dir: str  # the dataset's ablation folder; the variant writes <out_dir>/<variant>/
    cube: str  # the dataset's cube.nc, splits.json and checkpoint folder
    splits: str
    checkpoint_dir: str
    seed: int
    tier: str | None = None
    feature_encoder: str | None = None
    train: dict[str, Any] = field(default_factory=dict)  # params.yaml train options


def run_variant(run: VariantRun, progress: bool = True) -> dict[str, Any]:
    """Train one variant and predict its test pairs; return its run.json (``progress``: show the
    training and prediction bars, unless ``run.train`` turns them off)."""
    # imported here, in the worker: `stfusion study` imports this module for usable_cores alone
    from stfusion.data.datacube import open_cube
    from stfusion.data.splits import Splits
    from stfusion.train.config import train_config
    from stfusion.train.run import run_method

    config = train_config(run.settings, key=f"ablation.settings.{run.variant}")
    return run_method(run.model, open_cube(run.cube), Splits.load(run.splits), Path(run.out_dir) / run.variant,
                      seed=run.seed, config=config, tier=run.tier, checkpoint_dir=run.checkpoint_dir,
                      feature_encoder_path=run.feature_encoder, train_options={**run.train, "progress": progress and run.train.get("progress", True)},
                      extra={"variant": run.variant})


def usable_cores() -> list[int]:
    """The CPU cores this process may run on (its affinity where the OS has one)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def default_workers(runs: list[VariantRun]) -> int:
    """Worker processes for ``runs``: one per usable core on CPU (at most one per run); 0 (train in
    this process, one after another) when training uses CUDA or several devices."""
    from stfusion.train.fit import use_cuda  # Lightning: not for the study runner (see run_variant)

    options = runs[0].train if runs else {}
    if use_cuda(options.get("accelerator", "auto")) or options.get("devices", 1) != 1:
        return 0
    return max(1, min(len(runs), len(usable_cores())))


def _start_worker() -> None:
    """A worker trains on one thread, and quietly: its progress is the parent's bar."""
    import lightning.pytorch  # noqa: F401  (its import sets its loggers to INFO: quieten them after it)
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_ablation(runs: list[VariantRun], *, workers: int | None = None, progress: bool = True) -> dict[str, dict]:
    """Train every run; return {variant: run.json} in the order of ``runs``.

    ``workers``: None = :func:`default_workers`; 0 = one after another in this process (on CPU with
    this process's thread count, so the numbers may differ from a worker's); n >= 1 = n spawned
    single-thread processes. A variant that fails stops the study with an error naming it; the
    variants already written stay, and a rerun resumes unfinished ones from their checkpoints.
    """
    names = [run.variant for run in runs]
    if len(set(names)) != len(names):
        raise StfusionError(f"ablation: variants named more than once in {names}")
    workers = default_workers(runs) if workers is None else workers
    if workers < 0:
        raise StfusionError(f"ablation workers: expected an integer >= 0 (0 = in this process), got {workers}")
    label = f"{runs[0].model} ablation on {runs[0].dataset}" if runs else "ablation"
    with tqdm(total=len(runs), desc=label, unit="variant", disable=not progress) as bar:
        if workers == 0:
            records = {}
            for run in runs:
                records[run.variant] = _run_named(run)
                bar.update()
            return records
        return {name: record for name, record in zip(names, _in_workers(runs, workers, bar))}


def _run_named(run: VariantRun) -> dict[str, Any]:
    try:
        return run_variant(run)
    except Exception as err:
        raise _failure(run, err) from err


def _failure(run: VariantRun, err: BaseException) -> StfusionError:
    return StfusionError(f"ablation variant {run.variant!r} on {run.dataset} failed: {type(err).__name__}: {err}")


def _in_workers(runs: list[VariantRun], workers: int, bar) -> list[dict]:
    # spawn, not fork: the parent (a Jupyter kernel) has started torch's thread pools, and a forked
    # child would inherit them broken.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker) as pool:
        futures = {pool.submit(run_variant, run, False): run for run in runs}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                if future.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise _failure(futures[future], future.exception()) from future.exception()
                bar.update()
        return [future.result() for future in futures]
