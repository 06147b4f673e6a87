"""Speed and memory of tiled inference (``stfusion.inference.tiling.predict_scene``) on a CIA-size scene.

A small conv model (replicate padding, three 3x3 convs of 16 channels, receptive field 3) on random
6-band inputs of the full CIA grid (2040 x 1720). Each tile size runs in its own child process, so the
peak RSS printed is that of one setting: inputs (3 x 84 MB), the output accumulators and the windows.
Prints the median time of several repeats (machines are noisy), the number of windows and the device.
Usage: python benchmarks/bench_tiling.py [--height 2040 --width 1720 --tiles 256 512 1024 --repeats 3 --device cpu]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import resource
import statistics
import time

import numpy as np
import torch
from torch import nn

from stfusion.inference.tiling import predict_scene, tile_windows
from stfusion.methods.models.base import FusionModel, ModelTraits

BANDS = 6


class SmallConvNet(FusionModel):
    traits = ModelTraits(receptive_field=3)

    def __init__(self, width: int = 16):
        super().__init__()
        self.body = nn.Sequential(nn.ReplicationPad2d(3), nn.Conv2d(3 * BANDS, width, 3), nn.ReLU(),
                                  nn.Conv2d(width, width, 3), nn.ReLU(), nn.Conv2d(width, BANDS, 3))

    def forward(self, fine_ref, coarse_ref, coarse_target):
        return coarse_target + self.body(torch.cat([fine_ref, coarse_ref, coarse_target], dim=1))


def measure(height: int, width: int, tile: int, repeats: int, device: str | None) -> tuple[list[float], int, str]:
    """In a child process: times of each repeat, peak RSS (MiB), and the device used."""
    torch.manual_seed(0)
    model = SmallConvNet()
    rng = np.random.default_rng(0)
    arrays = [rng.uniform(0, 0.5, (BANDS, height, width)).astype(np.float32) for _ in range(3)]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict_scene(model, *arrays, tile=tile, device=device)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    used = str(next(model.parameters()).device)
    return times, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=2040)
    parser.add_argument("--width", type=int, default=1720)
    parser.add_argument("--tiles", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    print(f"scene {BANDS} x {args.height} x {args.width}, torch threads {torch.get_num_threads()}")
    for tile in args.tiles:
        windows = len(tile_windows(args.height, args.width, tile=tile, margin=SmallConvNet.traits.receptive_field,
                                   blend=16, alignment=1))
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            times, rss, device = pool.submit(measure, args.height, args.width, tile, args.repeats,
                                             args.device).result()
        print(f"tile {tile:5d}: {windows:4d} windows, median {statistics.median(times):7.2f} s "
              f"(of {args.repeats}), peak RSS {rss} MiB, device {device}")


if __name__ == "__main__":
    main()
