"""Speed of the data layer: scene generation, datacube build, and patch sampling.

Prints the median of several repeats (machines are noisy) and the sampler's throughput.
Usage: python benchmarks/bench_data.py [--height 320 --width 280 --dates 10 --repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from stfusion.data.datacube import build_cube
from stfusion.data.manifest import Manifest
from stfusion.data.samplers import PairPatchDataset
from stfusion.data.splits import make_splits
from stfusion.data.synthetic import generate_dataset, synthetic_config


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cia-sim", choices=["cia-sim", "lgc-sim"])
    parser.add_argument("--height", type=int, default=320)
    parser.add_argument("--width", type=int, default=280)
    parser.add_argument("--dates", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--patch", type=int, default=64)
    args = parser.parse_args()
    config = synthetic_config(args.dataset, {"height": args.height, "width": args.width, "n_dates": args.dates})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / args.dataset
        seconds, _ = timed(lambda: generate_dataset(args.dataset, folder, config), args.repeats)
        print(f"generate {args.dataset} {args.height}x{args.width}x{args.dates} dates: median {seconds:.2f} s")
        manifest = Manifest.load(folder)
        seconds, _ = timed(manifest.verify, args.repeats)
        print(f"verify manifest (SHA-256 of every file): median {seconds:.3f} s")
        seconds, cube = timed(lambda: build_cube(manifest, progress=False), args.repeats)
        print(f"build datacube: median {seconds:.2f} s, {cube.nbytes / 2**20:.1f} MiB in memory")
    splits = make_splits(args.dataset, manifest.date_list())
    data = PairPatchDataset(cube, splits.train, patch_size=args.patch, samples_per_epoch=512, seed=0)
    seconds, _ = timed(lambda: [data[i] for i in range(len(data))], args.repeats)
    print(f"sampler: {len(data) / seconds:.0f} patches/s of {args.patch}x{args.patch} (median of {args.repeats})")


if __name__ == "__main__":
    main()
