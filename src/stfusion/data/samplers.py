"""Random patches from a datacube for training, without re-reading files per sample.

:class:`PairPatchDataset` holds the cube's int16 arrays in memory (public STF loaders re-read
three or four full scenes from disk for every patch) and cuts aligned patches of the
reference fine and coarse images, the target coarse and fine images and the mask of pixels to learn
from. Gaps in the fine reference (clouds, shadows) are filled from the coarse reference, as at
prediction time (:mod:`stfusion.data.gaps`), so the mask is where the target fine image is valid and the
coarse reference too; the losses skip every other pixel.

Augmentations are flips and 90-degree rotations of the spatial axes only, applied identically to
every image and to the mask, so band order is never touched (one public Transformer model
"rotated" the band axis).

Sample ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``: the same seed gives the same
patches whatever the number of workers.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr
from torch.utils.data import Dataset

from stfusion.data.datacube import date_index, valid_mask
from stfusion.data.gaps import fill_reference_gaps
from stfusion.data.splits import Pair
from stfusion.errors import ConfigError
from stfusion.units import to_reflectance


def augment(arrays: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Apply one random element of the dihedral group D4 to the last two axes of every array."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = {}
    for name, array in arrays.items():
        array = np.rot90(array, k, axes=(-2, -1))
        out[name] = np.flip(array, axis=-1) if flip else array
    return out


class PairPatchDataset(Dataset):
    """Patches of (reference, target) pairs.

    Each item is a dict of float32 tensors: ``fine_ref``, ``coarse_ref``, ``coarse_target``,
    ``fine_target`` (band, patch, patch) in reflectance (``fine_ref``'s gaps filled from ``coarse_ref``),
    and ``valid`` (1, patch, patch), 1 where the target and the coarse reference are valid.
    """

    def __init__(self, cube: xr.Dataset, pairs: list[Pair] | tuple[Pair, ...], *, patch_size: int,
                 samples_per_epoch: int, augment: bool = True, seed: int = 0, min_valid: float = 0.5):
        height, width = cube.sizes["y"], cube.sizes["x"]
        if not 0 < patch_size <= min(height, width):
            raise ConfigError(f"patch_size: {patch_size} must be in 1..{min(height, width)} for this cube")
        if samples_per_epoch < 1 or not pairs:
            raise ConfigError("samples_per_epoch and pairs: need at least one sample and one pair")
        self.fine = cube["fine"].values
        self.coarse = cube["coarse"].values
        self.valid = cube["valid"].values
        self.coarse_valid = np.stack([valid_mask(image) for image in self.coarse])
        self.pairs = [(date_index(cube, ref), date_index(cube, target)) for ref, target in pairs]
        self.patch_size, self.samples_per_epoch = patch_size, samples_per_epoch
        self.augment, self.seed, self.min_valid, self.epoch = augment, seed, min_valid, 0

    def set_epoch(self, epoch: int) -> None:
        """Draw new patches for ``epoch`` (call it each epoch, as with DistributedSampler)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _window(self, rng: np.random.Generator, ref: int, target: int) -> tuple[slice, slice]:
        size, (height, width) = self.patch_size, self.valid.shape[1:]
        for _ in range(20):  # redraw windows that are mostly nodata
            y, x = int(rng.integers(height - size + 1)), int(rng.integers(width - size + 1))
            window = (slice(y, y + size), slice(x, x + size))
            if self._learnable(ref, target, window).mean() >= self.min_valid:
                break
        return window

    def _learnable(self, ref: int, target: int, window) -> np.ndarray:
        return self.valid[target][window] & self.coarse_valid[ref][window]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        ref, target = self.pairs[int(rng.integers(len(self.pairs)))]
        ys, xs = self._window(rng, ref, target)
        coarse_ref = self.coarse[ref, :, ys, xs]
        arrays = {
            "fine_ref": fill_reference_gaps(self.fine[ref, :, ys, xs], coarse_ref, self.valid[ref, ys, xs] == 0),
            "coarse_ref": coarse_ref, "coarse_target": self.coarse[target, :, ys, xs],
            "fine_target": self.fine[target, :, ys, xs], "valid": self._learnable(ref, target, (ys, xs))[None],
        }
        if self.augment:
            arrays = augment(arrays, rng)
        sample = {
            name: torch.from_numpy(np.ascontiguousarray(to_reflectance(a)))
            for name, a in arrays.items() if name != "valid"
        }
        sample["valid"] = torch.from_numpy(np.ascontiguousarray(arrays["valid"], dtype=np.float32))
        sample["pair"] = torch.tensor([ref, target])
        return sample
