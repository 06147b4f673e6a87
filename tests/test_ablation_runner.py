"""The ablation runner: variants trained side by side in single-thread workers, or in this process."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stfusion.data.raster import read_geotiff
from stfusion.errors import StfusionError
from stfusion.inference.predict import prediction_name
from stfusion.train.ablation import VariantRun, default_workers, run_ablation

# An MCBAM-GAN small enough for seconds of CPU, on L1 + LSGAN (no feature autoencoder needed).
TINY = {"epochs": 2, "steps_per_epoch": 3, "batch_size": 2, "patch_size": 32, "lr": 1e-3, "val_patches": 2,
        "feature_weight": 0.0, "cosine_weight": 0.0, "msssim_weight": 0.0, "tile": 256,
        "arch": {"channels": [4, 8, 8], "depth": 2}, "discriminator": {"width_multiplier": 0.125}}


def runs_for(tiny_processed, out, variants: dict[str, dict]) -> list[VariantRun]:
    folder, _, splits = tiny_processed
    return [VariantRun(model="mcbam-gan", variant=name, settings={**TINY, "arch": {**TINY["arch"], **arch}},
                       dataset=splits.dataset, out_dir=str(out), cube=str(folder / "cube.nc"),
                       splits=str(folder / "splits.json"), checkpoint_dir=str(out.parent / "ckpt" / name), seed=5,
                       tier="quick", train={"progress": False})
            for name, arch in variants.items()]


def predictions(out, splits, variant):
    return [read_geotiff(out / variant / prediction_name(pair)).data for pair in splits.test]


def test_variants_in_workers_write_what_one_worker_writes(tiny_processed, tmp_path):
    """Two workers side by side give each variant the numbers a single worker gives it: every worker
    trains on one thread, so results do not depend on the core count or on which worker ran what."""
    _, cube, splits = tiny_processed
    variants = {"depth-1": {"depth": 1}, "no-cbam": {"cbam": False}}
    side_by_side = run_ablation(runs_for(tiny_processed, tmp_path / "a" / "out", variants), workers=2,
                                progress=False)
    one_worker = run_ablation(runs_for(tiny_processed, tmp_path / "b" / "out", variants), workers=1, progress=False)
    assert list(side_by_side) == list(variants)  # in the order asked, whatever order they finished in
    for name in variants:
        record = json.loads((tmp_path / "a" / "out" / name / "run.json").read_text())
        assert record["variant"] == name and record["settings"]["arch"]["depth"] == (1 if name == "depth-1" else 2)
        assert (tmp_path / "a" / "out" / name / "model.pt").is_file()
        assert side_by_side[name]["best_val_rmse"] == one_worker[name]["best_val_rmse"]
        for a, b in zip(predictions(tmp_path / "a" / "out", splits, name),
                        predictions(tmp_path / "b" / "out", splits, name)):
            assert a.shape == (cube.sizes["band"], cube.sizes["y"], cube.sizes["x"]) and np.isfinite(a).all()
            np.testing.assert_array_equal(a, b)
    # the two variants are different models, so their predictions differ
    assert not np.array_equal(predictions(tmp_path / "a" / "out", splits, "depth-1")[0],
                              predictions(tmp_path / "a" / "out", splits, "no-cbam")[0])


def test_a_failing_variant_is_named(tiny_processed, tmp_path):
    runs = runs_for(tiny_processed, tmp_path / "out", {"broken": {"depth": 7}})
    with pytest.raises(StfusionError, match=r"ablation variant 'broken' on cia-sim.*depth"):
        run_ablation(runs, workers=1, progress=False)
    with pytest.raises(StfusionError, match=r"ablation variant 'broken' on cia-sim.*depth"):
        run_ablation(runs, workers=0, progress=False)
    assert not (tmp_path / "out" / "broken").exists()


def test_bad_runs_and_worker_counts_are_refused(tiny_processed, tmp_path):
    twice = runs_for(tiny_processed, tmp_path / "out", {"a": {}}) * 2
    with pytest.raises(StfusionError, match="more than once"):
        run_ablation(twice, progress=False)
    with pytest.raises(StfusionError, match="workers: expected an integer >= 0"):
        run_ablation(twice[:1], workers=-1, progress=False)
    assert run_ablation([], progress=False) == {}


def test_default_workers_one_per_core_on_cpu_none_with_cuda(tiny_processed, tmp_path, monkeypatch):
    import os

    import torch

    runs = runs_for(tiny_processed, tmp_path / "out", {f"v{i}": {} for i in range(64)})
    cores = len(os.sched_getaffinity(0))
    assert default_workers(runs) == min(64, cores) and default_workers(runs[:1]) == 1
    assert default_workers([VariantRun(**{**runs[0].__dict__, "train": {"devices": 2}})]) == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_workers(runs) == 0
    assert default_workers([VariantRun(**{**runs[0].__dict__, "train": {"accelerator": "cpu"}})]) == 1
