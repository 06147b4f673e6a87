"""Speed and memory of FSDAF (stfusion.methods.baselines.fsdaf) on a synthetic CIA-like scene.

Generates a cia-sim scene with two dates (in a child process, so its memory does not count), reads
the fine and coarse images of the first date and the coarse image of the second, and times
``predict_fsdaf`` (ratio 20, default parameters). Prints the median of ``--repeats`` runs in total
and per step, the peak RSS of this process (reading + FSDAF), the device, and as a sanity check the RMSE
against the true fine image at the second date (with the two reference predictors for scale). On the CPU,
`--paths fused tiled` runs step 7 with the fused Numba kernel and with the torch tiles in alternation, checks
that they give the same bits, and prints the ratio of the medians.
Usage: python benchmarks/bench_fsdaf.py [--height 2040 --width 1720 --repeats 3 --paths fused tiled]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from stfusion.methods.baselines import fsdaf
from stfusion.methods.baselines.fsdaf import predict_fsdaf
from stfusion.data.datacube import read_image, valid_mask
from stfusion.data.manifest import Manifest
from stfusion.units import to_reflectance

GENERATE = """
import sys
from stfusion.data.synthetic import generate_dataset, synthetic_config
h, w, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
generate_dataset("cia-sim", folder, synthetic_config("cia-sim", {"height": h, "width": w, "n_dates": 2}))
"""


def load_pair(folder: Path) -> tuple[np.ndarray, ...]:
    """fine and coarse at the first date, coarse and fine (truth) at the second, and the mask valid in all."""
    manifest = Manifest.load(folder)
    t1, t2 = manifest.date_list()[:2]
    roles = ((t1, "fine"), (t1, "coarse"), (t2, "coarse"), (t2, "fine"))
    raw = [read_image(manifest, d, role).data for d, role in roles]
    valid = np.logical_and.reduce([valid_mask(r) for r in raw])
    return (*(to_reflectance(r) for r in raw), valid)


PATHS = {"fused": fsdaf._filter_fused, "tiled": fsdaf._filter_tiled}
"""Step 7 on the CPU: the fused kernel or the torch path (CUDA's) in tiles."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=2040)
    parser.add_argument("--width", type=int, default=1720)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=["fused"],
                        help="on the CPU: step 7 fused (default) and/or in torch tiles, timed in alternation")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cia-sim"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", GENERATE, str(args.height), str(args.width), str(folder)], check=True)
        print(f"generated cia-sim {args.height}x{args.width}, 2 dates in {time.perf_counter() - start:.1f} s")
        fine, coarse_ref, coarse_target, truth, valid = load_pair(folder)
    device = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device} ({torch.get_num_threads()} CPU threads); {fine.shape[0]} bands, "
          f"{valid.mean():.1%} valid pixels")

    paths = ["cuda"] if device.type == "cuda" else args.paths
    totals, steps, outputs = {path: [] for path in paths}, {path: {} for path in paths}, {}
    try:
        for _ in range(args.repeats):
            for path in paths:
                fsdaf.FILTER["cpu"] = PATHS.get(path, fsdaf._filter_fused)
                timings: dict[str, float] = {}
                start = time.perf_counter()
                outputs[path] = predict_fsdaf(fine, coarse_ref, coarse_target, valid=valid, ratio=20, device=device,
                                              timings=timings)
                totals[path].append(time.perf_counter() - start)
                for step, seconds in timings.items():
                    steps[path].setdefault(step, []).append(seconds)
    finally:
        fsdaf.FILTER["cpu"] = fsdaf._filter_fused
    for path in paths:
        print(f"{path}:")
        for step, seconds in steps[path].items():
            print(f"  step {step:<28} median {statistics.median(seconds):7.2f} s")
        print(f"  predict_fsdaf total: median {statistics.median(totals[path]):.1f} s over {args.repeats} runs "
              f"(runs: {', '.join(f'{t:.1f}' for t in totals[path])})")
    if len(paths) == 2:
        step7 = {path: statistics.median(steps[path]["7 similar-pixel filtering"]) for path in paths}
        print(f"tiled / fused: step 7 {step7['tiled'] / step7['fused']:.2f}x, total "
              f"{statistics.median(totals['tiled']) / statistics.median(totals['fused']):.2f}x; identical outputs: "
              f"{np.array_equal(outputs['fused'], outputs['tiled'], equal_nan=True)}")
    out = outputs[paths[0]]
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    print(f"peak RSS {peak_gb:.2f} GB (reading + FSDAF)")
    if device.type == "cuda":
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GB")

    def rmse(prediction: np.ndarray) -> float:  # sanity check of the output against the true fine t2 image
        return round(float(np.sqrt(np.mean((prediction[:, valid] - truth[:, valid]) ** 2))), 5)

    print(json.dumps({"rmse fsdaf": rmse(out), "rmse temporal-difference": rmse(fine + coarse_target - coarse_ref),
                      "rmse persistence": rmse(fine), "nan share": round(float(np.isnan(out).mean()), 4)}))


if __name__ == "__main__":
    main()
