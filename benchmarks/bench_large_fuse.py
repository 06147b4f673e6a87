"""Memory of `stfusion fuse` on a scene larger than memory: 10,000 x 10,000 x 6 bands by default.

Writes a fine reference, its coarse image and the target's coarse image (int16 GeoTIFFs, each written block by
block, so this script stays small too), then runs `stfusion fuse` on them in a child process and prints its
wall time and peak RSS (the child's, from the OS). The inputs are a smooth random field, not a landscape:
what is measured is the block-by-block reading, prediction and writing, so the default method is the
per-pixel temporal difference; pass --method starfm for a window method (much slower).
With --site, the same inputs form a site folder (docs/sites.md): two fine/coarse pairs and a coarse-only target,
the coarse files at their native 480 m (16 fine pixels), warped onto the fine grid block by block by
`stfusion fuse --site`.
Several --size values make a curve of memory against scene size (each size fused in its own process), e.g.
    python benchmarks/bench_large_fuse.py --size 1024 2048 4096 8192 --block 1024 --method fsdaf --ratio 16
Usage: python benchmarks/bench_large_fuse.py [--size 10000 ... --bands 6 --block 4096 --method temporal-difference
                                             --ratio R --site]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import yaml
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window


SITE_RATIO = 16
SITE_BANDS = ["blue", "green", "red", "nir", "swir1", "swir2"]


def write_scene(path: Path, size: int, bands: int, seed: int, strip: int = 1024, metres: float = 30) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", height=size, width=size, count=bands, dtype="int16", nodata=0, tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate", predictor=2, bigtiff="yes",
                   crs=CRS.from_epsg(32755), transform=Affine(metres, 0, 400000, 0, -metres, 6200000))
    rng = np.random.default_rng(seed)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, strip):
            rows = min(strip, size - row)
            data = rng.integers(300, 4000, (bands, rows, size), dtype=np.int16)
            dst.write(data, window=Window(0, row, size, rows))


def write_pair(folder: Path, size: int, args: argparse.Namespace) -> list[str]:
    """A fine reference, its coarse image and the target's, all on the fine grid; the arguments of fuse."""
    for seed, name in enumerate(("fine_ref", "coarse_ref", "coarse_target")):
        write_scene(folder / f"{name}.tif", size, args.bands, seed)
    return ["--fine-ref", str(folder / "fine_ref.tif"), "--coarse-ref", str(folder / "coarse_ref.tif"),
            "--coarse-target", str(folder / "coarse_target.tif"), "--out", str(folder / "out" / "prediction.tif")]


def write_site(folder: Path, size: int, args: argparse.Namespace) -> list[str]:
    """Two pairs and a coarse-only target in a site folder, the coarse files at 16 fine pixels; fuse's arguments."""
    site = folder / "site"
    for seed, date in enumerate(("20200101", "20200117")):
        write_scene(site / "fine" / f"F_{date}.tif", size, args.bands, seed)
    for seed, date in enumerate(("20200101", "20200109", "20200117")):
        write_scene(site / "coarse" / f"C_{date}.tif", -(-size // SITE_RATIO), args.bands, seed + 10,
                    metres=30 * SITE_RATIO)
    (site / "site.yaml").write_text(yaml.safe_dump({
        "bands": SITE_BANDS[:args.bands], "fine": {"sensor": "fine", "files": "fine/F_{date:%Y%m%d}.tif"},
        "coarse": {"sensor": "coarse", "files": "coarse/C_{date:%Y%m%d}.tif"}, "check_bands": False}))
    return ["--site", str(site), "--out-dir", str(folder / "out")]


def measure(size: int, args: argparse.Namespace) -> None:
    """Write the inputs of one size, fuse them in a child process, print its wall time and peak RSS."""
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        command = (write_site if args.site else write_pair)(folder, size, args)
        inputs_gib = sum(p.stat().st_size for p in folder.rglob("*.tif")) / 2**30
        print(f"inputs: {size} x {size} x {args.bands} int16 ({inputs_gib:.2f} GiB on disk, "
              f"{3 * size**2 * args.bands * 8 / 2**30:.1f} GiB as float64 in memory) in {time.perf_counter() - start:.0f} s")
        command = [sys.executable, "-m", "stfusion.cli", "fuse", "--method", args.method, "--block", str(args.block),
                   *command, *(["--ratio", str(args.ratio)] if args.ratio else [])]
        start = time.perf_counter()
        child = subprocess.Popen(command)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak, not the largest of all sizes so far
        seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status):
            sys.exit(f"fuse failed for --size {size}")
        out_gib = sum(p.stat().st_size for p in (folder / "out").glob("*.tif")) / 2**30
        print(f"{args.method}{' --site' if args.site else ''}, {size**2 / 1e6:.1f} Mpx, block {args.block}: "
              f"{seconds:.0f} s, peak RSS of the fuse process {usage.ru_maxrss / 2**20:.2f} GiB, "
              f"output COG {out_gib:.2f} GiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="+", default=[10000], help="scene sides: one run each")
    parser.add_argument("--bands", type=int, default=6)
    parser.add_argument("--block", type=int, default=4096)
    parser.add_argument("--method", default="temporal-difference")
    parser.add_argument("--ratio", type=int, help="passed to fuse (FSDAF needs it)")
    parser.add_argument("--site", action="store_true", help="fuse a site folder (coarse files at 480 m) instead")
    parser.add_argument("--folder", help="where the inputs go (default: a temporary folder; they take ~3.6 GB)")
    args = parser.parse_args()
    for size in args.size:
        measure(size, args)


if __name__ == "__main__":
    main()
