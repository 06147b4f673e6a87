"""What a coarse pixel is: the mean of the ``ratio`` x ``ratio`` fine pixels under it.

The synthetic coarse sensor, the band-order check on real pairs and FSDAF's unmixing all use this one
definition, so a coarse pixel means the same thing everywhere in the study.
"""

from __future__ import annotations

import torch


def block_mean(image, ratio: int, valid=None):
    """float64 (..., H // ratio, W // ratio) mean of the valid fine pixels under each coarse pixel.

    ``image`` is (..., H, W), a NumPy array or a tensor (the result is of the same kind and device);
    ``valid`` is a (H, W) mask (default: every pixel). A coarse pixel with no valid fine pixel is NaN;
    rows and columns past the last whole block are left out. Sums are taken in float64, so the mean
    of a uniform block is exact and the result does not depend on the summation order for
    float32 or integer input.
    """
    is_numpy = not isinstance(image, torch.Tensor)
    x = torch.as_tensor(image)
    h, w = x.shape[-2] // ratio, x.shape[-1] // ratio
    blocks = lambda a: a[..., : h * ratio, : w * ratio].reshape(*a.shape[:-2], h, ratio, w, ratio)  # noqa: E731
    x = blocks(x.double())
    if valid is None:
        mean = x.sum((-3, -1)) / float(ratio * ratio)
    else:
        v = blocks(torch.as_tensor(valid, device=x.device))
        mean = torch.where(v, x, 0.0).sum((-3, -1)) / v.sum((-3, -1))  # 0/0 = NaN where none is valid
    return mean.numpy() if is_numpy else mean


def valid_fraction(valid, ratio: int):
    """(H // ratio, W // ratio) share of valid fine pixels under each coarse pixel (float64)."""
    return block_mean(valid, ratio)  # block_mean sums in float64: True counts 1
