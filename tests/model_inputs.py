"""Inputs shared by the model tests: reflectance-like (F1, C1, C2) batches and parameter counts."""

from __future__ import annotations

import torch


def n_params(module: torch.nn.Module) -> int:
    """All parameters, trainable or not (the counts the papers publish)."""
    return sum(p.numel() for p in module.parameters())


def triplet(n=2, h=32, w=32, bands=6, *, seed=0, dtype=torch.float32, requires_grad=False):
    """(F1, C1, C2) with a uniform coarse change of +0.05 and reflectance-like values, from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    f1 = 0.05 + 0.3 * torch.rand(n, bands, h, w, generator=g, dtype=dtype)
    c1 = f1 + 0.02 * torch.randn(n, bands, h, w, generator=g, dtype=dtype)
    return [t.detach().requires_grad_(requires_grad) for t in (f1, c1, c1 + 0.05)]
