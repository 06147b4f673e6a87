"""Lightning tasks: how each kind of model is optimised (torchgeo style, one task per objective).

- :class:`RegressionTask`: the CNNs and SwinSTFM. DCSTFN minimises MSE; EDCSTFN the compound loss
  ``MSE + feature MSE + 0.85 (1 - MS-SSIM)`` with a frozen, pipeline-trained feature encoder;
  SwinSTFM ``Charbonnier + (1 - MS-SSIM)`` (``pixel_loss`` picks the pixel term).
- :class:`AdversarialTask`: GAN-STFM and MCBAM-GAN, manual optimisation: per batch one
  discriminator step on the detached prediction, then one generator step on the same prediction
  (as the public code). Generator loss = pixel L1 (``pixel_weight``) + feature MSE + (1 - cosine of
  the features) + (1 - MS-SSIM) + 1e-3 LSGAN; each weight comes from the scale's settings.

Multi-scale generators (``reconstruction_scales`` > 1, MCBAM-GAN) return one image per scale when
called with ``all_scales=True``; the reconstruction loss is then computed at every scale against the
target average-pooled to that scale, and summed (MCBAM-GAN Section 3.6). The discriminator, already
multi-scale itself, judges the full-resolution image only, and RMSE is tracked on it.
- :class:`DiffusionTask`: STFDiff. Each step draws t ~ U{0..T-1} and Gaussian noise per sample, noises
  the target (what the chain generates, :meth:`STFDiff.target_to_x0`) and minimises the L1 error of the
  denoiser's x0 estimate. The trained network is ``online``; ``generator`` holds its EMA weights, which
  validation (full DDIM sampling) and prediction use, so the checkpoint is selected on what is exported.
- :class:`AutoencoderTask`: the feature autoencoder, smooth L1 + 0.84 (1 - MS-SSIM) on fine
  images of training dates.

Every task logs, per epoch, ``train_loss`` and ``val_loss`` (the training objective) and
``train_rmse`` / ``val_rmse`` (reflectance RMSE over valid pixels). Checkpoints are selected on
``val_rmse``: validation dates only, never test dates.
"""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from stfusion.train.losses import (PIXEL_LOSSES, cosine_loss, feature_mse, float32_losses, lsgan_discriminator_loss,
                             lsgan_generator_loss, masked_l1, masked_mean, ms_ssim_loss, ms_ssim_scales_for)
from stfusion.methods.models.standardize import Standardized
from stfusion.train.config import TrainConfig


