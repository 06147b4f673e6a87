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

With DDP over W processes ``batch_size`` stays the batch of one optimiser step: process r takes
patches ``r*B/W .. (r+1)*B/W - 1`` of every batch, so the run takes the same steps over the same
patches as one process (DDP averages the gradients). Validation runs whole on every process, so
each sees the same score and selects the same checkpoint.

``micro_batch`` (params.yaml ``train.micro_batch``) bounds memory: the loaders then deliver each
process's batch in consecutive micro-batches, whose gradients the trainer accumulates into one step
(stfusion.train.fit); GANs take their batch whole and split it themselves (stfusion.train.tasks).
Validation runs in micro-batches too; its scores do not depend on them.
"""

from __future__ import annotations

import lightning as L
import xarray as xr
from torch.utils.data import DataLoader, Sampler

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


class BatchShard(Sampler[int]):
    """Process ``rank``'s share of every batch of ``batch_size`` consecutive samples, in order."""

    def __init__(self, samples: int, batch_size: int, rank: int, world_size: int):
        if batch_size % world_size:
            raise ConfigError(f"batch_size: {batch_size} does not split evenly over {world_size} processes "
                              "(train.devices); choose a multiple")
        self.share, self.rank, self.batches = batch_size // world_size, rank, samples // batch_size
        self.batch_size = batch_size

    def __iter__(self):
        for batch in range(self.batches):
            start = batch * self.batch_size + self.rank * self.share
            yield from range(start, start + self.share)

    def __len__(self) -> int:
        return self.batches * self.share


def micro_batches(batch_size: int, world_size: int, micro_batch: int | None) -> tuple[int, int]:
    """(samples per loader batch, loader batches per optimiser step) of one process."""
    share = batch_size // world_size
    if not micro_batch or micro_batch >= share:
        return share, 1
    if share % micro_batch:
        raise ConfigError(f"train.micro_batch: {micro_batch} does not divide the batch of {share} samples per "
                          f"process (batch_size {batch_size} over {world_size}); choose a divisor")
    return micro_batch, share // micro_batch


class FusionDataModule(L.LightningDataModule):
    def __init__(self, cube: xr.Dataset, splits: Splits, config: TrainConfig, *, references: str = "pairs",
                 seed: int = 0, num_workers: int = 0, micro_batch: int | None = None, whole_batches: bool = False):
        super().__init__()
        splits.check_no_leakage()
        self.config, self.seed, self.num_workers, self.micro_batch = config, seed, num_workers, micro_batch
        self.whole_batches = whole_batches  # training batches undivided, for a task that splits them itself
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
        world_size = self.trainer.world_size if self.trainer is not None else 1
        size, _ = micro_batches(self.config.batch_size, world_size, None if self.whole_batches else self.micro_batch)
        if world_size == 1:
            return DataLoader(self.train_set, batch_size=size, shuffle=False, drop_last=True,
                              num_workers=self.num_workers, persistent_workers=False)
        shard = BatchShard(len(self.train_set), self.config.batch_size, self.trainer.global_rank, world_size)
        return DataLoader(self.train_set, batch_size=size, sampler=shard, drop_last=True,
                          num_workers=self.num_workers, persistent_workers=False)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=micro_batches(self.config.batch_size, 1, self.micro_batch)[0],
                          shuffle=False, num_workers=self.num_workers)
