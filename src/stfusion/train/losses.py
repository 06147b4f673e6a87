"""Training losses of the deep models, on reflectance tensors (N, band, H, W).

Every loss is computed in float32 even under bf16 autocast (``float32_losses``): MS-SSIM divides
small variances and LSGAN squares scores, both of which lose too much in bf16.

Masking: pixel losses average over the valid pixels only. Windowed (MS-SSIM) and feature losses
cannot skip pixels, so the prediction is replaced by the target where the mask is 0 before they
see it: invalid pixels then match perfectly and contribute no gradient.

MS-SSIM is torchmetrics' implementation (Gaussian 11 x 11, sigma 1.5, 2 x 2 average pooling
between scales, last scale weighted by its own exponent), not the copy of pytorch-msssim in the
public EDCSTFN / GAN-STFM / MLFF-GAN code, which raises the last scale's SSIM to 4 w_5 instead of
w_5. Small patches need fewer scales (a 64 px patch shrinks to
4 px at the fifth scale): ``scales`` takes the first ``scales`` standard weights
(0.0448, 0.2856, 0.3001, 0.2363, 0.1333), renormalised to sum to 1 so that 1 - MS-SSIM keeps
its range. ``data_range`` is 1 (reflectance).

MS-SSIM sees the prediction clipped at 0. SSIM is the product of a luminance and a
contrast-structure term, and both turn negative for an image whose mean and structure are
inverted, so their product rewards an inverted band. An unconstrained network finds that
optimum: with the 3-scale loss our feature autoencoder learned a blue band near -0.25 mirror
image of the truth while its other bands were right. Reflectance is never negative, so clipping
removes the degenerate optimum and leaves negative outputs to the pixel loss.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from stfusion.errors import ConfigError

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


@contextmanager
def float32_losses(tensor: torch.Tensor):
    """Disable autocast on ``tensor``'s device type so the enclosed losses run in float32."""
    with torch.autocast(device_type=tensor.device.type, enabled=False):
        yield


def min_patch_for_ms_ssim(scales: int, kernel: int = 11) -> int:
    """Smallest patch side torchmetrics accepts for ``scales`` scales."""
    return (kernel - 1) * max(1, 2 ** (scales - 1)) + 1


def ms_ssim_scales_for(side: int, requested: int) -> int:
    """The most scales, at most ``requested``, that a ``side``-pixel image allows (0: too small for one).

    For the coarse outputs of multi-scale generators (MCBAM-GAN), whose 1/4-scale image of a 64 px patch
    is 16 px: there the vision loss uses as many MS-SSIM scales as fit, and none below 11 px.
    """
    return max((k for k in range(1, requested + 1) if min_patch_for_ms_ssim(k) <= side), default=0)


def ms_ssim_weights(scales: int) -> tuple[float, ...]:
    if not 1 <= scales <= len(MS_SSIM_WEIGHTS):
        raise ConfigError(f"msssim_scales: expected 1..{len(MS_SSIM_WEIGHTS)}, got {scales!r}")
    weights = MS_SSIM_WEIGHTS[:scales]
    return tuple(w / sum(weights) for w in weights)


def _fill_invalid(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    return pred if valid is None else torch.where(valid.bool(), pred, target)


def masked_mean(error: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of a per-pixel ``error`` (N, band, H, W) over valid pixels (``valid``: (N, 1, H, W), 1 = valid)."""
    if valid is None:
        return error.mean()
    weight = valid.float().expand_as(error)
    return (error * weight).sum() / weight.sum().clamp_min(1.0)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over valid pixels."""
    return masked_mean((pred.float() - target.float()) ** 2, valid)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error over valid pixels."""
    return masked_mean((pred.float() - target.float()).abs(), valid)


def masked_charbonnier(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
                       eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier loss sqrt((pred - target)^2 + eps^2) over valid pixels (SwinSTFM: eps = 1e-3)."""
    return masked_mean(((pred.float() - target.float()) ** 2 + eps**2).sqrt(), valid)


PIXEL_LOSSES = {"mse": masked_mse, "l1": masked_l1, "charbonnier": masked_charbonnier}


def ms_ssim_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, *,
                 scales: int = 5) -> torch.Tensor:
    """1 - MS-SSIM with the first ``scales`` weights (see the module docstring)."""
    side = min(pred.shape[-2:])
    if side < min_patch_for_ms_ssim(scales):
        raise ConfigError(f"msssim_scales: {scales} scales need patches of at least "
                          f"{min_patch_for_ms_ssim(scales)} px, got {side} px; lower msssim_scales or raise patch_size")
    # Imported here: torchmetrics takes 1.4 s to import, which the stage runner (it checks patch
    # sizes with min_patch_for_ms_ssim) would otherwise pay at every stage.
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    pred = _fill_invalid(pred.float(), target.float(), valid).clamp_min(0.0)
    score = multiscale_structural_similarity_index_measure(
        pred, target.float().clamp_min(0.0), data_range=1.0, betas=ms_ssim_weights(scales), normalize="relu")
    return 1.0 - score


def feature_mse(encoder: torch.nn.Module, pred: torch.Tensor, target: torch.Tensor,
                valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MSE between the frozen encoder's features of prediction and target; also returns the features."""
    pred = _fill_invalid(pred.float(), target.float(), valid)
    with torch.no_grad():
        target_features = encoder.encode(target.float())
    pred_features = encoder.encode(pred)
    return F.mse_loss(pred_features, target_features), pred_features, target_features


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean over pixels of the cosine similarity along channels (the spectral-angle term)."""
    return 1.0 - F.cosine_similarity(pred.float(), target.float(), dim=1, eps=1e-8).mean()


def lsgan_discriminator_loss(real_scores: list[torch.Tensor], fake_scores: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN: 0.5 [(D(y) - 1)^2 + D(G(x))^2], averaged over patches and scales."""
    terms = [0.5 * (((r.float() - 1) ** 2).mean() + (f.float() ** 2).mean()) for r, f in zip(real_scores, fake_scores)]
    return torch.stack(terms).mean()


def lsgan_generator_loss(fake_scores: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN: 0.5 (D(G(x)) - 1)^2, averaged over patches and scales."""
    return torch.stack([0.5 * ((f.float() - 1) ** 2).mean() for f in fake_scores]).mean()
