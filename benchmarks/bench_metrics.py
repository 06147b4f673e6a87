"""Speed of the metrics: every metric, per band and overall, in three regions, on one scene.

Prints the median of several repeats (machines are noisy) and the throughput in megapixels per
second, on the CPU and, when present, on the GPU. Default size: a real LGC scene (2720 x 3200).
Usage: python benchmarks/bench_metrics.py [--height 2720 --width 3200 --bands 6 --repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from stfusion.evaluation.metrics import compute_metrics


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=2720)
    parser.add_argument("--width", type=int, default=3200)
    parser.add_argument("--bands", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    observed = rng.uniform(0.02, 0.5, (args.bands, args.height, args.width)).astype(np.float32)
    prediction = observed + rng.normal(0, 0.02, observed.shape).astype(np.float32)
    changed = np.zeros(observed.shape[1:], bool)
    changed[: args.height // 10] = True
    regions = {"all": np.ones_like(changed), "changed": changed, "unchanged": ~changed}
    megapixels = args.height * args.width / 1e6
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"scene {args.bands} x {args.height} x {args.width} ({megapixels:.1f} Mpx), 3 regions, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for device in devices:
        seconds = timed(lambda: compute_metrics(prediction, observed, regions=regions, device=device), args.repeats)
        print(f"{device:5s} median {seconds:7.2f} s   {megapixels / seconds:6.2f} Mpx/s")


if __name__ == "__main__":
    main()
