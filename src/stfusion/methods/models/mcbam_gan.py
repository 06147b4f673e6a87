"""MCBAM-GAN (Liu et al. 2023, doi:10.3390/rs15061583): a U-Net GAN with CBAM attention, attentional
feature fusion (AFF) and multi-scale reconstruction.

No public code exists: this is the study's implementation of Section 3 of the paper. The generator
takes C2 and one fine image of any reference date; the discriminator is GAN-STFM's. Every choice made
where the paper is silent is in docs/methods/mcbam-gan.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stfusion.errors import ConfigError
from stfusion.methods.models.base import FusionModel, ModelTraits
from stfusion.methods.models.layers import SwitchNorm2d, check_channels, check_positive_int, conv3x3_rep, crop, pad_to_multiple

__all__ = ["AFF", "CBAM", "MCBAMGAN"]

SLOPE = 0.01  # LeakyReLU slope, as GAN-STFM (the paper gives none)
STAGES = 3  # encoder stages at scales 1, 1/2, 1/4 (choice 1)
ALIGNMENT = 2 ** (STAGES - 1)  # tiles start on the grid of the coarsest stage


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(SLOPE, inplace=True)


SKIPS = ("coarse-corrected", "reference", "none")  # choice 10


def box_filter(x: Tensor, size: int) -> Tensor:
    """Mean over a ``size`` x ``size`` window around each pixel, replicate-padded: same shape as ``x``.

    Separable (columns, then rows): 2 ``size`` additions per pixel instead of ``size``^2, which at
    ``size`` 20 would cost as much as the quick-tier generator itself."""
    low, high = size // 2, size - 1 - size // 2
    x = F.pad(x, (low, high, low, high), mode="replicate")
    return F.avg_pool2d(F.avg_pool2d(x, (size, 1), stride=1), (1, size), stride=1)


# --------------------------------------------------------------------------- attention modules


class ChannelAttention(nn.Module):
    """Mc(F) = sigmoid(MLP(avgpool F) + MLP(maxpool F)), shape (N, C, 1, 1)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))


class SpatialAttention(nn.Module):
    """Ms(F) = sigmoid(conv7x7([mean over channels; max over channels])), shape (N, 1, H, W)."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.conv(torch.cat((x.mean(1, keepdim=True), x.amax(1, keepdim=True)), 1)))


class CBAM(nn.Module):
    """Convolutional block attention: F' = Mc(F) F (Formula 8), F'' = Ms(F') F' (Formula 9)."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        x = self.channel(x) * x
        return self.spatial(x) * x


def _bottleneck(channels: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                         nn.Conv2d(hidden, channels, 1), nn.BatchNorm2d(channels))


class AFF(nn.Module):
    """Attentional feature fusion, Formula 4: M(f + c) * c + (1 - M(f + c)) * f."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.local_context = _bottleneck(channels, hidden)
        self.global_context = nn.Sequential(nn.AdaptiveAvgPool2d(1), _bottleneck(channels, hidden))

    def weights(self, fine: Tensor, coarse: Tensor) -> Tensor:
        """M, in (0, 1), shape (N, C, H, W)."""
        mixed = fine + coarse
        return torch.sigmoid(self.local_context(mixed) + self.global_context(mixed))

    def forward(self, fine: Tensor, coarse: Tensor) -> Tensor:
        m = self.weights(fine, coarse)
        return m * coarse + (1 - m) * fine


class ConcatFusion(nn.Module):
    """The channel cascade AFF replaces: 1x1 conv over cat(fine, coarse)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, fine: Tensor, coarse: Tensor) -> Tensor:
        return self.conv(torch.cat((fine, coarse), 1))


# --------------------------------------------------------------------------- generator blocks


