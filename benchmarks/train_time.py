"""Where one training run's time goes: training steps, validation, the rest of the fit, the set-up.

    python benchmarks/train_time.py --dataset cia-sim --model mcbam-gan [--seed 42] [--threads 1]

Trains the model once at the quick tier of params.yaml with the study's training function (its
checkpoint folder goes to a temporary folder; the test scenes are not predicted), and prints the
seconds spent in each part. Needs a completed `make study` (the datacubes and the feature autoencoders).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class PartClock(Callback):
    """Wall seconds inside training batches and validation epochs, and of the whole fit."""

    def __init__(self) -> None:
        self.seconds = {"train steps": 0.0, "validation": 0.0, "fit": 0.0}
        self.steps, self._start = 0, {}

    def _begin(self, part: str) -> None:
        self._start[part] = time.perf_counter()

    def _end(self, part: str) -> None:
        self.seconds[part] += time.perf_counter() - self._start.pop(part)

    def on_fit_start(self, *args) -> None:
        self._begin("fit")

    def on_fit_end(self, *args) -> None:
        self._end("fit")

    def on_train_batch_start(self, *args) -> None:
        self._begin("train steps")

    def on_train_batch_end(self, *args) -> None:
        self._end("train steps")
        self.steps += 1

    def on_validation_epoch_start(self, *args) -> None:
        self._begin("validation")

    def on_validation_epoch_end(self, *args) -> None:
        self._end("validation")


def main() -> None:
    import torch

    from stfusion.data.datacube import open_cube
    from stfusion.data.splits import Splits
    from stfusion.methods.models import get_model_spec
    from stfusion.paths import Workspace, find_root
    from stfusion.pipeline.params import load_params
    from stfusion.train.config import tier_settings
    from stfusion.train.fit import train_model

    params = load_params(build_models=False)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default=params["datasets"][0], choices=params["datasets"])
    parser.add_argument("--model", default="mcbam-gan", choices=params["methods"]["models"])
    parser.add_argument("--seed", type=int, default=params["seed"])
    parser.add_argument("--threads", type=int, default=params["train"]["threads"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    workspace = Workspace(find_root())
    config = tier_settings(params["models"], args.model, "quick")
    cube, splits = open_cube(workspace.cube(args.dataset)), Splits.load(workspace.splits(args.dataset))
    encoder = workspace.autoencoder(args.dataset) / "autoencoder.pt" if get_model_spec(args.model).feature_encoder else None
    clock = PartClock()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stfusion-train-time-") as tmp:
        train_model(args.model, cube, splits, config, seed=args.seed,
                    checkpoint_dir=Path(tmp) / "ckpt", feature_encoder_path=encoder, progress=False, callbacks=[clock])
    total = time.perf_counter() - start
    parts = clock.seconds
    rest = parts["fit"] - parts["train steps"] - parts["validation"]
    print(f"{args.dataset} {args.model}, seed {args.seed}, {args.threads} thread(s): {total:.1f} s in all")
    print(f"  {clock.steps} training steps  {parts['train steps']:7.1f} s  ({1000 * parts['train steps'] / clock.steps:.0f} ms each)")
    print(f"  validation           {parts['validation']:7.1f} s")
    print(f"  rest of the fit      {rest:7.1f} s")
    print(f"  outside the fit      {total - parts['fit']:7.1f} s  (model set-up, weights out of the checkpoint)")


if __name__ == "__main__":
    main()
