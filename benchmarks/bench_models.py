"""Per deep model: training throughput at both tiers, full-scene inference time and peak memory.

    python benchmarks/bench_models.py [--repeats 5] [--paper-repeats 2] [--paper-batch 2]
                                      [--height 2040 --width 1720] [--models dcstfn ...]
                                      [--inference-tiers quick paper]

Training throughput is patches per second of full optimiser steps (forward, loss, backward, Adam;
GANs: discriminator and generator steps) at each tier's batch and patch size, median over
``--repeats`` steps (``--paper-repeats`` at paper tier) after one warm-up step, with the tier's real loss (a random frozen feature
encoder stands in for the trained one: same cost). A paper-tier step at the paper's batch takes
minutes on a CPU (DCSTFN: 12 x 256 px, about 100 s on 2 cores), so on CPU the paper tier is
measured at ``--paper-batch`` patches per step (the printed batch); patches per second hardly
depends on the batch once a batch fills the cores. Inference is ``stfusion.inference.tiling.predict_scene``
(for STFDiff: its DDIM sampling, ``uncertainty_samples`` times) on a synthetic CIA-size scene (2040 x 1720, 6 bands) with the tier's tile; peak memory is the
peak RSS of a fresh process on CPU (``resource``; the RSS
before prediction, inputs and model included, is printed beside it), or ``torch.cuda.max_memory_allocated`` on CUDA.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import resource
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from stfusion.pipeline.params import load_params
from stfusion.methods.models import AUTOENCODER, MODELS, build_autoencoder
from stfusion.inference.sampling import deep_predictor
from stfusion.train.config import tier_settings
from stfusion.train.fit import build_task
from stfusion.inference.weights import export_weights


def batch(config, device):
    g = torch.Generator().manual_seed(0)
    size = (config.batch_size, 6, config.patch_size, config.patch_size)
    fine = 0.05 + 0.3 * torch.rand(size, generator=g)
    return {"fine_ref": fine, "coarse_ref": fine.clone(), "coarse_target": fine + 0.01, "fine_target": fine + 0.01,
            "valid": torch.ones(size[0], 1, *size[2:])}


def training_rate(name, config, encoder, repeats, device) -> float:
    statistics_ = {"mean": [0.15] * 6, "std": [0.07] * 6}
    task = build_task(name, config, feature_encoder_path=encoder, statistics=statistics_)
    timings = []

    class Clock(L.Callback):
        def on_train_batch_start(self, *args):
            self.start = time.perf_counter()

        def on_train_batch_end(self, *args):
            timings.append(time.perf_counter() - self.start)

    # One epoch over repeats + 1 batches (max_steps would count each optimiser of a GAN separately).
    trainer = L.Trainer(max_epochs=1, accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                        precision="bf16-mixed" if device == "cuda" else "32-true", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Clock()])
    data = [batch(config, device)] * (repeats + 1)
    trainer.fit(task, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
    return config.batch_size / statistics.median(timings[1:])


def _inference_worker(name, config, height, width, device, queue) -> None:
    from stfusion.methods.models import build_model

    torch.manual_seed(0)
    model = build_model(name, config.arch)
    rng = np.random.default_rng(0)
    scene = [(0.05 + 0.3 * rng.random((6, height, width))).astype(np.float32) for _ in range(3)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    # STFDiff samples (DDIM steps of its tier, mean of uncertainty_samples draws); the rest one pass.
    deep_predictor(model, tile=config.tile, device=device, samples=config.uncertainty_samples)(*scene)
    seconds = time.perf_counter() - start
    if device == "cuda":
        queue.put((seconds, torch.cuda.max_memory_allocated() / 2**30, 0.0))
    else:
        queue.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, before))


def inference(name, config, height, width, device) -> tuple[float, float, float]:
    """(seconds, peak GiB, GiB before prediction), measured in a fresh process so that earlier models and
    the training measurements do not inflate the peak (ru_maxrss never goes down)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    worker = context.Process(target=_inference_worker, args=(name, config, height, width, device, queue))
    worker.start()
    result = queue.get()
    worker.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--paper-repeats", type=int, default=2)
    parser.add_argument("--paper-batch", type=int, default=2, help="CPU only: batch of the paper-tier steps")
    parser.add_argument("--height", type=int, default=2040)
    parser.add_argument("--width", type=int, default=1720)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--skip-paper-training", action="store_true", help="paper-tier steps are slow on CPU")
    parser.add_argument("--inference-tiers", nargs="*", default=["quick", "paper"], choices=["quick", "paper"],
                        help="tiers whose full-scene inference is measured (paper-tier STFDiff samples 8 x 10 "
                             "evaluations of a 7.5 M-parameter U-Net: about an hour on 2 CPU cores)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    params = load_params()
    print(f"device {device}, torch threads {torch.get_num_threads()}, scene {args.height} x {args.width}")
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        ae_arch = params["models"][AUTOENCODER]["paper"]["arch"]
        encoder = export_weights(Path(tmp) / "ae.pt", AUTOENCODER, build_autoencoder(ae_arch), ae_arch)
        print(f"{'model':10s} {'tier':6s} {'batch x patch':>14s} {'train patches/s':>16s} {'tile':>5s} "
              f"{'inference s':>12s} {'peak GiB':>9s} {'before GiB':>10s}")
        for name in args.models:
            for tier in ("quick", "paper"):
                config = tier_settings(params["models"], name, tier)
                repeats = args.repeats
                if tier == "paper":
                    repeats = args.paper_repeats
                    if device == "cpu":
                        config = dataclasses.replace(config, batch_size=min(config.batch_size, args.paper_batch))
                rate = (float("nan") if tier == "paper" and args.skip_paper_training
                        else training_rate(name, config, encoder, repeats, device))
                if tier in args.inference_tiers:
                    seconds, peak, before = inference(name, config, args.height, args.width, device)
                else:
                    seconds = peak = before = float("nan")
                print(f"{name:10s} {tier:6s} {config.batch_size:>6d} x {config.patch_size:<5d} {rate:>16.3f} "
                      f"{config.tile:>5d} {seconds:>12.1f} {peak:>9.2f} {before:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
