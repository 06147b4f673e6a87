"""Speed of STARFM (``predict_starfm``) on a synthetic CIA-size scene: 6 bands, one reference pair.

The inputs are a real cia-sim scene from ``stfusion.data.synthetic`` (fields, roads, a coarse sensor
model; date 1 = the pair, date 2 = the target), generated in a child process so that the peak RSS
printed is this process's: reading the images plus STARFM. Prints the median of several repeats (machines
are noisy), the peak RSS and the device. Default: the full CIA grid (2040 x 1720), the C code's
60 x 60 window. On the CPU, `--paths fused torch` times the fused Numba kernel and the torch path in
alternation (each at its own default tile unless --tile), checks that they give the same bits, and prints
the ratio of the medians.
Usage: python benchmarks/bench_starfm.py [--height 2040 --width 1720 --repeats 3 --tile 512 --device cpu
                                          --paths fused torch]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from stfusion.methods.baselines import starfm
from stfusion.methods.baselines.starfm import StarfmParams, predict_starfm
from stfusion.data.datacube import valid_mask
from stfusion.data.manifest import Manifest
from stfusion.data.raster import read_geotiff
from stfusion.data.synthetic import generate_dataset, synthetic_config
from stfusion.units import to_reflectance


def generate(folder: str, height: int, width: int, n_dates: int = 2) -> None:
    generate_dataset("cia-sim", folder, synthetic_config("cia-sim", {"height": height, "width": width, "n_dates": n_dates}))


def generate_in_child(folder: Path, height: int, width: int, n_dates: int = 2) -> None:
    """A cia-sim scene in ``folder``, generated in a child process so this process's peak RSS is the method's."""
    start = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(generate, str(folder), height, width, n_dates).result()
    print(f"generated cia-sim {height} x {width} x 6 bands in {time.perf_counter() - start:.1f} s (child process)")


def time_prediction(run, device: torch.device, repeats: int, height: int, width: int, digits: int = 3) -> None:
    """Time ``run()`` (a prediction) ``repeats`` times; print each run, the median, the rate and the peak RSS."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        prediction = run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        print(f"  run {len(times)}: {times[-1]:.1f} s")
    megapixels = height * width / 1e6
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(f"median {statistics.median(times):.1f} s for {megapixels:.2f} Mpx x 6 bands "
          f"({megapixels / statistics.median(times):.{digits}f} Mpx/s); peak RSS {peak:.2f} GiB; "
          f"{np.isfinite(prediction).mean():.1%} of the values predicted")


def load(folder: Path) -> dict[str, np.ndarray]:
    manifest = Manifest.load(folder)
    ref, target = manifest.date_list()
    raw = {"fine_refs": read_geotiff(manifest.file(ref, "fine")).data,
           "coarse_refs": read_geotiff(manifest.file(ref, "coarse")).data,
           "coarse_target": read_geotiff(manifest.file(target, "coarse")).data}
    inputs = {name: to_reflectance(data) for name, data in raw.items()}
    inputs["valid"] = np.logical_and.reduce([valid_mask(data) for data in raw.values()])
    return inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=2040)
    parser.add_argument("--width", type=int, default=1720)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tile", type=int, default=None, help="tile side in pixels (default: the module's)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--symmetric", action="store_true", help="61 x 61 window instead of the C code's 60 x 60")
    parser.add_argument("--paths", nargs="+", choices=["fused", "torch"], default=["fused"],
                        help="on the CPU: the fused kernel (default) and/or the torch path, timed in alternation")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cia-sim"
        generate_in_child(folder, args.height, args.width)
        inputs = load(folder)
    params = StarfmParams(symmetric_window=args.symmetric)
    device = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    side = len(params.offsets)
    print(f"STARFM {side} x {side} window, device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"tile {args.tile or 'default'}")
    if device.type == "cuda" or args.paths == ["fused"]:
        time_prediction(lambda: predict_starfm(**inputs, ratio=20, params=params, device=device, tile=args.tile),
                        device, args.repeats, args.height, args.width)
    else:
        compare_paths(inputs, params, args)


PATHS = {"fused": (starfm._accumulate_fused, 512), "torch": (starfm._accumulate, 256)}
"""The CPU accumulation of each path and the tile it was fastest at on 2 cores."""


def alternate(runs: dict, repeats: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Each of ``runs`` (name: a prediction) in turn, ``repeats`` times, printing every time and then the
    medians (these machines drift, so alternation keeps the comparison fair). Returns the medians and outputs."""
    times, outputs = {name: [] for name in runs}, {}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            outputs[name] = run()
            times[name].append(time.perf_counter() - start)
            print(f"  {name}: {times[name][-1]:.1f} s")
    medians = {name: statistics.median(seconds) for name, seconds in times.items()}
    for name, median in medians.items():
        print(f"{name}: median {median:.1f} s (runs: {', '.join(f'{t:.1f}' for t in times[name])})")
    return medians, outputs


def compare_paths(inputs: dict, params: StarfmParams, args: argparse.Namespace) -> None:
    """Each path in turn, ``repeats`` times; the medians, their ratio, and whether the outputs are identical."""
    def run(path: str):
        def predict() -> np.ndarray:
            starfm.ACCUMULATE["cpu"], tile = PATHS[path]
            return predict_starfm(**inputs, ratio=20, params=params, device="cpu", tile=args.tile or tile)
        return predict

    try:
        medians, outputs = alternate({path: run(path) for path in args.paths}, args.repeats)
    finally:
        starfm.ACCUMULATE["cpu"] = starfm._accumulate_fused
    if len(medians) == 2:
        print(f"torch / fused: {medians['torch'] / medians['fused']:.2f}x; identical outputs: "
              f"{np.array_equal(outputs['fused'], outputs['torch'], equal_nan=True)}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {peak:.2f} GiB (both paths in one process)")

if __name__ == "__main__":
    main()