def _inputs(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return batch["fine_ref"], batch["coarse_ref"], batch["coarse_target"]


def pooled_targets(batch: dict[str, torch.Tensor], factor: int) -> dict[str, torch.Tensor]:
    """``fine_target`` average-pooled by ``factor`` (partial edge windows averaged over what they cover,
    matching the generator's rounded-up sizes), valid where every pooled pixel was valid."""
    pool = lambda x: F.avg_pool2d(x.float(), factor, ceil_mode=True)  # noqa: E731
    return {"fine_target": pool(batch["fine_target"]), "valid": (pool(batch["valid"]) > 0.999).float()}


class FusionTask(L.LightningModule):
    """Shared parts: optimiser, epoch hooks for the sampler, RMSE bookkeeping."""

    micro_batch: int | None = None  # a manually optimised task splits each batch into these (fit.train_model)

    def __init__(self, generator: torch.nn.Module, config: TrainConfig,
                 feature_encoder: torch.nn.Module | None = None):
        super().__init__()
        self.generator, self.config = generator, config
        self.feature_encoder = feature_encoder
        if feature_encoder is not None:
            feature_encoder.requires_grad_(False).eval()
        self.squared_error = {"train": MeanMetric(), "val": MeanMetric()}
        self.loss_mean = {"train": MeanMetric(), "val": MeanMetric()}
        for split in ("train", "val"):  # register so they move with the module and sync under DDP
            self.add_module(f"{split}_squared_error", self.squared_error[split])
            self.add_module(f"{split}_loss_mean", self.loss_mean[split])

    def forward(self, fine_ref, coarse_ref, coarse_target):
        return self.generator(fine_ref, coarse_ref, coarse_target)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.feature_encoder is not None:
            self.feature_encoder.eval()  # frozen: never update its statistics
        return self

    def on_train_epoch_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "set_epoch"):
            datamodule.set_epoch(self.current_epoch)

    def _track(self, split: str, pred: torch.Tensor, batch: dict, loss: torch.Tensor) -> None:
        with torch.no_grad():
            valid = batch["valid"].float().expand_as(pred)
            count = valid.sum()
            if count > 0:
                error = ((pred.float() - batch["fine_target"].float()) ** 2 * valid).sum() / count
                self.squared_error[split].update(error, weight=count)
            self.loss_mean[split].update(loss.detach().float(), weight=pred.shape[0])

    def _log_epoch(self, split: str) -> None:
        self.log(f"{split}_rmse", self.squared_error[split].compute().sqrt(), prog_bar=split == "val", sync_dist=False)
        self.log(f"{split}_loss", self.loss_mean[split].compute(), prog_bar=split == "train", sync_dist=False)
        self.squared_error[split].reset()
        self.loss_mean[split].reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def reconstruction_loss(self, pred: torch.Tensor, batch: dict, msssim_scales: int | None = None) -> torch.Tensor:
        raise NotImplementedError  # each task defines its objective

    def predict_scales(self, batch: dict) -> list[torch.Tensor]:
        """The generator's images, full resolution first (one, unless it reconstructs at several scales)."""
        if self.generator.traits.reconstruction_scales > 1:
            return list(self.generator(*_inputs(batch), all_scales=True))
        return [self(*_inputs(batch))]

    def multiscale_loss(self, preds: list[torch.Tensor], batch: dict) -> torch.Tensor:
        """The reconstruction loss summed over the scales; coarser scales use as many MS-SSIM scales as fit."""
        loss = self.reconstruction_loss(preds[0], batch)
        for k, pred in enumerate(preds[1:], start=1):
            scales = ms_ssim_scales_for(min(pred.shape[-2:]), self.config.msssim_scales)
            loss = loss + self.reconstruction_loss(pred, pooled_targets(batch, 2**k), msssim_scales=scales)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        preds = self.predict_scales(batch)
        self._track("val", preds[0], batch, self.multiscale_loss(preds, batch))

    def _adam(self, params, lr: float) -> torch.optim.Adam:
        return torch.optim.Adam(params, lr=lr, weight_decay=self.config.weight_decay)

    def _with_schedule(self, optimizer: torch.optim.Optimizer) -> Any:
        """The optimiser, with a per-step cosine annealing when ``schedule`` is cosine."""
        if self.config.schedule == "constant":
            return optimizer
        total = self.config.epochs * self.config.steps_per_epoch
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class RegressionTask(FusionTask):
    def reconstruction_loss(self, pred: torch.Tensor, batch: dict, msssim_scales: int | None = None) -> torch.Tensor:
        target, valid, c = batch["fine_target"], batch["valid"], self.config
        scales = c.msssim_scales if msssim_scales is None else msssim_scales
        with float32_losses(pred):
            loss = c.pixel_weight * PIXEL_LOSSES[c.pixel_loss](pred, target, valid)
            if self.feature_encoder is not None and c.feature_weight:
                loss = loss + c.feature_weight * feature_mse(self.feature_encoder, pred, target, valid)[0]
            if c.msssim_weight and scales:
                loss = loss + c.msssim_weight * ms_ssim_loss(pred, target, valid, scales=scales)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        preds = self.predict_scales(batch)
        loss = self.multiscale_loss(preds, batch)
        self._track("train", preds[0], batch, loss)
        return loss

    def configure_optimizers(self) -> Any:
        return self._with_schedule(self._adam(self.generator.parameters(), self.config.lr))


