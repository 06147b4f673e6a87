"""Small building blocks shared by the fusion networks.

- ``conv3x3_rep``: replicate padding + unpadded 3x3 convolution, the convolution of EDCSTFN and GAN-STFM. Replicate rather than zero padding keeps image borders (and tile
  borders) free of the dark rim that zero padding teaches the network to undo.
- ``SwitchNorm2d``: switchable normalisation (Luo et al. 2019) as GAN-STFM uses it.
- ``pad_to_multiple`` / ``crop``: let networks that down-sample accept any H, W >= 1.
- ``check_positive_int`` / ``check_channels``: argument checks that raise ``ConfigError``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stfusion.errors import ConfigError

__all__ = [
    "SwitchNorm2d",
    "check_channels",
    "check_positive_int",
    "conv3x3_rep",
    "count_parameters",
    "crop",
    "pad_to_multiple",
]


# --------------------------------------------------------------------------- argument checks


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_int(name: str, value) -> int:
    """``value`` as an int, or ConfigError naming ``name``."""
    if not _is_int(value) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_channels(name: str, value, length: int) -> tuple[int, ...]:
    """``value`` as a tuple of ``length`` positive ints, or ConfigError naming ``name``."""
    expected = f"{name} must be a sequence of {length} positive integers"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"{expected}, got {value!r}")
    if len(value) != length or not all(_is_int(v) and v >= 1 for v in value):
        raise ConfigError(f"{expected}, got {value!r}")
    return tuple(int(v) for v in value)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (``sum(p.numel())``), the way the papers count them."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------- convolutions and padding


def conv3x3_rep(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """ReplicationPad2d(1) then an unpadded 3x3 convolution (keys ``0`` = pad, ``1`` = conv)."""
    return nn.Sequential(nn.ReplicationPad2d(1), nn.Conv2d(in_channels, out_channels, 3, stride=stride))


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Replicate-pad the bottom and right of ``x`` so H and W are multiples of ``multiple``.

    Only bottom/right so that the pooling grid stays anchored at the top-left pixel: a tile whose origin
    is a multiple of ``multiple`` then sees the same grid as the whole scene. Returns the padded tensor
    and the original (H, W) for ``crop``.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


def crop(x: Tensor, size: tuple[int, int]) -> Tensor:
    return x[..., : size[0], : size[1]]


# --------------------------------------------------------------------------- switchable normalisation


class SwitchNorm2d(nn.Module):
    """Switchable normalisation: a softmax-weighted mix of instance, layer and batch statistics.

    ``mean = sum_k softmax(mean_weight)_k mean_k`` and likewise for the variance, with k over IN (per
    sample and channel), LN (per sample) and BN (per channel over the batch); then an affine
    ``weight * x_hat + bias``. 2C + 6 parameters, as in the switchablenorms reference code that GAN-STFM
    copies.

    - BN statistics come from the batch in training mode and from running statistics in eval mode.
      **IN and LN statistics are always computed from the input**, also in eval mode, so the output of a
      pixel depends on the whole input tile: this is why GAN-STFM is tile-sensitive and why its ``input_statistics`` is True.
    - ``running_var`` starts at 1, not 0 as in the reference code: with 0, a model evaluated before its
      running statistics have converged divides the BN share by sqrt(eps) and explodes; 1 is the
      torch ``BatchNorm`` convention.
    - ``momentum`` follows the torch convention, ``running = (1 - momentum) running + momentum batch``;
      the default 0.1 equals the reference's ``0.9 running + 0.1 batch``.
    - Variances are population (biased) variances. The reference uses the unbiased per-instance variance,
      which is NaN for a 1x1 input; the difference is a factor n/(n-1), negligible for real patches.
      The running variance stores the same biased batch variance used in training, so eval-mode BN on a
      batch equal to the running statistics reproduces training-mode BN.
    - Mixing weights start at ones (equal thirds), weight at 1, bias at 0, as in the reference.
    """

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        if not eps > 0:
            raise ConfigError(f"eps must be positive, got {eps!r}")
        if not 0 <= momentum <= 1:
            raise ConfigError(f"momentum must be in [0, 1], got {momentum!r}")
        self.eps, self.momentum = float(eps), float(momentum)
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.mean_weight = nn.Parameter(torch.ones(3))  # IN, LN, BN
        self.var_weight = nn.Parameter(torch.ones(3))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        flat = x.reshape(n, c, h * w)
        mean_in = flat.mean(-1, keepdim=True)  # (N, C, 1)
        var_in = flat.var(-1, unbiased=False, keepdim=True)
        second_in = var_in + mean_in**2  # E[x^2] per sample and channel: pools exactly into LN and BN

        mean_ln = mean_in.mean(1, keepdim=True)  # (N, 1, 1)
        var_ln = (second_in.mean(1, keepdim=True) - mean_ln**2).clamp_min(0)  # clamp: rounding only

        if self.training:
            mean_bn = mean_in.mean(0, keepdim=True)  # (1, C, 1)
            var_bn = (second_in.mean(0, keepdim=True) - mean_bn**2).clamp_min(0)
            with torch.no_grad():
                self.running_mean.lerp_(mean_bn.flatten().to(self.running_mean.dtype), self.momentum)
                self.running_var.lerp_(var_bn.flatten().to(self.running_var.dtype), self.momentum)
        else:
            mean_bn = self.running_mean.view(1, c, 1).to(x.dtype)
            var_bn = self.running_var.view(1, c, 1).to(x.dtype)

        wm, wv = self.mean_weight.softmax(0), self.var_weight.softmax(0)
        mean = wm[0] * mean_in + wm[1] * mean_ln + wm[2] * mean_bn
        var = wv[0] * var_in + wv[1] * var_ln + wv[2] * var_bn
        out = (flat - mean) / (var + self.eps).sqrt()
        return out.view(n, c, h, w) * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.channels}, eps={self.eps}, momentum={self.momentum}"
