"""Our deep models against their official implementations: training steps and inference, same inputs and batch.

    python benchmarks/bench_official.py [--edcstfn PATH --gan-stfm PATH --swinstfm PATH --stfdiff PATH]
                                        [--batch 2] [--repeats 5]

Each PATH is a checkout of the official code, which is not part of this repository:

    --edcstfn   theonegis/ganstfm, branch edcstfn (the EDCSTFN of CIA and LGC):
                git clone -b edcstfn https://github.com/theonegis/ganstfm edcstfn
    --gan-stfm  theonegis/ganstfm, branch main (the generator SFFusion)
    --swinstfm  LouisChen0104/swinstfm
    --stfdiff   prowDIY/STF (STFDiff's denoiser, src/model/stfdiff/model6_GN_SiLU); needs einops
                (pip install einops in the environment that runs this script)

GAN-STFM's model.py imports torchgan and SwinSTFM's timm, which both need torchvision (no CPU build for
this project's torch). Neither is on the path measured: torchgan's SpectralNorm2d is only in the
discriminator, and of timm the generator uses ``to_2tuple`` and ``trunc_normal_`` (at construction) and
builds no DropPath (its drop-path rate is 0). Where the packages are missing, the script puts stand-ins
for those names in their place: the two helpers, and classes that refuse to be built.

For each model both networks get the paper tier's architecture and patch size (profiles/full.yaml, the
same as the official configuration) and the same random batch of --batch patches, seeded. Timed, in
alternation (each side first every other round), ``--repeats`` times after ``--warmup`` untimed rounds
(the first steps of a new model run slower while the allocator settles): a training step (forward, L1 loss against a target,
backward, Adam step) and a forward pass under ``torch.inference_mode``. The loss is L1 for both sides, so
that the step measures the networks, not the two projects' losses (benchmarks/bench_models.py times our
real losses). For STFDiff the network is the denoiser, one evaluation at a random diffusion step. Prints
the parameters of each side (a check that the architectures match), the medians, and official / ours
(above 1: ours is faster). Runs on CUDA when present (float32 on both sides).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from stfusion.methods.models import build_model, count_parameters
from stfusion.pipeline.params import load_params
from stfusion.train.config import tier_settings


def load_module(path: Path, name: str):
    """A module of an official checkout by file path, with its folder importable (its own sibling imports)."""
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(path.parent))


class _Refused(torch.nn.Module):
    """Stands in for a class of a package that is not installed; the compared networks never build it."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"{type(self).__name__}: a stand-in; install the package it comes from")


def stand_in(package: str, module: str, names: dict) -> None:
    """Register ``module`` with ``names`` if ``package`` cannot be imported."""
    if importlib.util.find_spec(package) is not None:
        return
    import types

    parts = module.split(".")
    for depth in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:depth]), types.ModuleType(".".join(parts[:depth])))
    for name, value in names.items():
        setattr(sys.modules[module], name, value)


def gan_stfm_pair(checkout: Path, arch: dict):
    """Both generators; SFFusion takes [C2, F_ref] (lateral coarse, trunk fine), as its experiment.py."""
    stand_in("torchgan", "torchgan.layers", {"SpectralNorm2d": type("SpectralNorm2d", (_Refused,), {})})
    official = load_module(checkout / "model.py", "official_gan_stfm").SFFusion()
    ours = build_model("gan-stfm", arch)
    return (lambda b: ours(b["fine_ref"], b["coarse_ref"], b["coarse_target"]), ours,
            lambda b: official([b["coarse_target"], b["fine_ref"]]), official)


def swinstfm_pair(checkout: Path, arch: dict):
    """Both networks; SwinSTFM takes (C1, F1, C2). Its models/ is a package: imported as one."""
    to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)  # noqa: E731
    stand_in("timm", "timm.models.layers", {"to_2tuple": to_2tuple, "trunc_normal_": torch.nn.init.trunc_normal_,
                                            "DropPath": type("DropPath", (_Refused,), {})})
    sys.path.insert(0, str(checkout))
    try:
        official = importlib.import_module("models.swinstfm").SwinSTFM()
    finally:
        sys.path.remove(str(checkout))
    ours = build_model("swinstfm", arch)
    return (lambda b: ours(b["fine_ref"], b["coarse_ref"], b["coarse_target"]), ours,
            lambda b: official(b["coarse_ref"], b["fine_ref"], b["coarse_target"]), official)


