import numpy as np
import pytest
import torch

from stfusion.data.samplers import PairPatchDataset, augment
from stfusion.errors import ConfigError


def test_patches_are_aligned_crops_of_the_cube(tiny_processed):
    _, cube, splits = tiny_processed
    data = PairPatchDataset(cube, splits.train, patch_size=20, samples_per_epoch=8, augment=False, seed=1)
    sample = data[0]
    assert sample["fine_ref"].shape == (6, 20, 20) and sample["valid"].shape == (1, 20, 20)
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for k, t in sample.items() if k != "pair")
    ref, target = sample["pair"].tolist()
    fine = cube["fine"].values[ref] / 10000
    # Locate the patch in the full image: it must be an exact crop (no resampling, band order kept).
    patch = sample["fine_ref"].numpy()
    hits = [(y, x) for y in range(41) for x in range(21) if np.allclose(fine[:, y:y + 20, x:x + 20], patch)]
    assert hits
    y, x = hits[0]
    np.testing.assert_allclose(sample["fine_target"].numpy(), cube["fine"].values[target, :, y:y + 20, x:x + 20] / 10000)
    np.testing.assert_allclose(sample["coarse_target"].numpy(), cube["coarse"].values[target, :, y:y + 20, x:x + 20] / 10000)


def test_same_seed_same_samples_and_epochs_differ(tiny_processed):
    _, cube, splits = tiny_processed
    a = PairPatchDataset(cube, splits.train, patch_size=16, samples_per_epoch=4, seed=7)
    b = PairPatchDataset(cube, splits.train, patch_size=16, samples_per_epoch=4, seed=7)
    assert all(torch.equal(a[i]["fine_ref"], b[i]["fine_ref"]) for i in range(4))
    b.set_epoch(1)
    assert not all(torch.equal(a[i]["fine_ref"], b[i]["fine_ref"]) for i in range(4))


def test_augmentation_moves_masks_with_images_and_keeps_band_order():
    rng = np.random.default_rng(0)
    image = np.arange(6 * 5 * 5, dtype=np.float32).reshape(6, 5, 5)
    mask = np.zeros((1, 5, 5), np.float32)
    mask[0, 0, 1] = 1  # marks the pixel that holds image[:, 0, 1]
    for _ in range(16):
        out = augment({"image": image, "valid": mask}, rng)
        y, x = np.argwhere(out["valid"][0] == 1)[0]
        np.testing.assert_array_equal(out["image"][:, y, x], image[:, 0, 1])  # spectrum intact, same place
        assert sorted(out["image"][:, y, x]) == list(out["image"][:, y, x])  # band order unchanged


def test_bad_patch_size_is_refused(tiny_processed):
    _, cube, splits = tiny_processed
    with pytest.raises(ConfigError, match="patch_size"):
        PairPatchDataset(cube, splits.train, patch_size=500, samples_per_epoch=1)
