"""Each model's real training objective falls over a few optimiser steps on a fixed batch."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from stfusion.methods.models import build_autoencoder
from stfusion.train.config import train_config
from stfusion.train.fit import build_task
from stfusion.inference.weights import export_weights

SETTINGS = {"epochs": 1, "steps_per_epoch": 1, "batch_size": 2, "patch_size": 48, "lr": 3e-3, "msssim_scales": 2}
ARCH = {"dcstfn": {"channels": [8, 8, 16]}, "edcstfn": {"channels": [8, 8, 16]}, "gan-stfm": {"channels": [4, 8, 8, 16]},
        "mcbam-gan": {"channels": [4, 8, 8], "depth": 3, "ratio": 4}, "autoencoder": {"channels": [4, 8, 8, 16]},
        "swinstfm": {"embed_dim": 8, "depths": [1, 1, 1, 1], "decoder_depths": [1, 1, 1, 1], "head_dim": 4},
        "stfdiff": {"dim": 8, "dim_mults": [1, 2, 2], "sample_steps": 2}}
EXTRA = {"swinstfm": {"pixel_loss": "charbonnier"}, "stfdiff": {"ema_decay": 0.9, "gradient_clip": 1.0}}
GANS = ("gan-stfm", "mcbam-gan")


def fixed_batch(seed=0, size=48):
    g = torch.Generator().manual_seed(seed)
    fine_ref = 0.05 + 0.4 * torch.rand(2, 6, size, size, generator=g)
    change = 0.05 * torch.rand(2, 6, 1, 1, generator=g)
    return {"fine_ref": fine_ref, "coarse_ref": torch.nn.functional.avg_pool2d(fine_ref, 8, 1, 4, count_include_pad=False)[..., :size, :size],
            "coarse_target": torch.nn.functional.avg_pool2d(fine_ref + change, 8, 1, 4, count_include_pad=False)[..., :size, :size],
            "fine_target": fine_ref + change, "valid": torch.ones(2, 1, size, size)}


def _cat(*batches):
    return {key: torch.cat([batch[key] for batch in batches]) for key in batches[0]}


@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory):
    torch.manual_seed(0)
    model = build_autoencoder(ARCH["autoencoder"])
    return export_weights(tmp_path_factory.mktemp("ae") / "autoencoder.pt", "autoencoder", model, ARCH["autoencoder"])


def objective(task, batch):
    """The reconstruction objective, summed over the scales of a multi-scale generator; for diffusion the
    denoising loss averaged over the same fixed draws of t and noise."""
    task.eval()
    with torch.no_grad():
        if task.__class__.__name__ == "DiffusionTask":
            state = torch.get_rng_state()
            torch.manual_seed(123)
            loss = sum(float(task.denoising_loss(batch)[0]) for _ in range(8)) / 8
            torch.set_rng_state(state)
            return loss
        if task.__class__.__name__ == "AutoencoderTask":
            return float(task.reconstruction_loss(task(batch["fine_target"]), batch))
        return float(task.multiscale_loss(task.predict_scales(batch), batch))


@pytest.mark.parametrize("name, micro_batch", [("dcstfn", None), ("edcstfn", None), ("gan-stfm", None), ("mcbam-gan", None),
                                               ("gan-stfm", 2), ("mcbam-gan", 2), ("swinstfm", None), ("stfdiff", None),
                                               ("autoencoder", None)])
def test_objective_falls_and_outputs_are_finite(name, micro_batch, encoder_path):
    """A GAN with ``micro_batch`` splits each batch itself (one step of each network per batch)."""
    torch.manual_seed(0)
    extra = {"discriminator": {"width_multiplier": 0.125}} if name in GANS else EXTRA.get(name, {})
    config = train_config({**SETTINGS, "arch": ARCH[name], **extra}, key="test")
    task = build_task(name, config, feature_encoder_path=encoder_path)
    task.micro_batch = micro_batch
    batch = fixed_batch() if micro_batch is None else _cat(fixed_batch(0), fixed_batch(1))
    before = objective(task, batch)
    steps = 60  # with AVX-512 kernels, 40 steps took MCBAM-GAN only 7.5 % down
    task.train()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0)
    trainer.fit(task, train_dataloaders=DataLoader([batch] * steps, batch_size=None))
    after = objective(task, batch)
    assert after < 0.9 * before, f"{name}: objective {before:.4f} -> {after:.4f}"
    task.eval()
    with torch.no_grad():
        pred = task(batch["fine_ref"], batch["coarse_ref"], batch["coarse_target"]) if name != "autoencoder" \
            else task(batch["fine_target"])
    assert pred.shape == batch["fine_target"].shape
    assert torch.isfinite(pred).all()
    if name in GANS:
        assert [o.optimizer.state_dict()["state"][0]["step"] for o in task.optimizers()] == [steps, steps]


def test_gan_micro_batches_are_the_batch_in_order(encoder_path):
    config = train_config({**SETTINGS, "arch": ARCH["gan-stfm"], "discriminator": {"width_multiplier": 0.125}}, key="test")
    task = build_task("gan-stfm", config, feature_encoder_path=encoder_path)
    batch = _cat(fixed_batch(0), fixed_batch(1))
    assert task._micro_batches(batch) == [batch]
    task.micro_batch = 2
    chunks = task._micro_batches(batch)
    assert len(chunks) == 2 and all(set(chunk) == set(batch) for chunk in chunks)
    for key in batch:
        assert torch.equal(torch.cat([chunk[key] for chunk in chunks]), batch[key])


def test_diffusion_ema_steps_once_per_optimiser_step_with_micro_batches():
    torch.manual_seed(0)
    task = build_task("stfdiff", train_config({**SETTINGS, "arch": ARCH["stfdiff"], "ema_decay": 0.99}, key="test"),
                      feature_encoder_path=None)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, accumulate_grad_batches=3)
    trainer.fit(task, train_dataloaders=DataLoader([fixed_batch()] * 6, batch_size=None))
    assert int(task.ema_steps) == 2 == trainer.global_step


def test_diffusion_ema_follows_the_online_weights():
    torch.manual_seed(0)
    config = train_config({**SETTINGS, "arch": ARCH["stfdiff"], "ema_decay": 0.99}, key="test")
    task = build_task("stfdiff", config, feature_encoder_path=None)
    initial = [p.detach().clone() for p in task.generator.parameters()]
    assert not any(p.requires_grad for p in task.generator.parameters())  # DDP: no unused trainable params
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0)
    trainer.fit(task, train_dataloaders=DataLoader([fixed_batch()] * 5, batch_size=None))
    ema, online = list(task.generator.parameters()), list(task.online.parameters())
    moved = sum(float((e - i).abs().sum()) for e, i in zip(ema, initial))
    assert moved > 0 and int(task.ema_steps) == 5
    # With the warm-up (decay <= 1 - 2^(-2/3) at the first step) the EMA sits between init and online.
    gap = sum(float((e - o).abs().sum()) for e, o in zip(ema, online))
    assert gap < sum(float((i - o).abs().sum()) for i, o in zip(initial, online))