def edcstfn_pair(checkout: Path, arch: dict):
    """(ours, official, their forward on a batch): FusionNet takes [C1, F1, C2]."""
    official = load_module(checkout / "model.py", "official_edcstfn").FusionNet()
    ours = build_model("edcstfn", arch)
    return (lambda b: ours(b["fine_ref"], b["coarse_ref"], b["coarse_target"]), ours,
            lambda b: official([b["coarse_ref"], b["fine_ref"], b["coarse_target"]]), official)


def stfdiff_pair(checkout: Path, arch: dict):
    """Both denoisers; PredNoiseNet(dim 64, dim_mults (1, 2, 4)) as the official CIA configuration builds it."""
    module = load_module(checkout / "src/model/stfdiff/model6_GN_SiLU/pred_resnet.py", "official_stfdiff")
    official = module.PredNoiseNet(dim=64, channels=6, out_dim=6, dim_mults=(1, 2, 4))
    ours = build_model("stfdiff", arch).denoiser
    return (lambda b: ours(b["noisy"], b["t"], b["fine_ref"], b["coarse_ref"], b["coarse_target"]), ours,
            lambda b: official(b["coarse_ref"], b["coarse_target"], b["fine_ref"], b["noisy"], b["t"]), official)


PAIRS = {"edcstfn": edcstfn_pair, "gan-stfm": gan_stfm_pair, "swinstfm": swinstfm_pair, "stfdiff": stfdiff_pair}


def make_batch(size: int, patch: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = lambda: (0.05 + 0.3 * torch.rand(size, 6, patch, patch, generator=g)).to(device)  # noqa: E731
    batch = {key: image() for key in ("fine_ref", "coarse_ref", "coarse_target", "fine_target", "noisy")}
    batch["t"] = torch.randint(0, 100, (size,), generator=g).to(device)
    return batch


def time_step(forward, module: torch.nn.Module, batch: dict, train: bool, device: torch.device,
              optimizer: torch.optim.Optimizer) -> float:
    start = time.perf_counter()
    if train:
        module.train()
        optimizer.zero_grad(set_to_none=True)
        F.l1_loss(forward(batch), batch["fine_target"]).backward()
        optimizer.step()
    else:
        module.eval()
        with torch.inference_mode():
            forward(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def compare(name: str, pair, batch: dict, repeats: int, warmup: int, device: torch.device) -> None:
    ours_forward, ours, official_forward, official = pair
    sides = {"ours": (ours_forward, ours.to(device)), "official": (official_forward, official.to(device))}
    optimizers = {side: torch.optim.Adam(module.parameters(), lr=1e-4) for side, (_, module) in sides.items()}
    times = {(side, train): [] for side in sides for train in (True, False)}
    for repeat in range(-warmup, repeats):  # warm-up rounds first: the allocator settles over a few steps
        order = list(sides) if repeat % 2 else list(sides)[::-1]  # each side goes first every other round
        for train in (True, False):
            for side in order:
                forward, module = sides[side]
                seconds = time_step(forward, module, batch, train, device, optimizers[side])
                if repeat >= 0:
                    times[side, train].append(seconds)
    size = next(iter(batch.values())).shape
    for train, what in ((True, "train step"), (False, "inference")):
        medians = {side: statistics.median(times[side, train]) for side in sides}
        print(f"{name:8s} {what:10s} {size[0]} x {size[-1]} px | ours {medians['ours']:7.3f} s "
              f"({size[0] / medians['ours']:6.2f} patches/s) | official {medians['official']:7.3f} s "
              f"({size[0] / medians['official']:6.2f} patches/s) | official / ours {medians['official'] / medians['ours']:.2f}")
    print(f"{name:8s} parameters: ours {count_parameters(ours):,}, official {count_parameters(official):,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in PAIRS:
        parser.add_argument(f"--{name}", type=Path, dest=name, help=f"checkout of the official {name} code")
    parser.add_argument("--batch", type=int, default=2, help="patches per step (the paper batches take minutes on a CPU)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen = {name: getattr(args, name) for name in PAIRS if getattr(args, name)}
    if not chosen:
        parser.error("give at least one official checkout: " + ", ".join(f"--{name} PATH" for name in PAIRS))
    params = load_params()
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
          f"median of {args.repeats} after {args.warmup} warm-up rounds, ours and official in alternation")
    for name, checkout in chosen.items():
        config = tier_settings(params["models"], name, "paper")
        torch.manual_seed(0)
        compare(name, PAIRS[name](checkout, config.arch), make_batch(args.batch, config.patch_size, device),
                args.repeats, args.warmup, device)


if __name__ == "__main__":
    main()
