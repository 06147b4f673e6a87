"""What MCBAM-GAN's skip image lacks: test RMSE of skip images given more and more of the coarse sensor.

    python benchmarks/skip_images.py [--datasets cia-sim lgc-sim]

MCBAM-GAN never sees C1; its skip image F1 + box(C2) - box(box(F1)) stands in for temporal-difference's
F1 + C2 - C1. On the synthetic datasets C1 is a known function of F1 (the sensor model of
``stfusion.data.synthetic``), so the gap between the two can be split into what the sensor's per-band
gain and offset explain and what its point-spread function explains (docs/methods/mcbam-gan.md).
Needs a completed `make study` (the datacubes and splits); synthetic datasets only.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd


def skip_images(dataset: str, workspace, psf_sigma: float) -> pd.DataFrame:
    """Mean RMSE over the test pairs of each skip image, in reflectance."""
    import torch
    from scipy import ndimage

    from stfusion.data.datacube import cube_ratio, date_index, open_cube
    from stfusion.data.splits import Splits
    from stfusion.data.synthetic import COARSE_GAIN, COARSE_OFFSET
    from stfusion.methods.models.mcbam_gan import box_filter
    from stfusion.units import REFLECTANCE_SCALE

    cube, splits = open_cube(workspace.cube(dataset)), Splits.load(workspace.splits(dataset))
    ratio = cube_ratio(cube)
    fine, coarse = cube["fine"].values / REFLECTANCE_SCALE, cube["coarse"].values / REFLECTANCE_SCALE
    gain, offset = np.asarray(COARSE_GAIN)[:, None, None], np.asarray(COARSE_OFFSET)[:, None, None]

    def box(a: np.ndarray) -> np.ndarray:
        return box_filter(torch.from_numpy(a[None].astype(np.float32)), ratio)[0].numpy().astype(np.float64)

    rows = []
    for ref, target in splits.test:
        f1, c1 = fine[date_index(cube, ref)], coarse[date_index(cube, ref)]
        c2, f2 = coarse[date_index(cube, target)], fine[date_index(cube, target)]
        sensed = gain * f1 + offset
        blurred = ndimage.gaussian_filter(sensed, sigma=(0, psf_sigma * ratio, psf_sigma * ratio), mode="reflect")
        images = {
            "F1 + box(C2) - box(box(F1)) (MCBAM-GAN's skip)": f1 + box(c2) - box(box(f1)),
            "... with the sensor's gain and offset": f1 + (box(c2) - box(box(sensed))) / gain,
            "... and its PSF (no coarse-grid phase)": f1 + (box(c2) - box(box(blurred))) / gain,
            "F1 + C2 - C1 (temporal-difference)": f1 + c2 - c1,
        }
        rows += [{"skip image": name, "pair": f"{ref}→{target}", "rmse": float(np.sqrt(np.mean((image - f2) ** 2)))}
                 for name, image in images.items()]
    table = pd.DataFrame(rows)
    return table.groupby("skip image", sort=False)["rmse"].mean().rename(dataset)


CLEAN_ONLY = ("psf", "grid_offset", "geolocation_m", "misregistration", "date_gain_sd", "date_offset_sd", "noise")
"""Coarse-sensor settings the skip images below do not model: they must keep their clean values."""


def main() -> None:
    from stfusion.data.synthetic import synthetic_config
    from stfusion.paths import Workspace, find_root
    from stfusion.pipeline.params import load_params

    params = load_params(build_models=False)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=params["datasets"])
    args = parser.parse_args()
    synthetic = params["download"]["synthetic"]
    unknown = [d for d in args.datasets if d not in synthetic]
    if unknown:
        raise SystemExit(f"--datasets: {unknown} are not synthetic (download.synthetic lists {sorted(synthetic)})")
    configs = {d: synthetic_config(d, synthetic[d]) for d in args.datasets}
    for dataset, config in configs.items():  # the rows model gain, offset and a Gaussian PSF, nothing else
        extra = [k for k in CLEAN_ONLY if config[k] != synthetic_config(dataset)[k]]
        if extra:
            raise SystemExit(f"download.synthetic.{dataset}: {extra} differ from the clean sensor, which is all "
                             "this benchmark models")
    workspace = Workspace(find_root())
    table = pd.concat([skip_images(d, workspace, configs[d]["psf_sigma"]) for d in args.datasets], axis=1)
    print("Mean test RMSE (reflectance) of each skip image:\n")
    print(table.to_markdown(floatfmt=".4f"))


if __name__ == "__main__":
    main()
