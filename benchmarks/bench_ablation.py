"""Why the ablation stage trains its variants side by side: one process on every core against one
single-thread process per core, training the same quick-tier model at the same time.

    python benchmarks/bench_ablation.py [--model mcbam-gan] [--steps 20] [--rounds 3] [--processes N]

Each measurement runs in fresh spawned processes: training throughput (patches per second of full
optimiser steps, median over ``--steps`` steps after one warm-up; ``bench_models.training_rate``)
of the model's quick tier, on synthetic patches, with a random frozen feature encoder (same cost
as the trained one). "alone" is one process with torch's default thread count (every core);
"side by side" is ``--processes`` (default: every core) single-thread processes started together,
whose rates add up. Printed per round, then the medians and their ratio.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
from pathlib import Path

import torch


def _rate(name: str, encoder: str, steps: int, threads: int | None, start, queue) -> None:
    from bench_models import training_rate

    from stfusion.pipeline.params import load_params
    from stfusion.train.config import tier_settings

    if threads:
        torch.set_num_threads(threads)
    config = tier_settings(load_params()["models"], name, "quick")
    start.wait()  # side-by-side processes begin their steps together
    queue.put(training_rate(name, config, encoder, steps, "cpu"))


def measure(name: str, encoder: str, steps: int, processes: int, threads: int | None) -> float:
    """Total patches per second of ``processes`` processes training at once (``threads`` each; None: default)."""
    context = multiprocessing.get_context("spawn")
    start, queue = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_rate, args=(name, encoder, steps, threads, start, queue))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    rates = [queue.get() for _ in workers]
    for worker in workers:
        worker.join()
    return sum(rates)


def main() -> None:
    from stfusion.pipeline.params import load_params
    from stfusion.methods.models import AUTOENCODER, build_autoencoder
    from stfusion.inference.weights import export_weights

    cores = len(os.sched_getaffinity(0))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mcbam-gan")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=cores)
    args = parser.parse_args()
    print(f"{args.model} quick tier, {cores} cores, torch default threads {torch.get_num_threads()}, "
          f"{args.steps} steps per measurement")
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        arch = load_params()["models"][AUTOENCODER]["quick"]["arch"]
        encoder = str(export_weights(Path(tmp) / "ae.pt", AUTOENCODER, build_autoencoder(arch), arch))
        alone, side = [], []
        for round_ in range(1, args.rounds + 1):
            alone.append(measure(args.model, encoder, args.steps, 1, None))
            side.append(measure(args.model, encoder, args.steps, args.processes, 1))
            print(f"round {round_}: alone {alone[-1]:.1f} patches/s, {args.processes} side by side "
                  f"{side[-1]:.1f} patches/s", flush=True)
    a, s = statistics.median(alone), statistics.median(side)
    print(f"median: alone {a:.1f} patches/s, side by side {s:.1f} patches/s, ratio {s / a:.2f}")


if __name__ == "__main__":
    main()