class AdversarialTask(FusionTask):
    def __init__(self, generator: torch.nn.Module, discriminator: torch.nn.Module, config: TrainConfig,
                 feature_encoder: torch.nn.Module | None = None):
        super().__init__(generator, config, feature_encoder)
        self.discriminator = discriminator
        self.automatic_optimization = False

    def reconstruction_loss(self, pred: torch.Tensor, batch: dict, msssim_scales: int | None = None) -> torch.Tensor:
        target, valid, c = batch["fine_target"], batch["valid"], self.config
        scales = c.msssim_scales if msssim_scales is None else msssim_scales
        with float32_losses(pred):
            loss = pred.new_zeros((), dtype=torch.float32)
            if c.pixel_weight:
                loss = loss + c.pixel_weight * masked_l1(pred, target, valid)
            if self.feature_encoder is not None and (c.feature_weight or c.cosine_weight):
                feature_loss, pred_features, target_features = feature_mse(self.feature_encoder, pred, target, valid)
                loss = loss + c.feature_weight * feature_loss + c.cosine_weight * cosine_loss(pred_features, target_features)
            if c.msssim_weight and scales:
                loss = loss + c.msssim_weight * ms_ssim_loss(pred, target, valid, scales=scales)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> None:
        """One discriminator step, then one generator step, each on the whole batch; with ``micro_batch``
        the batch's gradients are summed over micro-batches and the generator runs again for its step."""
        g_opt, d_opt = self.optimizers()
        chunks = self._micro_batches(batch)
        d_opt.zero_grad(set_to_none=True)
        preds, d_losses = None, []
        for chunk in chunks:
            if len(chunks) == 1:
                preds = self.predict_scales(chunk)
                fake = preds[0].detach()
            else:
                with torch.no_grad():
                    fake = self.predict_scales(chunk)[0]
            d_real = self.discriminator(chunk["fine_target"], chunk["coarse_target"])
            d_fake = self.discriminator(fake, chunk["coarse_target"])
            with float32_losses(fake):
                d_loss = lsgan_discriminator_loss(d_real, d_fake)
            self.manual_backward(d_loss / len(chunks))
            d_losses.append(d_loss.detach())
        d_opt.step()

        g_opt.zero_grad(set_to_none=True)
        adversarials = []
        for chunk in chunks:
            preds = preds if len(chunks) == 1 else self.predict_scales(chunk)
            with float32_losses(preds[0]):
                adversarial = lsgan_generator_loss(self.discriminator(preds[0], chunk["coarse_target"]))
            g_loss = self.multiscale_loss(preds, chunk) + self.config.adversarial_weight * adversarial
            self.manual_backward(g_loss / len(chunks))
            self._track("train", preds[0], chunk, g_loss)
            adversarials.append(adversarial.detach())
        g_opt.step()
        for scheduler in self._schedulers():  # manual optimisation steps its schedulers itself
            scheduler.step()
        self.log("train_d_loss", torch.stack(d_losses).mean(), on_step=False, on_epoch=True)
        self.log("train_adversarial", torch.stack(adversarials).mean(), on_step=False, on_epoch=True)

    def _micro_batches(self, batch: dict) -> list[dict]:
        if not self.micro_batch:
            return [batch]
        return [dict(zip(batch, chunk)) for chunk in zip(*(value.split(self.micro_batch) for value in batch.values()))]

    def _schedulers(self) -> list:
        schedulers = self.lr_schedulers()
        return [] if schedulers is None else schedulers if isinstance(schedulers, list) else [schedulers]

    def configure_optimizers(self) -> Any:
        c = self.config
        return [self._with_schedule(self._adam(self.generator.parameters(), c.lr)),
                self._with_schedule(self._adam(self.discriminator.parameters(), c.lr_discriminator or c.lr))]


