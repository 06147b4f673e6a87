"""Noise schedules and samplers for conditional diffusion, kept apart from the denoisers (diffusers style).

- :class:`CosineSchedule`: Nichol and Dhariwal's cosine schedule, ``alphabar(t) = f(t) / f(0)`` with
  ``f(t) = cos(((t / T) + s) / (1 + s) * pi / 2)^2``, s = 0.008, betas clipped at 0.999 (STFDiff: T = 100).
- :func:`ddim_sample`: DDIM (Song et al. 2021) for a network that predicts x0, with ``steps`` and ``eta``.
  ``eta = 0`` is deterministic given the starting noise; ``eta = 1`` adds DDPM-like noise at every step.

The sampler draws no random numbers itself: the caller passes the starting noise and, for ``eta > 0``,
one noise image per step (:func:`noise_channels` says how many channels), so that a scene cut into tiles
can be given one noise field cut like its inputs, and tiles agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from stfusion.errors import ConfigError

__all__ = ["CosineSchedule", "ddim_sample", "ddim_times", "noise_channels"]


class CosineSchedule(nn.Module):
    """The cosine schedule's cumulative ``alphabar`` for t = 0 .. T - 1 (a buffer, so it follows the device)."""

    def __init__(self, timesteps: int = 100, s: float = 0.008, max_beta: float = 0.999):
        super().__init__()
        if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
            raise ConfigError(f"timesteps must be a positive integer, got {timesteps!r}")
        self.timesteps = timesteps
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
        self.register_buffer("alphabar", torch.cumprod(1 - betas, 0).float())

    def add_noise(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(alphabar_t) x0 + sqrt(1 - alphabar_t) noise, t: (N,) integer steps."""
        ab = self.alphabar[t].view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def ddim_times(timesteps: int, steps: int) -> list[tuple[int, int]]:
    """(t, s) pairs from T - 1 down to -1 (s = -1: the last step returns x0), as the reference code spaces them."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= timesteps:
        raise ConfigError(f"sample_steps must be an integer in [1, {timesteps}], got {steps!r}")
    grid = torch.linspace(-1, timesteps - 1, steps + 1).long().tolist()[::-1]
    return list(zip(grid[:-1], grid[1:]))


def noise_channels(bands: int, steps: int, eta: float) -> int:
    """Channels of the noise a sample needs: the start, plus one image per step but the last when eta > 0."""
    return bands * (1 + (steps - 1 if eta > 0 else 0))


Denoiser = Callable[[Tensor, Tensor], Tensor]
"""``denoise(x_t, t) -> x0 estimate``, t an (N,) tensor of integer steps; the conditions are bound in."""


def ddim_sample(denoise: Denoiser, schedule: CosineSchedule, noise: Tensor, *, steps: int, eta: float = 0.0,
                clip: float | None = None) -> Tensor:
    """Sample x0 by DDIM from ``noise`` (N, bands * k, H, W): the first ``bands`` channels start the chain,
    the rest (``eta > 0``) are the per-step noise. ``clip`` bounds each x0 estimate (None: no bound)."""
    if not eta >= 0:
        raise ConfigError(f"eta must be >= 0, got {eta!r}")
    times = ddim_times(schedule.timesteps, steps)
    bands = noise.shape[1] // noise_channels(1, steps, eta)
    if noise.shape[1] != noise_channels(bands, steps, eta):
        raise ConfigError(f"noise has {noise.shape[1]} channels; DDIM with {steps} steps and eta={eta} needs "
                          f"{noise_channels(1, steps, eta)} per band")
    x, extra = noise[:, :bands], noise[:, bands:]
    ab = schedule.alphabar
    for k, (t, s) in enumerate(times):
        x0 = denoise(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long))
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        if s < 0:
            return x0
        ab_t, ab_s = ab[t].to(x.dtype), ab[s].to(x.dtype)
        eps = (x - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
        sigma = eta * ((1 - ab_t / ab_s) * (1 - ab_s) / (1 - ab_t)).clamp(min=0).sqrt()
        x = ab_s.sqrt() * x0 + (1 - ab_s - sigma**2).clamp(min=0).sqrt() * eps
        if eta > 0:
            x = x + sigma * extra[:, k * bands:(k + 1) * bands]
    raise AssertionError("ddim_times always ends at s = -1")
