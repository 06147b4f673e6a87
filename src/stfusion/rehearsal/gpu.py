"""``stfusion gpu-check``: what ``make full`` needs from a GPU, checked in minutes before hours are rented.

On a small synthetic scene, every model at its paper tier trains a few optimiser steps through the
study's own training code (bf16 autocast, channels-last) and then predicts a CIA-size scene in tiles;
STARFM, FSDAF and the metrics run on CUDA and on the CPU and must agree; one training runs under
``torchrun`` with Lightning's DDP. It prints throughput and peak GPU memory per model, writes them to
``gpu-check.json``, and from them the estimated GPU hours of ``make full`` (stfusion.rehearsal.estimate).
Without CUDA it stops at once with an error.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from stfusion.data.datacube import cube_ratio
from stfusion.data.preprocess import preprocess_dataset
from stfusion.data.synthetic import generate_dataset, synthetic_config
from stfusion.errors import StfusionError
from stfusion.evaluation.metrics import compute_metrics
from stfusion.inference.sampling import deep_predictor
from stfusion.inference.weights import export_weights
from stfusion.io import write_json
from stfusion.methods.baselines.estarfm import predict_estarfm
from stfusion.methods.baselines.fsdaf import predict_fsdaf
from stfusion.methods.baselines.starfm import predict_starfm
from stfusion.methods.models import AUTOENCODER, MODELS, get_model_spec
from stfusion.paths import code_root
from stfusion.pipeline.profiles import profile_params
from stfusion.rehearsal import estimate
from stfusion.train.config import tier_settings
from stfusion.train.distributed import train_distributed
from stfusion.train.fit import train_model
from stfusion.units import to_reflectance

STEPS = 6
"""Optimiser steps per model; the first (cuDNN's autotuning, the allocator's warm-up) is not timed."""
SCENE = (2040, 1720)
"""CIA's fine grid: every model predicts a scene this size in its paper tier's tiles."""
CROP = 400
"""Side of the crop STARFM and FSDAF run on, on each device (FSDAF's CPU run takes seconds there)."""
TOLERANCE = {"starfm": 1e-4, "fsdaf": 1e-3, "estarfm": 1e-4, "metrics": 1e-6}
"""ESTARFM's is on the 99.9th percentile of |difference|: its float32 similarity scores may order a near
tie differently on the two devices, which changes a few pixels' similar pixels (not a defect)."""
"""Largest difference allowed between CUDA and CPU: reflectance for the methods (float32 sums in
another order; FSDAF's k-means and regressions amplify them), relative for the metrics (float64)."""


def require_cuda() -> torch.device:
    if not torch.cuda.is_available():
        raise StfusionError(f"gpu-check: no CUDA device (torch {torch.__version__}, built for CUDA "
                            f"{torch.version.cuda or 'none'}); run it on a machine with an NVIDIA GPU")
    return torch.device("cuda")


def small_cube(folder: Path, patch: int):
    """A synthetic CIA-like training scene with room for ``patch`` px patches (and 6 dates for the splits)."""
    side = -(-(patch + 128) // 20) * 20  # a multiple of the ratio
    scene = {"height": side, "width": side, "n_dates": 6, "seed": 11}
    raw = generate_dataset("cia-sim", folder / "raw", synthetic_config("cia-sim", scene))
    return preprocess_dataset(raw.folder, folder / "processed", {"n_test": 1, "n_val": 1})


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float:
    """Peak memory allocated on the GPU since the last reset (on CPU: the process's peak RSS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


class StepClock(L.Callback):
    """Seconds per optimiser step, the GPU synchronised at both ends."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, []

    def on_train_batch_start(self, *args):
        _synchronize(self.device)
        self.start = time.perf_counter()

    def on_train_batch_end(self, *args):
        _synchronize(self.device)
        self.seconds.append(time.perf_counter() - self.start)


def check_config(name: str, tier: str = "paper", steps: int = STEPS):
    """``name``'s settings in the full profile at ``tier``, cut to ``steps`` steps of one epoch."""
    config = tier_settings(profile_params(code_root(), "full")["models"], name, tier)
    return dataclasses.replace(config, epochs=1, steps_per_epoch=steps, val_patches=config.batch_size)


def scene_inputs(scene: tuple[int, int], bands: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    fine = (0.05 + 0.3 * rng.random((bands, *scene))).astype(np.float32)
    return [fine, fine + 0.01, fine + 0.02]


def check_model(name: str, config, cube, splits, work: Path, encoder: Path | None, *, device: torch.device,
                scene: tuple[int, int] = SCENE) -> dict[str, Any]:
    """Train ``name`` a few steps through the study's training code and predict a ``scene`` with it."""
    clock = StepClock(device)
    _reset_peak(device)
    result = train_model(name, cube, splits, config, seed=0, checkpoint_dir=work / "checkpoints" / name,
                         feature_encoder_path=encoder, accelerator="gpu" if device.type == "cuda" else "cpu",
                         progress=False, callbacks=[clock])
    step = statistics.median(clock.seconds[1:])
    row = {"model": name, "batch": config.batch_size, "patch": config.patch_size, "step_s": step,
           "patches_per_s": config.batch_size / step, "train_peak_gib": _peak_gib(device)}
    if name == AUTOENCODER:
        export_weights(work / "autoencoder.pt", AUTOENCODER, result.model, config.arch, dataset="gpu-check", seed=0)
        return row
    _reset_peak(device)
    predict = deep_predictor(result.model, tile=config.tile, device=str(device), samples=config.uncertainty_samples)
    start = time.perf_counter()
    output = predict(*scene_inputs(scene))
    prediction = output["prediction"] if isinstance(output, dict) else output
    row.update(scene_s=time.perf_counter() - start, scene=list(scene), tile=config.tile,
               samples=max(1, config.uncertainty_samples), scene_peak_gib=_peak_gib(device),
               finite=bool(np.isfinite(prediction).all() and prediction.shape == (6, *scene)))
    return row


def check_baselines(cube, splits, device: torch.device, side: int = CROP) -> list[dict[str, Any]]:
    """STARFM, FSDAF, ESTARFM and the metrics on ``device`` against the CPU, on a ``side`` px crop of the test pair."""
    ref, target = splits.test[0]
    crop = (slice(None), slice(0, side), slice(0, side))
    pick = lambda name, date: to_reflectance(cube[name].sel(time=date).values[crop])  # noqa: E731
    fine, coarse, coarse_t, truth = pick("fine", ref), pick("coarse", ref), pick("coarse", target), pick("fine", target)
    runs = {"starfm": lambda d: predict_starfm(fine, coarse, coarse_t, device=d),
            "fsdaf": lambda d: predict_fsdaf(fine, coarse, coarse_t, ratio=cube_ratio(cube), device=d)}
    if splits.brackets:  # ESTARFM: the pairs around the first bracketed test target
        target, before, after = splits.brackets[0]
        two = lambda name: np.stack([pick(name, before), pick(name, after)])  # noqa: E731
        runs["estarfm"] = lambda d: predict_estarfm(two("fine"), two("coarse"), pick("coarse", target), device=d)
    rows, out = [], {}
    for name, run in runs.items():
        seconds = {}
        for where in dict.fromkeys(("cpu", device.type)):
            start = time.perf_counter()
            out[name, where] = run(torch.device(where))
            seconds[where] = time.perf_counter() - start
        gap = np.abs(out[name, "cpu"] - out[name, device.type])
        difference = float(np.nanpercentile(gap, 99.9) if name == "estarfm" else np.nanmax(gap))
        rows.append({"check": name, "max_difference": difference, "tolerance": TOLERANCE[name],
                     "cpu_s": seconds["cpu"], f"{device.type}_s": seconds[device.type], "ok": difference <= TOLERANCE[name]})
    prediction = np.nan_to_num(out["fsdaf", "cpu"])
    scores = {where: compute_metrics(prediction, truth, device=where)["all"] for where in ("cpu", device.type)}
    worst = max(abs(scores["cpu"][m][b] - scores[device.type][m][b]) / max(abs(scores["cpu"][m][b]), 1e-12)
                for m in scores["cpu"] for b in scores["cpu"][m] if np.isfinite(scores["cpu"][m][b]))
    rows.append({"check": "metrics", "max_difference": worst, "tolerance": TOLERANCE["metrics"],
                 "ok": worst <= TOLERANCE["metrics"]})
    return rows


def check_ddp(work: Path, cube, splits, tier: str, device: torch.device, name: str = "dcstfn",
              encoder: Path | None = None) -> dict[str, Any]:
    """One training of ``name`` under torchrun, as the study runs it: a process per visible GPU (on CPU: one).
    DCSTFN, and GAN-STFM for the GANs' two backward passes per step (DDP once stopped them at their first)."""
    processes = torch.cuda.device_count() if device.type == "cuda" else 1
    check = "ddp" if name == "dcstfn" else f"ddp-{name}"
    start = time.perf_counter()
    try:
        report = train_distributed(name, cube, splits, check_config(name, tier), seed=0,
                                   checkpoint_dir=work / "checkpoints" / check, devices=processes,
                                   feature_encoder_path=encoder, accelerator="gpu" if device.type == "cuda" else "cpu")
    except StfusionError as err:
        return {"check": check, "processes": processes, "ok": False, "error": str(err)}
    return {"check": check, "processes": processes, "seconds": time.perf_counter() - start,
            "ok": report["ranks_agree"], "world_size": report["world_size"]}


def gpu_check(out: Path, *, models: list[str] | None = None, device: str = "cuda", tier: str = "paper",
              steps: int = STEPS, scene: tuple[int, int] = SCENE, crop: int = CROP) -> Path:
    """Run every check; write ``out/gpu-check.json`` and return it. Raises if any check fails.
    (``device="cpu"`` with the quick tier and a small scene runs the same code in the tests.)"""
    where = require_cuda() if device == "cuda" else torch.device(device)
    names = models or [AUTOENCODER, *MODELS]
    with tempfile.TemporaryDirectory(prefix="stfusion-gpu-check-") as scratch:
        work = Path(scratch)
        configs = {name: check_config(name, tier, steps) for name in dict.fromkeys([*names, "dcstfn"])}
        cube, splits = small_cube(work, max(config.patch_size for config in configs.values()))
        rows = []
        for name in names:
            needs = name != AUTOENCODER and get_model_spec(name).feature_encoder
            print(f"gpu-check: {name} ({tier} tier) trains {steps} steps, then predicts a {scene[0]} x {scene[1]} scene",
                  flush=True)
            rows.append(check_model(name, configs[name], cube, splits, work,
                                    work / "autoencoder.pt" if needs else None, device=where, scene=scene))
        checks = [*check_baselines(cube, splits, where, crop), check_ddp(work, cube, splits, tier, where)]
        if (work / "autoencoder.pt").exists():  # GAN-STFM's loss needs the autoencoder trained above
            checks.append(check_ddp(work, cube, splits, tier, where, "gan-stfm", work / "autoencoder.pt"))
    report = {"device": torch.cuda.get_device_name() if where.type == "cuda" else "cpu", "torch": torch.__version__,
              "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d"), "tier": tier, "models": rows,
              "checks": checks}
    path = write_json(Path(out) / "gpu-check.json", report)
    print(summary(report), flush=True)
    if tier == "paper":
        full = profile_params(code_root(), "full")
        costs = estimate.gpu_costs(report, full)
        print("estimated time of `make full` on this GPU (training and deep-model inference; "
              "the CPU-bound stages are not measured here):", flush=True)
        print(estimate.summary(estimate.estimate(full, costs, estimate.full_scenes(full)), report["device"]), flush=True)
    failed = [r["model"] for r in rows if not r.get("finite", True)] + [c["check"] for c in checks if not c["ok"]]
    if failed:
        raise StfusionError(f"gpu-check: failed: {', '.join(failed)} (details in {path})")
    return path


def summary(report: dict[str, Any]) -> str:
    lines = [f"gpu-check on {report['device']} (torch {report['torch']}, CUDA {report['cuda']}), {report['tier']} tier:",
             "| model | batch x patch | patches/s | train peak GiB | scene s | scene peak GiB |", "|---|---|---|---|---|---|"]
    for r in report["models"]:
        lines.append(f"| {r['model']} | {r['batch']} x {r['patch']} | {r['patches_per_s']:.2f} | {r['train_peak_gib']:.2f} | "
                     f"{r.get('scene_s', float('nan')):.1f} | {r.get('scene_peak_gib', float('nan')):.2f} |")
    for c in report["checks"]:
        lines.append(f"{c['check']}: {'ok' if c['ok'] else 'FAILED'} "
                     + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in c.items()
                                 if k not in ("check", "ok")))
    return "\n".join(lines)