class DiffusionTask(FusionTask):
    """Denoiser training with EMA weights; see the module docstring.

    EMA decay at optimiser step k: ``min(ema_decay, 1 - (1 + k)^(-2/3))``, the warm-up of ema_pytorch's
    defaults (power 2/3), so that a short run is not dominated by its random initial weights.
    """

    def __init__(self, generator: torch.nn.Module, config: TrainConfig):
        online = generator
        super().__init__(copy.deepcopy(online).requires_grad_(False), config)
        self.online = online
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))

    @staticmethod
    def _parts(model: torch.nn.Module):
        """(the STFDiff inside, the map from reflectance to its input space)."""
        if isinstance(model, Standardized):
            return model.model, model._in
        return model, lambda x: x

    def _to_target(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model._out(x) if isinstance(model, Standardized) else x

    def denoising_loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """L1 between the x0 estimate and x0 at random steps; also the estimate as a fine image."""
        diffusion, to_space = self._parts(self.online)
        fine_ref, coarse_ref, coarse_target = (to_space(x) for x in _inputs(batch))
        x0 = diffusion.target_to_x0(to_space(batch["fine_target"]), fine_ref)
        t = torch.randint(0, diffusion.schedule.timesteps, (x0.shape[0],), device=x0.device)
        x_t = diffusion.schedule.add_noise(x0, t, torch.randn_like(x0))
        estimate = diffusion.denoise(x_t, t, fine_ref, coarse_ref, coarse_target)
        with float32_losses(estimate):
            loss = masked_l1(estimate, x0, batch["valid"])
        return loss, self._to_target(self.online, diffusion.x0_to_target(estimate, fine_ref)).detach()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, estimate = self.denoising_loss(batch)
        self._track("train", estimate, batch, loss)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % self.trainer.accumulate_grad_batches:
            return  # a micro-batch: the optimiser has not stepped yet
        self.ema_steps += 1
        decay = self.config.ema_decay and min(self.config.ema_decay, 1 - (1 + self.ema_steps.item()) ** (-2 / 3))
        with torch.no_grad():
            for ema, online in zip(self.generator.parameters(), self.online.parameters(), strict=True):
                ema.lerp_(online.detach(), 1 - decay)
            for ema, online in zip(self.generator.buffers(), self.online.buffers(), strict=True):
                ema.copy_(online)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """RMSE of the EMA model's sample (the exported model); the loss is the online denoising loss."""
        sample = self(*_inputs(batch))
        loss, _ = self.denoising_loss(batch)
        self._track("val", sample, batch, loss)

    def configure_optimizers(self) -> Any:
        return self._with_schedule(self._adam(self.online.parameters(), self.config.lr))


class AutoencoderTask(FusionTask):
    """Reconstructs the target fine image from itself (pairs are (date, date))."""

    def forward(self, fine_ref, coarse_ref=None, coarse_target=None):
        return self.generator(fine_ref)

    def reconstruction_loss(self, pred: torch.Tensor, batch: dict, msssim_scales: int | None = None) -> torch.Tensor:
        target, valid, c = batch["fine_target"], batch["valid"], self.config
        with float32_losses(pred):
            pixel = torch.nn.functional.smooth_l1_loss(pred.float(), target.float(), reduction="none")
            loss = c.pixel_weight * masked_mean(pixel, valid)
            if c.msssim_weight:
                loss = loss + c.msssim_weight * ms_ssim_loss(pred, target, valid, scales=c.msssim_scales)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        pred = self(batch["fine_target"])
        loss = self.reconstruction_loss(pred, batch)
        self._track("train", pred, batch, loss)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        pred = self(batch["fine_target"])
        self._track("val", pred, batch, self.reconstruction_loss(pred, batch))

    def configure_optimizers(self) -> Any:
        return self._adam(self.generator.parameters(), self.config.lr)
