"""Per-band standardisation around any fusion generator.

``Standardized(model, mean, std)`` feeds the wrapped generator ``(x - mean) / std`` for each of
its three inputs (one set of per-band statistics, from the fine images of the training dates,
so fine and coarse inputs stay comparable) and maps its output back with ``y * std + mean``.
The statistics are buffers: they travel with the weights and are never trained.

Why: the public codes feed reflectance x 1e-4 directly (values 0.02-0.5 that differ by band),
which their hundreds of epochs absorb. With a few hundred CPU steps (the ``quick`` tier),
networks without a skip from F1 to the output spend most of their budget learning each band's
offset and scale; standardised inputs and targets remove that. It is a preprocessing choice,
set per tier (``standardize`` in params.yaml), and recorded in docs/methods/training.md.
Standardisation is per band and constant, so it changes neither the receptive field nor the
tiling behaviour of the wrapped model.
"""

from __future__ import annotations

import numpy as np
import torch

from stfusion.methods.models.base import FusionModel


class Standardized(FusionModel):
    def __init__(self, model: FusionModel, mean, std):
        super().__init__()
        self.model = model
        mean = torch.as_tensor(np.asarray(mean, dtype=np.float32)).view(1, -1, 1, 1)
        std = torch.as_tensor(np.asarray(std, dtype=np.float32)).view(1, -1, 1, 1)
        if (std <= 0).any() or not torch.isfinite(std).all() or not torch.isfinite(mean).all():
            raise ValueError(f"standardisation needs finite means and positive deviations, got {mean.flatten()}, {std.flatten()}")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.traits = model.traits  # the map is per pixel: it changes neither reach nor sampling

    def _in(self, x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std.to(y.dtype) + self.mean.to(y.dtype)

    def forward(self, fine_ref, coarse_ref=None, coarse_target=None, **options):
        """``options`` pass through (MCBAM-GAN's ``all_scales``, STFDiff's ``noise``); a list of outputs is mapped back one by one
        (the map is per band and constant, so it commutes with the average pooling between scales)."""
        out = self.model(self._in(fine_ref), self._in(coarse_ref), self._in(coarse_target), **options)
        return [self._out(y) for y in out] if isinstance(out, (list, tuple)) else self._out(out)


def band_statistics(fine: np.ndarray, valid: np.ndarray, reflectance_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation of ``fine`` (time, band, y, x) over valid pixels, in reflectance."""
    values = fine.astype(np.float64) / reflectance_scale
    mask = np.broadcast_to(valid[:, None].astype(bool), values.shape)
    mean = np.array([values[:, b][mask[:, b]].mean() for b in range(values.shape[1])])
    std = np.array([values[:, b][mask[:, b]].std() for b in range(values.shape[1])])
    return mean.astype(np.float32), np.maximum(std, 1e-4).astype(np.float32)