class EncoderStage(nn.Module):
    """Figure 5a: main (fine) branch with switchable norm, horizontal (coarse) branch with CBAM, fusion."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, cbam: bool, aff: bool):
        super().__init__()
        self.main = nn.Sequential(
            SwitchNorm2d(in_channels), _lrelu(), conv3x3_rep(in_channels, out_channels, stride),
            SwitchNorm2d(out_channels), _lrelu(), conv3x3_rep(out_channels, out_channels),
        )  # fmt: skip
        self.horizontal = nn.Sequential(
            conv3x3_rep(in_channels, out_channels, stride), _lrelu(),
            conv3x3_rep(out_channels, out_channels), _lrelu(),
            *([CBAM(out_channels)] if cbam else []),
        )  # fmt: skip
        self.fusion = AFF(out_channels) if aff else ConcatFusion(out_channels)

    def forward(self, fine: Tensor, coarse: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(main features, coarse features, fused features)."""
        main, coarse = self.main(fine), self.horizontal(coarse)
        return main, coarse, self.fusion(main, coarse)


class ConcatBlock(nn.Module):
    """Figure 5b: trunk 3x3 conv, LeakyReLU, 3x3 conv; horizontal 1x1 conv; summed."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.trunk = nn.Sequential(conv3x3_rep(in_channels, out_channels), _lrelu(), conv3x3_rep(out_channels, out_channels))
        self.horizontal = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.trunk(x) + self.horizontal(x)


class Upsample(nn.Module):
    """Formula 6's PixelShuffle: 3x3 conv to 4 C channels, then a 2x pixel shuffle to C channels."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = conv3x3_rep(in_channels, 4 * out_channels)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.conv(x))


def _image_head(in_channels: int, out_channels: int, bands: int) -> nn.Sequential:
    return nn.Sequential(conv3x3_rep(in_channels, out_channels), _lrelu(), nn.Conv2d(out_channels, bands, 1))


