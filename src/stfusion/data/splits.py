"""The split manifest: which (reference date, target date) pairs train, validate and test.

Dates are held out, not patches: a test *target* date's fine image is never used for training
(neither as target nor as reference) nor for checkpoint selection. Validation targets are held
out from training as well, so that the validation score that picks checkpoints is honest.

- test targets and validation targets are interior dates (they have neighbours on both sides);
- the remaining dates are training dates; training pairs join neighbouring training dates, in
  both directions (models that draw references at random use ``train_dates`` instead);
- each validation and test pair takes the nearest earlier date that is not a test target as its
  reference (the nearest later one if there is none), as in the single-pair protocol of
  Emelyanova et al. (2013). A validation date can serve as a test reference: its fine image is an
  input at test time, never a label;
- each test target also records its two-pair references (``brackets``): the nearest date before and the
  nearest after it that are not test targets, for methods that take a pair on either side (ESTARFM).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stfusion.errors import ConfigError, InputError
from stfusion.io import write_json

Pair = tuple[str, str]  # (reference date, target date), ISO strings


@dataclass(frozen=True)
class Splits:
    dataset: str
    train_dates: tuple[str, ...]
    train: tuple[Pair, ...]
    val: tuple[Pair, ...]
    test: tuple[Pair, ...]
    brackets: tuple[tuple[str, str, str], ...] = ()  # (test target, date before, date after)

    def bracket(self, target: str, *, who: str) -> Pair:
        """The pair before and the pair after test target ``target``, for ``who`` (a two-pair method)."""
        found = {t: (before, after) for t, before, after in self.brackets}
        if target not in found:
            raise InputError(f"splits of {self.dataset}: test target {target} has no reference date on one side; "
                             f"{who} needs one before and one after it (preprocess.splits.{self.dataset}: "
                             "test targets with other dates around them)")
        return found[target]

    @property
    def test_targets(self) -> set[str]:
        return {target for _, target in self.test}

    @property
    def val_targets(self) -> set[str]:
        return {target for _, target in self.val}

    def check_no_leakage(self) -> None:
        """Raise if a test target is used in training or validation, or a val target in training."""
        used_in_training = set(self.train_dates) | {d for pair in self.train for d in pair}
        used_in_validation = {d for pair in self.val for d in pair}
        references = {d for pair in self.test for d in pair[:1]} | {d for _, *pair in self.brackets for d in pair}
        leaked = self.test_targets & (used_in_training | used_in_validation | references)
        if leaked:
            raise InputError(f"splits of {self.dataset}: test target dates {sorted(leaked)} leak into training, "
                             "validation or the test references")
        leaked = self.val_targets & used_in_training
        if leaked:
            raise InputError(f"splits of {self.dataset}: validation target dates {sorted(leaked)} leak into training")
        if not self.train or not self.test:
            raise InputError(f"splits of {self.dataset}: need at least one training and one test pair")

    def pairs(self, split: str) -> tuple[Pair, ...]:
        if split not in ("train", "val", "test"):
            raise ConfigError(f"split: {split!r} is not one of 'train', 'val', 'test'")
        return getattr(self, split)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "train_dates": list(self.train_dates),
            "train": [list(p) for p in self.train],
            "val": [list(p) for p in self.val],
            "test": [list(p) for p in self.test],
            "brackets": [list(b) for b in self.brackets],
        }

    def save(self, path: str | os.PathLike) -> Path:
        self.check_no_leakage()
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Splits":
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: split manifest not found; run the preprocess stage first")
        raw = json.loads(path.read_text())
        splits = cls(
            raw["dataset"], tuple(raw["train_dates"]),
            *(tuple(tuple(p) for p in raw[k]) for k in ("train", "val", "test")),
            tuple(tuple(b) for b in raw.get("brackets", [])),
        )
        splits.check_no_leakage()
        return splits


def _evenly_spaced(candidates: list[str], count: int) -> list[str]:
    if count <= 0:
        return []
    step = len(candidates) / count
    return [candidates[int(step * (i + 0.5))] for i in range(count)]


def _choose_targets(dates: list[str], test: list[str] | None, val: list[str] | None, n_test: int, n_val: int, key: str):
    interior = dates[1:-1]
    for name, chosen in (("test_targets", test), ("val_targets", val)):
        for date in chosen or []:
            if date not in interior:
                raise ConfigError(
                    f"{key}.{name}: {date} is not an interior date of the dataset; choose from {interior}"
                )
    if test is None:
        if n_test + n_val > len(interior):
            raise ConfigError(f"{key}: n_test + n_val = {n_test + n_val} exceeds the {len(interior)} interior dates")
        test = _evenly_spaced(interior, n_test)
    if val is None:
        remaining = [d for d in interior if d not in test]
        # Place validation targets between test targets so each sits near its own neighbours.
        val = _evenly_spaced(remaining, n_val)
    overlap = set(test) & set(val)
    if overlap:
        raise ConfigError(f"{key}: dates {sorted(overlap)} are both test and validation targets")
    return sorted(test), sorted(val)


def _reference_for(target: str, dates: list[str], excluded: set[str]) -> str:
    """Nearest earlier usable date, else the nearest later one."""
    idx = dates.index(target)
    earlier = [d for d in dates[:idx] if d not in excluded]
    later = [d for d in dates[idx + 1:] if d not in excluded]
    return earlier[-1] if earlier else later[0]


def _bracket(target: str, dates: list[str], excluded: set[str]) -> Pair | None:
    """The nearest usable dates before and after ``target``, or None if one side has none."""
    idx = dates.index(target)
    earlier = [d for d in dates[:idx] if d not in excluded]
    later = [d for d in dates[idx + 1:] if d not in excluded]
    return (earlier[-1], later[0]) if earlier and later else None


def make_splits(
    dataset: str,
    dates: list[str],
    *,
    test_targets: list[str] | None = None,
    val_targets: list[str] | None = None,
    n_test: int = 2,
    n_val: int = 1,
    key: str = "preprocess.splits",
) -> Splits:
    """Build the split of ``dates``. Explicit target lists win over the ``n_test``/``n_val`` counts."""
    if len(dates) < 3 + n_val:
        raise ConfigError(f"{key}: dataset {dataset} has {len(dates)} dates; at least {3 + n_val} are needed")
    test, val = _choose_targets(list(dates), test_targets, val_targets, n_test, n_val, key)
    train_dates = [d for d in dates if d not in test and d not in val]
    train = [pair for a, b in zip(train_dates, train_dates[1:]) for pair in ((a, b), (b, a))]
    test_set = set(test)
    val_pairs = [(_reference_for(t, dates, test_set | set(val)), t) for t in val]
    test_pairs = [(_reference_for(t, dates, test_set), t) for t in test]
    brackets = tuple((t, *b) for t in test if (b := _bracket(t, dates, test_set)) is not None)
    splits = Splits(dataset, tuple(train_dates), tuple(train), tuple(val_pairs), tuple(test_pairs), brackets)
    splits.check_no_leakage()
    return splits
