"""Time and peak memory against scene size: STARFM, FSDAF and a deep model's tiled inference.

Each (method, size) runs in its own child process on square scenes of 6 bands (sides 1024, 2048 and 4096:
1, 4 and 16 Mpx), so the peak RSS printed is that setting's alone. The inputs are random reflectance (a
fine reference, its coarse image and the target's, all on the fine grid): what is measured is how the cost
grows, which must be linear in the pixels (s/Mpx flat) with memory growing no faster than the inputs. The
deep model is DCSTFN at the quick tier, untrained (its speed does not depend on its weights), predicted in
512 px tiles as the study does.
Usage: python benchmarks/bench_scaling.py [--sides 1024 2048 4096 --methods starfm fsdaf dcstfn]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import resource
import time
import warnings

import numpy as np

BANDS, RATIO = 6, 16


def inputs(side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    fine = rng.uniform(0.02, 0.5, (BANDS, side, side)).astype(np.float32)
    coarse = fine + rng.normal(0, 0.01, fine.shape).astype(np.float32)
    return fine, coarse, coarse + np.float32(0.02)


def run(method: str, side: int) -> tuple[float, int]:
    """In a child process: seconds of one prediction and the process's peak RSS (MiB)."""
    warnings.simplefilter("ignore")  # STARFM's count of filled pixels: not what is measured here
    fine, coarse, target = inputs(side)
    if method == "dcstfn":
        from stfusion.inference.tiling import predict_scene
        from stfusion.methods.models import build_model

        model = build_model("dcstfn", {"channels": [32, 48, 64]}).eval()
        predict = lambda: predict_scene(model, fine, coarse, target, tile=512)  # noqa: E731
    else:
        from stfusion.methods.registry import get_method

        function = get_method(method).predict
        predict = lambda: function(fine, coarse, target, ratio=RATIO)  # noqa: E731
    start = time.perf_counter()
    predict()
    return time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--methods", nargs="+", default=["starfm", "fsdaf", "dcstfn"])
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    print(f"{'method':8s} {'Mpx':>5s} {'seconds':>8s} {'s/Mpx':>6s} {'peak RSS':>9s} {'inputs':>7s}")
    for method in args.methods:
        for side in args.sides:
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
                seconds, rss = pool.submit(run, method, side).result()
            mpx = side * side / 1e6
            print(f"{method:8s} {mpx:5.1f} {seconds:8.1f} {seconds / mpx:6.2f} {rss:6d} MiB "
                  f"{3 * BANDS * side * side * 4 / 2**20:4.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