class MCBAMGAN(FusionModel):
    """MCBAM-GAN generator; see the module docstring for the layout and every choice.

    ``channels = (c1, c2, c3)``: widths at scales 1, 1/2, 1/4 (paper tier (96, 192, 384)).
    ``depth``: number of reconstruction scales, 1 to 3 (Table 2). ``cbam``/``aff``: the ablation
    switches of Tables 3 and 4. ``skip``: what the output is added to (choice 10); ``ratio``: the coarse
    pixel side in fine pixels, used by the coarse-corrected skip: training fills it in from the data
    (``stfusion.train.fit.config_for_data``) and the weights file keeps it.
    """

    def __init__(self, bands: int = 6, channels: tuple[int, int, int] = (96, 192, 384), depth: int = 3,
                 cbam: bool = True, aff: bool = True, skip: str = "coarse-corrected", ratio: int | None = None):
        super().__init__()
        bands = check_positive_int("bands", bands)
        channels = check_channels("channels", channels, STAGES)
        depth = check_positive_int("depth", depth)
        if depth > STAGES:
            raise ConfigError(f"depth must be 1, 2 or 3 (reconstruction scales), got {depth!r}")
        for flag, value in (("cbam", cbam), ("aff", aff)):
            if not isinstance(value, bool):
                raise ConfigError(f"{flag} must be true or false, got {value!r}")
        if skip not in SKIPS:
            raise ConfigError(f"skip must be one of {list(SKIPS)}, got {skip!r}")
        self.bands, self.channels, self.depth, self.cbam, self.aff = bands, channels, depth, cbam, aff
        self.skip, self.ratio = skip, None if ratio is None else check_positive_int("ratio", ratio)

        widths = (bands, *channels)
        self.encoder = nn.ModuleList(
            EncoderStage(widths[i], widths[i + 1], 1 if i == 0 else 2, cbam, aff) for i in range(STAGES)
        )
        self.skip_norms = nn.ModuleList(SwitchNorm2d(c) for c in channels)  # Formula 5
        self.upsample = nn.ModuleList(Upsample(channels[i + 1], channels[i]) for i in range(STAGES - 1))
        # Level i concatenates A_i, AFF_i and (below the bottom) B_i, each c_i wide.
        self.concat = nn.ModuleList(
            ConcatBlock((2 if i == STAGES - 1 else 3) * c, c) for i, c in enumerate(channels)
        )
        self.heads = nn.ModuleList(_image_head(channels[i], channels[0], bands) for i in range(depth))
        if skip != "none":  # start from the skip image itself: the heads' last convolutions begin at 0
            for head in self.heads:
                nn.init.zeros_(head[-1].weight)
                nn.init.zeros_(head[-1].bias)

        # The coarse-corrected skip reaches 2 (ratio // 2) pixels: two box filters of side ratio.
        receptive_field = max(self._receptive_field(), 2 * (ratio // 2) if skip == "coarse-corrected" and ratio else 0)
        self.traits = ModelTraits(receptive_field=receptive_field, alignment=ALIGNMENT, input_statistics=True,
                                  uses_coarse_ref=False, ratio=self.ratio, reconstruction_scales=depth)

    def _receptive_field(self) -> int:
        """Upper bound of the convolution stack's reach, in full-resolution pixels (choice 9).

        A k x k convolution at scale s reaches (k // 2) s pixels further; a stride-2 convolution is
        applied at its input's scale; the 2x up-samplings (pixel shuffle, bilinear) add one coarse pixel
        of slack each. The two streams are followed separately until they are fused.
        """
        main = coarse = 0
        fused = []
        for i in range(STAGES):
            s_in, s = (1, 1) if i == 0 else (2 ** (i - 1), 2**i)
            main = (fused[-1] if fused else 0) + s_in + s
            coarse = coarse + s_in + s + (3 * s if self.cbam else 0)
            fused.append(max(main, coarse))
        x = fused[-1] + 2 * 2 ** (STAGES - 1)  # bottom concatenation block: two 3x3 convs
        level_reach = {STAGES - 1: x}
        for i in reversed(range(STAGES - 1)):
            s = 2**i
            up = x + 2 * s + 2 * s  # 3x3 conv at scale 2s, then one coarse pixel of shuffle slack
            x = max(up, fused[i]) + 2 * s
            level_reach[i] = x
        image = 0
        for i in reversed(range(self.depth)):
            s = 2**i
            head = level_reach[i] + s
            image = max(head, image + 2 * s if image else 0)  # bilinear up-sampling of the coarser image
        return int(image)

    def skip_image(self, fine_ref: Tensor, coarse_target: Tensor) -> Tensor:
        """What the heads' output is added to (choice 10): F_ref, or F_ref + box(C2) - box(box(F_ref))."""
        if self.skip == "reference":
            return fine_ref
        if self.ratio is None:
            raise ConfigError("ratio: the coarse-corrected skip needs the coarse over fine pixel size (from the data)")
        return fine_ref + box_filter(coarse_target, self.ratio) - box_filter(box_filter(fine_ref, self.ratio), self.ratio)

    def forward(self, fine_ref: Tensor, coarse_ref: Tensor | None, coarse_target: Tensor, *,
                all_scales: bool = False) -> Tensor | list[Tensor]:
        reference, size = pad_to_multiple(fine_ref, ALIGNMENT)
        fine = reference
        coarse, _ = pad_to_multiple(coarse_target, ALIGNMENT)
        skips = []
        for stage, norm in zip(self.encoder, self.skip_norms):
            main, coarse, fine = stage(fine, coarse)
            skips.append((norm(main), fine))  # (A_i, AFF_i); the fused features feed the next main branch

        levels = [self.concat[-1](torch.cat(skips[-1], 1))]
        for i in reversed(range(STAGES - 1)):
            below = self.upsample[i](levels[0])
            levels.insert(0, self.concat[i](torch.cat((*skips[i], below), 1)))

        images: list[Tensor] = []  # without the skip image: the predicted change (choice 10) or the image
        for i in reversed(range(self.depth)):
            image = self.heads[i](levels[i])
            if images:
                image = image + F.interpolate(images[0], scale_factor=2, mode="bilinear", align_corners=False)
            images.insert(0, image)
        if self.skip != "none":  # the reference skip is F_ref itself: already padded above
            base = (reference if self.skip == "reference"
                    else pad_to_multiple(self.skip_image(fine_ref, coarse_target), ALIGNMENT)[0])
            images = [image + (F.avg_pool2d(base, 2**i) if i else base) for i, image in enumerate(images)]
        if not all_scales:
            return crop(images[0], size)
        return [crop(image, (-(-size[0] // 2**i), -(-size[1] // 2**i))) for i, image in enumerate(images)]
