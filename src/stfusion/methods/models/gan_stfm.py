"""GAN-STFM (Tan, Gao, Li, Jiang; IEEE TGRS 2022): a reference-insensitive GAN for spatiotemporal fusion.

The generator predicts F2 from C2 and a fine image of *any* date, F_ref; no coarse image at the reference
date is needed, because switchable normalisation lets the network strip the reference's date-specific
radiometry and keep its spatial detail. A multi-scale conditional discriminator judges cat(image, C2).
Facts from the public code (theonegis/ganstfm, ``SFFusion`` and
``MSDiscriminator``).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from stfusion.errors import ConfigError
from stfusion.methods.models.base import FusionModel, ModelTraits
from stfusion.methods.models.layers import SwitchNorm2d, check_channels, check_positive_int, conv3x3_rep

__all__ = ["GANSTFM", "MultiScaleDiscriminator"]

SLOPE = 0.01  # LeakyReLU slope of generator and discriminator (torch default, as in the public code)


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(SLOPE, inplace=True)


# --------------------------------------------------------------------------- generator


class _SwitchNormBlock(nn.Module):
    """Encoder block carrying two streams; ``c = min(in, out)``.

    residual (fine) path:    SwitchNorm(in), LeakyReLU, 3x3 in->c, SwitchNorm(c), LeakyReLU, 1x1 c->out
    transform (coarse) path: 3x3 in->c, 1x1 c->out, LeakyReLU
    returns (lateral, residual(fine) + lateral) with lateral = transform(coarse).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        c = min(in_channels, out_channels)
        self.residual = nn.Sequential(
            SwitchNorm2d(in_channels), _lrelu(), conv3x3_rep(in_channels, c),
            SwitchNorm2d(c), _lrelu(), nn.Conv2d(c, out_channels, 1),
        )  # fmt: skip
        self.transform = nn.Sequential(conv3x3_rep(in_channels, c), nn.Conv2d(c, out_channels, 1), _lrelu())

    def forward(self, coarse: Tensor, fine: Tensor) -> tuple[Tensor, Tensor]:
        lateral = self.transform(coarse)
        return lateral, self.residual(fine) + lateral


class _ResidualBlock(nn.Module):
    """Decoder block: trunk 3x3 in->c, LeakyReLU, 1x1 c->out; shortcut 1x1 in->out; sum."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        c = min(in_channels, out_channels)
        self.residual = nn.Sequential(conv3x3_rep(in_channels, c), _lrelu(), nn.Conv2d(c, out_channels, 1))
        self.transform = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(x) + self.transform(x)


class GANSTFM(FusionModel):
    """GAN-STFM generator (public ``SFFusion``), full resolution throughout.

    With ``channels = (c1, c2, c3, c4)`` (paper tier (16, 32, 64, 128)) and B bands:

    - encoder: four ``_SwitchNormBlock`` B->c1->c2->c3->c4; the first block gets coarse = C2 and
      fine = F_ref, each later block the (lateral, fused) pair of the previous one;
    - decoder on cat(lateral, fused) (2 c4 channels): residual blocks 2c4->c4->c3->c2->c1 without
      normalisation, then a linear 1x1 conv c1->B.

    578,130 parameters at paper tier with 6 bands (encoder 120,348 + decoder 457,782), as the public code.

    Interface choices:

    - ``forward(fine_ref, coarse_ref, coarse_target)`` has the signature shared by all generators, but
      **``coarse_ref`` is ignored**: GAN-STFM is reference-insensitive and uses only C2 and F_ref, which may
      be a fine image of any date (``uses_coarse_ref = False``). ``coarse_ref`` may be None.
    - ``input_statistics = True``: switchable normalisation always takes instance and layer statistics
      from the input (also in eval mode), so every output pixel depends on the whole input tile and tiled
      inference is not exactly equal to whole-scene inference.
    - ``receptive_field = 8``: ignoring those statistics, each encoder block adds one 3x3 conv on each
      stream and each decoder block one 3x3 conv, 4 + 4 = 8 (a 17x17 window, as reported). ``alignment =
      1`` (no down-sampling).
    - SwitchNorm2d differs from the reference code in its running-variance start (1, not 0) and in using
      population variances; see ``SwitchNorm2d``.
    """

    def __init__(self, bands: int = 6, channels: tuple[int, int, int, int] = (16, 32, 64, 128)):
        super().__init__()
        bands = check_positive_int("bands", bands)
        channels = check_channels("channels", channels, 4)
        self.bands, self.channels = bands, channels

        widths = (bands, *channels)
        self.encoder = nn.ModuleList(_SwitchNormBlock(i, o) for i, o in zip(widths[:-1], widths[1:]))
        decoder_widths = (2 * channels[-1], *reversed(channels))
        self.decoder = nn.Sequential(
            *(_ResidualBlock(i, o) for i, o in zip(decoder_widths[:-1], decoder_widths[1:])),
            nn.Conv2d(channels[0], bands, 1),
        )

        self.traits = ModelTraits(receptive_field=8, input_statistics=True, uses_coarse_ref=False)

    def forward(self, fine_ref: Tensor, coarse_ref: Tensor | None, coarse_target: Tensor) -> Tensor:
        coarse, fine = coarse_target, fine_ref
        for block in self.encoder:
            coarse, fine = block(coarse, fine)
        return self.decoder(torch.cat((coarse, fine), 1))


# --------------------------------------------------------------------------- discriminator


class _SpectralResidualBlock(nn.Module):
    """Trunk BN, LeakyReLU, SN 3x3 in->in stride 2 (zero pad 1), BN, LeakyReLU, SN 1x1 in->out;
    shortcut SN 1x1 in->out stride 2; sum."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.residual = nn.Sequential(
            nn.BatchNorm2d(in_channels), _lrelu(),
            spectral_norm(nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1)),
            nn.BatchNorm2d(in_channels), _lrelu(),
            spectral_norm(nn.Conv2d(in_channels, out_channels, 1)),
        )  # fmt: skip
        self.transform = spectral_norm(nn.Conv2d(in_channels, out_channels, 1, stride=2))

    def forward(self, x: Tensor) -> Tensor:
        return self.transform(x) + self.residual(x)


