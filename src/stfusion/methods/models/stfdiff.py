"""STFDiff (Huang et al. 2024, doi:10.1016/j.inffus.2024.102505): conditional diffusion with a dual-stream
denoiser that predicts the fine image at the target date.

The schedule and the DDIM sampler live in :mod:`stfusion.methods.diffusion`; this file holds the denoiser
and :class:`STFDiff`, which binds them into the study's generator call. docs/methods/stfdiff.md gives
the architecture and the choices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stfusion.methods.diffusion import CosineSchedule, ddim_sample, noise_channels
from stfusion.errors import ConfigError
from stfusion.methods.models.base import FusionModel, ModelTraits, Sampling
from stfusion.methods.models.layers import check_positive_int, crop, pad_to_multiple

__all__ = ["DualStreamUNet", "STFDiff"]


class WeightStandardizedConv2d(nn.Conv2d):
    """Conv2d whose kernel is standardised per output channel at every call (Qiao et al. 2019)."""

    def forward(self, x: Tensor) -> Tensor:
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        mean = self.weight.mean(dim=(1, 2, 3), keepdim=True)
        var = self.weight.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
        weight = (self.weight - mean) * (var + eps).rsqrt()
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _groups(channels: int) -> int:
    return math.gcd(8, channels)


class ResidualBlock(nn.Module):
    """WS conv, GroupNorm, FiLM from the time embedding (when given), SiLU; conv, GroupNorm, SiLU; + residual."""

    def __init__(self, in_dim: int, out_dim: int, time_dim: int | None):
        super().__init__()
        self.conv1, self.norm1 = WeightStandardizedConv2d(in_dim, out_dim, 3, padding=1), nn.GroupNorm(_groups(out_dim), out_dim)
        self.conv2, self.norm2 = nn.Conv2d(out_dim, out_dim, 3, padding=1), nn.GroupNorm(_groups(out_dim), out_dim)
        self.film = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * out_dim)) if time_dim else None
        self.skip = nn.Conv2d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: Tensor, time: Tensor | None = None) -> Tensor:
        h = self.norm1(self.conv1(x))
        if self.film is not None:
            scale, shift = self.film(time)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = F.silu(self.norm2(self.conv2(F.silu(h))))
        return h + self.skip(x)


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """(N,) steps -> (N, dim) sin/cos features at geometric frequencies (Vaswani et al.)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / max(half - 1, 1))
    angles = t.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class DualStreamUNet(nn.Module):
    """The STFDiff denoiser: ``forward(x_t, t, fine_ref, coarse_ref, coarse_target) -> x0`` (see the module docstring)."""

    def __init__(self, bands: int = 6, dim: int = 64, dim_mults: Sequence[int] = (1, 2, 4)):
        super().__init__()
        self.dim = dim
        time_dim = 4 * dim
        self.time = nn.Sequential(nn.Linear(dim, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim))
        self.fine_stem = nn.Conv2d(bands, dim, 3, padding=1)
        self.coarse_stem = nn.Conv2d(2 * bands, dim, 3, padding=1)
        self.condition_stem = nn.Conv2d(2 * dim, dim, 1)
        self.noise_stem = nn.Conv2d(bands, dim, 3, padding=1)

        widths = [dim] + [dim * m for m in dim_mults]
        levels = list(zip(widths[:-1], widths[1:]))
        self.levels = len(levels)
        self.condition_down, self.noise_down = nn.ModuleList(), nn.ModuleList()
        for k, (d_in, d_out) in enumerate(levels):
            last = k == len(levels) - 1
            for stream, time in ((self.condition_down, None), (self.noise_down, time_dim)):
                resample = nn.Conv2d(d_in, d_out, 3, padding=1) if last else nn.Conv2d(d_in, d_out, 4, 2, 1)
                stream.append(nn.ModuleList([ResidualBlock(d_in, d_in, time), resample]))
        bottom = widths[-1]
        self.condition_mid, self.noise_mid = ResidualBlock(bottom, bottom, None), ResidualBlock(bottom, bottom, time_dim)
        self.up = nn.ModuleList()
        for k, (d_in, d_out) in enumerate(reversed(levels)):
            last = k == len(levels) - 1
            resample = (nn.Conv2d(d_out, d_in, 3, padding=1) if last else
                        nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(d_out, d_in, 3, padding=1)))
            self.up.append(nn.ModuleList([ResidualBlock(d_out + d_in, d_out, time_dim), resample]))
        self.final = ResidualBlock(2 * dim, dim, time_dim)
        self.out = nn.Conv2d(dim, bands, 1)
        # One evaluation's reach, for tiling: the encoder/decoder convolutions at each level's stride.
        self.receptive_field = self._receptive_field()

    def _receptive_field(self) -> int:
        reach = 1 + 2  # stems (3x3), final residual block's two 3x3 convs
        reach += 2
        stride = 1
        for k in range(self.levels):
            last = k == self.levels - 1
            reach += stride * (2 + (1 if last else 2))  # residual block (two 3x3) + resample (3x3 or 4x4 s2)
            reach += stride * (2 + 1)  # decoder residual block + its 3x3 conv
            stride *= 1 if last else 2
        return reach + 2 * stride  # bottleneck residual block

    def forward(self, x: Tensor, t: Tensor, fine_ref: Tensor, coarse_ref: Tensor, coarse_target: Tensor) -> Tensor:
        time = self.time(sinusoidal_embedding(t, self.dim).to(x.dtype))
        condition = self.condition_stem(torch.cat([self.fine_stem(fine_ref),
                                                   self.coarse_stem(torch.cat([coarse_ref, coarse_target], 1))], 1))
        noisy = self.noise_stem(x)
        stem_difference = noisy - condition
        skips = []
        for (c_block, c_resample), (n_block, n_resample) in zip(self.condition_down, self.noise_down):
            condition, noisy = c_block(condition), n_block(noisy, time)
            skips.append(noisy - condition)
            condition, noisy = c_resample(condition), n_resample(noisy)
        x = self.noise_mid(noisy, time) - self.condition_mid(condition)
        for block, resample in self.up:
            x = resample(block(torch.cat([x, skips.pop()], 1), time))
        return self.out(self.final(torch.cat([x, stem_difference], 1), time))


