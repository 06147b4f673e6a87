"""The Lightning DataModule over a datacube and its split manifest.

Training patches come from training dates only; validation patches (for checkpoint selection)
from the validation pairs; the test pairs are never read here. Which (reference, target) pairs
train a model depends on how it uses its reference:

- ``"pairs"``: the manifest's training pairs (neighbouring training dates, both directions), as
  the CNNs are trained on (C1, F1, C2) -> F2 triplets;
- ``"random"``: GAN-STFM's reference-insensitive training, where the fine reference is drawn at
  random for every sample. The public code drew it from all fine images, test dates included; here it is drawn from the *other training dates* only (the
  public code could also draw the target date itself, which teaches the identity);
- ``"any"``: every training date as the reference of every training target, the target itself
  included, as the public GAN-STFM code draws it (from its whole pool; here from training dates only).
  MCBAM-GAN trains so: an F1 that is sometimes the target and sometimes months away can only be
  turned into F2 through C2, so the generator cannot learn a change from the look of F1 alone;
- ``"self"``: each training date with itself, for the feature autoencoder, which only ever sees
  fine images of training dates.

Patches are drawn by :class:`stfusion.data.samplers.PairPatchDataset`, a pure function of
(seed, epoch, index): :meth:`set_epoch` is called by the training task at every epoch start, so a
resumed run draws the same patches as an uninterrupted one. Validation patches are drawn once
(epoch 0, no augmentation) and are the same in every epoch.
"""

from __future__ import annotations

import lightning as L
import xarray as xr
from torch.utils.data import DataLoader

from stfusion.data.samplers import PairPatchDataset
from stfusion.data.splits import Pair, Splits
from stfusion.errors import ConfigError
from stfusion.train.config import TrainConfig

REFERENCE_MODES = ("pairs", "random", "any", "self")


def training_pairs(splits: Splits, references: str) -> list[Pair]:
    if references == "pairs":
        return list(splits.train)
    if references == "random":
        return [(ref, target) for target in splits.train_dates for ref in splits.train_dates if ref != target]
    if references == "any":
        return [(ref, target) for target in splits.train_dates for ref in splits.train_dates]
    if references == "self":
        return [(date, date) for date in splits.train_dates]
    raise ConfigError(f"references: expected one of {list(REFERENCE_MODES)}, got {references!r}")


def validation_pairs(splits: Splits, references: str) -> list[Pair]:
    if references == "self":
        return [(target, target) for _, target in splits.val]
    return list(splits.val)


class FusionDataModule(L.LightningDataModule):
    def __init__(self, cube: xr.Dataset, splits: Splits, config: TrainConfig, *, references: str = "pairs",
                 seed: int = 0, num_workers: int = 0):
        super().__init__()
        splits.check_no_leakage()
        self.config, self.seed, self.num_workers = config, seed, num_workers
        self.train_set = PairPatchDataset(
            cube, training_pairs(splits, references), patch_size=config.patch_size,
            samples_per_epoch=config.steps_per_epoch * config.batch_size, augment=True, seed=seed)
        val = validation_pairs(splits, references)
        if not val:
            raise ConfigError(f"splits of {splits.dataset}: no validation pairs; checkpoint selection needs "
                              "held-out validation dates (preprocess.splits n_val >= 1)")
        self.val_set = PairPatchDataset(cube, val, patch_size=config.patch_size,
                                        samples_per_epoch=config.val_patches, augment=False, seed=seed + 1)

    def set_epoch(self, epoch: int) -> None:
        self.train_set.set_epoch(epoch)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.config.batch_size, shuffle=False, drop_last=True,
                          num_workers=self.num_workers, persistent_workers=False)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.config.batch_size, shuffle=False,
                          num_workers=self.num_workers)
