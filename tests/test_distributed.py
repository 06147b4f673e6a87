"""Several devices without GPUs: DDP over two CPU processes (gloo, under torchrun) against one process."""

from __future__ import annotations

import dataclasses
import json
import socket
import sys

import numpy as np
import torch

from stfusion.data.raster import read_geotiff
from stfusion.inference.predict import prediction_name
from stfusion.inference.weights import export_weights
from stfusion.methods.models import build_autoencoder
from stfusion.pipeline.params import load_params
from stfusion.train.config import tier_settings
from stfusion.train.datamodule import BatchShard
from stfusion.train.distributed import TORCHRUN_VARIABLE, launcher
from stfusion.train.run import run_method


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_each_process_takes_its_share_of_every_batch():
    shards = [list(BatchShard(12, 4, rank, 2)) for rank in (0, 1)]
    assert shards == [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7, 10, 11]]
    assert sorted(shards[0] + shards[1]) == list(range(12))


def test_the_launcher_is_torchrun_unless_the_variable_names_another(monkeypatch):
    monkeypatch.delenv(TORCHRUN_VARIABLE, raising=False)
    assert launcher(3)[-2:] == ["--standalone", "--nproc_per_node=3"]
    monkeypatch.setenv(TORCHRUN_VARIABLE, "srun --nodes=2 torchrun --nnodes=2 --rdzv_endpoint='head:29500'")
    assert launcher(3) == ["srun", "--nodes=2", "torchrun", "--nnodes=2", "--rdzv_endpoint=head:29500"]


def test_two_ddp_processes_train_the_model_one_process_trains(tiny_processed, tmp_path, monkeypatch):
    """The two processes start as on several nodes (a c10d rendezvous, the SLURM recipe's torchrun flags)."""
    port = _free_port()
    monkeypatch.setenv(TORCHRUN_VARIABLE, f"{sys.executable} -m torch.distributed.run --nnodes=1 --nproc_per_node=2 "
                                          f"--rdzv_backend=c10d --rdzv_endpoint=127.0.0.1:{port} --rdzv_id=test")
    _, cube, splits = tiny_processed
    config = tier_settings(load_params(build_models=False)["models"], "dcstfn", "quick")
    config = dataclasses.replace(config, epochs=2, steps_per_epoch=3, batch_size=4, patch_size=24, val_patches=4)
    runs = {}
    for devices in (1, 2):
        out = tmp_path / f"devices-{devices}"
        runs[devices] = run_method("dcstfn", cube, splits, out / "predictions", seed=0, config=config, tier="quick",
                                   checkpoint_dir=out / "checkpoints" / "seed-0",
                                   train_options={"devices": devices, "accelerator": "cpu", "progress": False})
        assert not (out / "checkpoints").exists()  # the resume state and the job are gone: nothing half-written left
    assert runs[2]["processes"] == 2 and runs[1]["processes"] == 1 and runs[2]["best_epoch"] == runs[1]["best_epoch"]
    weights = [torch.load(tmp_path / f"devices-{d}" / "predictions" / "model.pt", weights_only=True)["state_dict"]
               for d in (1, 2)]
    for key, value in weights[0].items():
        np.testing.assert_allclose(weights[1][key].numpy(), value.numpy(), atol=1e-5, err_msg=key)
    pair = prediction_name(splits.test[0])
    one, two = (read_geotiff(tmp_path / f"devices-{d}" / "predictions" / pair).data for d in (1, 2))
    np.testing.assert_allclose(two, one, atol=1e-4)
    assert json.loads((tmp_path / "devices-2" / "predictions" / "run.json").read_text())["processes"] == 2



def test_a_gan_trains_in_two_ddp_processes(tiny_processed, tmp_path, monkeypatch):
    """A GAN step runs two backward passes, and the discriminator's leaves the generator out: DDP stopped at the
    first step. Now it trains; the reference is one process in micro-batches of a process's share. Not the same
    bits: on the CPU batch norm is not synchronised (the exported running statistics are rank 0's) and Adam
    magnifies rounding in near-zero gradients; measured: RMSE 0.0038 between the two, 0.021 to another seed."""
    port = _free_port()
    monkeypatch.setenv(TORCHRUN_VARIABLE, f"{sys.executable} -m torch.distributed.run --nnodes=1 --nproc_per_node=2 "
                                          f"--rdzv_backend=c10d --rdzv_endpoint=127.0.0.1:{port} --rdzv_id=test")
    _, cube, splits = tiny_processed
    models = load_params(build_models=False)["models"]
    config = dataclasses.replace(tier_settings(models, "gan-stfm", "quick"), epochs=2, steps_per_epoch=3, batch_size=4,
                                 patch_size=32, msssim_scales=2, val_patches=4)
    arch = tier_settings(models, "autoencoder", "quick").arch
    encoder = export_weights(tmp_path / "autoencoder.pt", "autoencoder", build_autoencoder(arch), arch)
    for run, options in {"ddp": {"devices": 2}, "micro": {"devices": 1, "micro_batch": 2}}.items():
        run_method("gan-stfm", cube, splits, tmp_path / run / "predictions", seed=0, config=config, tier="quick",
                   checkpoint_dir=tmp_path / run / "checkpoints", feature_encoder_path=encoder,
                   train_options={**options, "accelerator": "cpu", "progress": False})
    pair = prediction_name(splits.test[0])
    one, two = (read_geotiff(tmp_path / run / "predictions" / pair).data for run in ("micro", "ddp"))
    assert np.isfinite(two).all() and float(np.sqrt(np.mean((two - one) ** 2))) < 0.01
    assert json.loads((tmp_path / "ddp" / "predictions" / "run.json").read_text())["processes"] == 2
    assert not (tmp_path / "ddp" / "checkpoints").exists()