class STFDiff(FusionModel):
    """Denoiser + cosine schedule + DDIM sampler behind the generator call
    ``forward(fine_ref, coarse_ref, coarse_target, noise=None) -> fine_target``.

    ``timesteps``: T of the schedule; ``sample_steps``, ``eta``: DDIM; ``clip``: bound of each x0 estimate
    (None: none); ``residual``, ``gain``, ``shift``: what the chain generates (choices 1 and 2); ``seed``:
    noise when none is passed.
    """

    def __init__(self, bands: int = 6, dim: int = 64, dim_mults: Sequence[int] = (1, 2, 4), timesteps: int = 100,
                 sample_steps: int = 10, eta: float = 0.0, clip: float | None = 1.0, residual: bool = False,
                 gain: float = 2.0, shift: float = -1.0, seed: int = 0):
        super().__init__()
        self.bands, dim = check_positive_int("bands", bands), check_positive_int("dim", dim)
        if isinstance(dim_mults, (str, bytes)) or not isinstance(dim_mults, Sequence) or not dim_mults:
            raise ConfigError(f"dim_mults must be a non-empty sequence of positive integers, got {dim_mults!r}")
        dim_mults = tuple(check_positive_int(f"dim_mults[{i}]", m) for i, m in enumerate(dim_mults))
        self.schedule = CosineSchedule(check_positive_int("timesteps", timesteps))
        sample_steps = check_positive_int("sample_steps", sample_steps)
        if sample_steps > timesteps:
            raise ConfigError(f"sample_steps must be <= timesteps ({timesteps}), got {sample_steps}")
        for name, value in (("eta", eta), ("gain", gain), ("shift", shift)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        if eta < 0 or gain <= 0:
            raise ConfigError(f"eta must be >= 0 and gain > 0, got eta={eta!r}, gain={gain!r}")
        if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0):
            raise ConfigError(f"clip must be a positive number or null, got {clip!r}")
        if not isinstance(residual, bool):
            raise ConfigError(f"residual must be true or false, got {residual!r}")
        self.clip, self.residual = clip, residual
        self.gain, self.shift = float(gain), float(shift)
        self.seed = int(seed)
        self.denoiser = DualStreamUNet(self.bands, dim, dim_mults)
        sampling = Sampling(sample_steps, float(eta), noise_channels(self.bands, sample_steps, float(eta)))
        # input_statistics: see choice 4, the chain's reach grows with every step
        self.traits = ModelTraits(receptive_field=self.denoiser.receptive_field, alignment=2 ** (len(dim_mults) - 1),
                                  input_statistics=True, sampling=sampling)

    # -- the two spaces: what the chain generates (x0) and the fine image ---------------------------------

    def target_to_x0(self, fine_target: Tensor, fine_ref: Tensor) -> Tensor:
        return ((fine_target - fine_ref) if self.residual else fine_target) * self.gain + self.shift

    def x0_to_target(self, x0: Tensor, fine_ref: Tensor) -> Tensor:
        y = (x0 - self.shift) / self.gain
        return fine_ref + y if self.residual else y

    def denoise(self, x: Tensor, t: Tensor, fine_ref: Tensor, coarse_ref: Tensor, coarse_target: Tensor) -> Tensor:
        """The x0 estimate at step t (padding to the alignment handled here)."""
        size = x.shape[-2:]
        padded = [pad_to_multiple(v, self.traits.alignment)[0] for v in (x, fine_ref, coarse_ref, coarse_target)]
        return crop(self.denoiser(padded[0], t, *padded[1:]), size)

    def forward(self, fine_ref: Tensor, coarse_ref: Tensor, coarse_target: Tensor, noise: Tensor | None = None) -> Tensor:
        sampling = self.traits.sampling
        channels = sampling.noise_channels
        if noise is None:
            generator = torch.Generator().manual_seed(self.seed)
            shape = (fine_ref.shape[0], channels, *fine_ref.shape[-2:])
            noise = torch.randn(shape, generator=generator).to(fine_ref.device, fine_ref.dtype)
        if noise.shape[1] != channels or noise.shape[-2:] != fine_ref.shape[-2:]:
            raise ConfigError(f"noise has shape {tuple(noise.shape)}; expected (N, {channels}, "
                              f"{fine_ref.shape[-2]}, {fine_ref.shape[-1]}) for {sampling.steps} steps, eta={sampling.eta}")
        x0 = ddim_sample(lambda x, t: self.denoise(x, t, fine_ref, coarse_ref, coarse_target), self.schedule,
                         noise.to(fine_ref.dtype), steps=sampling.steps, eta=sampling.eta, clip=self.clip)
        return self.x0_to_target(x0, fine_ref)
