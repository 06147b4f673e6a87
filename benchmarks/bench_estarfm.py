"""Speed of ESTARFM (``predict_estarfm``) on a synthetic CIA-size scene: 6 bands, two reference pairs.

The inputs are a cia-sim scene from ``stfusion.data.synthetic`` (dates 1 and 3 = the pairs, date 2 = the
target), generated in a child process so that the peak RSS printed is this process's: reading the images
plus ESTARFM. Prints the median of several repeats (machines are noisy), the peak RSS and the device.
Default: the full CIA grid (2040 x 1720), the IDL code's 51 x 51 window and 20 similar pixels. On the
CPU, `--paths fused torch` times the fused Numba kernel and the torch path in alternation, prints the ratio
of the medians and how far apart the outputs are (in units in the last place of float32).
Usage: python benchmarks/bench_estarfm.py [--height 2040 --width 1720 --repeats 3 --tile 128 --device cpu
                                           --paths fused torch]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path

import numpy as np
import torch
from bench_starfm import alternate, generate_in_child, time_prediction  # the same scene and timing as STARFM

from stfusion.data.datacube import valid_mask
from stfusion.data.manifest import Manifest
from stfusion.data.raster import read_geotiff
from stfusion.methods.baselines import estarfm
from stfusion.methods.baselines.estarfm import EstarfmParams, predict_estarfm
from stfusion.units import to_reflectance


def load(folder: Path) -> dict[str, np.ndarray]:
    manifest = Manifest.load(folder)
    before, target, after = manifest.date_list()
    read = lambda date, role: read_geotiff(manifest.file(date, role)).data  # noqa: E731
    raw = {"fine_refs": np.stack([read(before, "fine"), read(after, "fine")]),
           "coarse_refs": np.stack([read(before, "coarse"), read(after, "coarse")]),
           "coarse_target": read(target, "coarse")}
    inputs = {name: to_reflectance(data) for name, data in raw.items()}
    inputs["valid"] = np.logical_and.reduce([valid_mask(image) for data in raw.values()
                                             for image in (data if data.ndim == 4 else [data])])
    return inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=2040)
    parser.add_argument("--width", type=int, default=1720)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tile", type=int, default=None, help="tile side in pixels (default: the module's)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--paths", nargs="+", choices=["fused", "torch"], default=["fused"],
                        help="on the CPU: the fused kernel (default) and/or the torch path, timed in alternation")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cia-sim"
        generate_in_child(folder, args.height, args.width, n_dates=3)
        inputs = load(folder)
    params = EstarfmParams()
    device = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    side = 2 * params.half_window + 1
    print(f"ESTARFM {side} x {side} window, {params.similar} similar pixels, device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, tile {args.tile or 'default'}")
    if device.type == "cuda" or args.paths == ["fused"]:
        time_prediction(lambda: predict_estarfm(**inputs, params=params, device=device, tile=args.tile),
                        device, args.repeats, args.height, args.width, digits=4)
    else:
        compare_paths(inputs, params, args)


PATHS = {"fused": estarfm._predict_fused, "torch": estarfm._predict_tiles}


def compare_paths(inputs: dict, params: EstarfmParams, args: argparse.Namespace) -> None:
    """Each path in turn, ``repeats`` times; the medians, their ratio, and how far apart the outputs are."""
    predict_estarfm(**{name: a[..., :64, :64] for name, a in inputs.items()}, params=params, device="cpu")  # compile

    def run(path: str):
        def predict() -> np.ndarray:
            estarfm.PREDICT["cpu"] = PATHS[path]
            return predict_estarfm(**inputs, params=params, device="cpu", tile=args.tile)
        return predict

    try:
        medians, outputs = alternate({path: run(path) for path in args.paths}, args.repeats)
    finally:
        estarfm.PREDICT["cpu"] = estarfm._predict_fused
    if len(medians) == 2:
        a, b = outputs["fused"], outputs["torch"]
        ulps = np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))[np.isfinite(a) & np.isfinite(b)]
        print(f"torch / fused: {medians['torch'] / medians['fused']:.2f}x; same NaNs: "
              f"{np.array_equal(np.isnan(a), np.isnan(b))}; values that differ: {np.count_nonzero(ulps)} of {ulps.size}; "
              f"largest difference {ulps.max() if ulps.size else 0} ulp")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {peak:.2f} GiB (both paths in one process)")


if __name__ == "__main__":
    main()