class MultiScaleDiscriminator(nn.Module):
    """GAN-STFM's conditional multi-scale discriminator (public ``MSDiscriminator``).

    Input cat(image, C2) (2B channels) at full, 1/2 and 1/4 resolution, each judged by its own stack of
    ``_SpectralResidualBlock`` (each halves the resolution) ending in an SN 1x1 conv to one channel. Channel
    lists after the 2B input channels: (32, 32, 64, 64, 128, 128, 256, 256), (32, 64, 64, 128, 128, 256,
    256) and (32, 64, 128, 128, 256, 256), multiplied by ``width_multiplier`` (rounded, at least 1) for
    reduced scales. 3,665,959 parameters at paper tier with 6 bands (1,244,813 + 1,233,325 + 1,187,821),
    counted as ``sum(p.numel() for p in parameters())``: spectral norm keeps the unnormalised weight as
    the parameter ``parametrizations.weight.original``, and its power-iteration vectors u, v are buffers.

    Choices and deviations:

    - **Output: a list of three per-patch score maps** (N, 1, h, w), one per scale, instead of the public
      code's single scalar averaged over the batch and the three scales.
      The LSGAN loss is applied per patch and per sample; a 256-px patch gives 1x1 maps at every scale,
      where the mean of the per-patch losses differs from the public loss on the averaged score.
    - Spectral norm is ``torch.nn.utils.parametrizations.spectral_norm`` (one power iteration per
      training-mode forward, none in eval mode) instead of torchgan's ``SpectralNorm2d``.
    - Down-sampling is nearest, implemented as strided selection of pixels 0, s, 2s, ... and sizes
      max(1, H // s): the pixels ``F.interpolate(scale_factor=1/s)`` picks in the public code, but
      inputs smaller than 4 px still give a 1-pixel map instead of an error.
    - BatchNorm layers are kept: in training mode each needs more than one value per channel, so
      batches of 1 need patches large enough that every map stays above 1x1 (>= 256 px); use batch >= 2.
    """

    CHANNELS = (
        (32, 32, 64, 64, 128, 128, 256, 256),
        (32, 64, 64, 128, 128, 256, 256),
        (32, 64, 128, 128, 256, 256),
    )
    SCALES = (1, 2, 4)

    def __init__(self, bands: int = 6, width_multiplier: float = 1.0):
        super().__init__()
        bands = check_positive_int("bands", bands)
        if (
            isinstance(width_multiplier, bool)
            or not isinstance(width_multiplier, numbers.Real)
            or not math.isfinite(width_multiplier)
            or width_multiplier <= 0
        ):
            raise ConfigError(f"width_multiplier must be a positive finite number, got {width_multiplier!r}")
        self.bands, self.width_multiplier = bands, float(width_multiplier)

        self.discriminators = nn.ModuleList()
        for widths in self.CHANNELS:
            widths = (2 * bands, *(max(1, round(c * width_multiplier)) for c in widths))
            blocks = [_SpectralResidualBlock(i, o) for i, o in zip(widths[:-1], widths[1:])]
            self.discriminators.append(nn.Sequential(*blocks, spectral_norm(nn.Conv2d(widths[-1], 1, 1))))

    @staticmethod
    def _subsample(x: Tensor, step: int) -> Tensor:
        h, w = max(1, x.shape[-2] // step), max(1, x.shape[-1] // step)
        return x[..., : h * step : step, : w * step : step]

    def forward(self, image: Tensor, coarse_target: Tensor) -> list[Tensor]:
        x = torch.cat((image, coarse_target), 1)
        return [d(self._subsample(x, s)) for d, s in zip(self.discriminators, self.SCALES)]
