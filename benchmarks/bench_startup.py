"""Wall time of `stfusion fuse` from the command line on a small scene, where start-up is most of the cost.

Writes a 480 x 480 x 3 int16 scene (fine reference, coarse reference, coarse target: the size of the real
Landsat crop of issue #14) and runs `stfusion fuse --method M` on it in a fresh process `--runs` times per
method, printing the median, minimum and maximum wall time, and the import time of the fuse command's
modules alone. `--src` runs another checkout's code (its src/ folder) instead of this one's, for a before and
after on the same machine: run the script twice and compare the medians.
Usage: python benchmarks/bench_startup.py [--runs 7 --methods temporal-difference starfm fsdaf --src ../old/src]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_large_fuse import write_scene

SIZE, BANDS = 480, 3
OPTIONS = {"starfm": ["--window", "31"], "fsdaf": ["--ratio", "16"]}  # 480 m coarse pixels over 30 m fine ones


def timed(command: list[str], env: dict[str, str], runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds.append(time.perf_counter() - start)
    return seconds


def line(label: str, seconds: list[float]) -> str:
    return (f"{label:34s} median {statistics.median(seconds):6.2f} s   min {min(seconds):6.2f}   "
            f"max {max(seconds):6.2f}   ({len(seconds)} runs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--methods", nargs="+", default=["temporal-difference", "starfm", "fsdaf"])
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src",
                        help="the src/ folder whose code runs (default: this checkout's)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(args.src.resolve()), "PYTHONDONTWRITEBYTECODE": "1"}
    print(f"code: {args.src.resolve()}; scene {SIZE} x {SIZE} x {BANDS} int16")
    print(line("import stfusion.inference.fuse",
               timed([sys.executable, "-c", "import stfusion.inference.fuse"], env, args.runs)))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for seed, name in enumerate(("fine_ref", "coarse_ref", "coarse_target")):
            write_scene(folder / f"{name}.tif", SIZE, BANDS, seed)
        for method in args.methods:
            command = [sys.executable, "-m", "stfusion.cli", "fuse", "--method", method, *OPTIONS.get(method, []),
                       "--fine-ref", str(folder / "fine_ref.tif"), "--coarse-ref", str(folder / "coarse_ref.tif"),
                       "--coarse-target", str(folder / "coarse_target.tif"), "--out", str(folder / "out.tif"),
                       "--overwrite"]
            print(line(f"fuse --method {method}", timed(command, env, args.runs)))


if __name__ == "__main__":
    main()
