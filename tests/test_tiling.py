"""Tiled full-scene inference (stfusion.inference.tiling): exactness, window geometry, nodata, errors, seams.

The models here are small test-local nets with known receptive fields (checked by gradients below), so
these tests do not depend on stfusion.methods.models.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stfusion.errors import ConfigError, InputError
from stfusion.inference.tiling import Window, predict_scene, tile_windows, window_weights
from stfusion.methods.models.base import FusionModel, ModelTraits

BANDS = 3
HEIGHT, WIDTH = 70, 95


def _merge(fine_ref, coarse_ref, coarse_target):
    return torch.cat([fine_ref, coarse_ref, coarse_target], dim=1)


class PadConvNet(FusionModel):
    """Replicate padding once, then three unpadded 3x3 convs: receptive field 3, any alignment."""

    traits = ModelTraits(receptive_field=3)

    def __init__(self):
        super().__init__()
        self.pad = nn.ReplicationPad2d(3)
        self.body = nn.Sequential(nn.Conv2d(3 * BANDS, 8, 3), nn.Tanh(), nn.Conv2d(8, 8, 3), nn.Tanh(),
                                  nn.Conv2d(8, BANDS, 3))

    def forward(self, fine_ref, coarse_ref, coarse_target):
        return fine_ref + self.body(self.pad(_merge(fine_ref, coarse_ref, coarse_target)))


class DownUpNet(FusionModel):
    """A 2x down/up U-Net step with zero-padded convs: alignment 2, receptive field 5.

    head 3x3 (1 px) -> stride-2 conv k2 -> 3x3 at half resolution -> transposed conv k2 s2 reaches 4 px
    on one side, then the tail 3x3 adds 1. Odd sizes are replicate-padded to even before going down.
    """

    traits = ModelTraits(receptive_field=5, alignment=2)

    def __init__(self, width: int = 8):
        super().__init__()
        self.head = nn.Conv2d(3 * BANDS, width, 3, padding=1)
        self.down = nn.Conv2d(width, width, 2, stride=2)
        self.mid = nn.Conv2d(width, width, 3, padding=1)
        self.up = nn.ConvTranspose2d(width, width, 2, stride=2)
        self.tail = nn.Conv2d(2 * width, BANDS, 3, padding=1)

    def forward(self, fine_ref, coarse_ref, coarse_target):
        high = F.silu(self.head(_merge(fine_ref, coarse_ref, coarse_target)))
        height, width = high.shape[-2:]
        even = F.pad(high, (0, width % 2, 0, height % 2), mode="replicate")
        low = F.silu(self.mid(F.silu(self.down(even))))
        up = F.silu(self.up(low))[..., :height, :width]
        return self.tail(torch.cat([high, up], dim=1))


class InstanceNormNet(FusionModel):
    """Conv, instance norm, conv: the output depends on statistics of the whole input."""

    traits = ModelTraits(receptive_field=2, input_statistics=True)

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3 * BANDS, 8, 3, padding=1, padding_mode="replicate")
        self.norm = nn.InstanceNorm2d(8, affine=True)
        self.conv2 = nn.Conv2d(8, BANDS, 3, padding=1, padding_mode="replicate")

    def forward(self, fine_ref, coarse_ref, coarse_target):
        hidden = torch.tanh(self.norm(self.conv1(_merge(fine_ref, coarse_ref, coarse_target))))
        return 0.1 * self.conv2(hidden)


class Lying(FusionModel):
    """Wraps a model and declares other geometry, to show that the exactness test can fail."""

    def __init__(self, inner: FusionModel, **traits):
        super().__init__()
        self.inner = inner
        self.traits = replace(inner.traits, **traits)

    def forward(self, *inputs):
        return self.inner(*inputs)


def make_model(cls) -> nn.Module:
    torch.manual_seed(0)
    return cls()


def random_scene(height: int = HEIGHT, width: int = WIDTH, seed: int = 1) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return tuple(rng.uniform(0.0, 0.5, (BANDS, height, width)).astype(np.float32) for _ in range(3))


def whole_scene(model: nn.Module, arrays) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(*(torch.from_numpy(a)[None] for a in arrays))[0].numpy()


# --- the test models' declared geometry is honest ---------------------------------------------------

@pytest.mark.parametrize("cls", [PadConvNet, DownUpNet])
def test_receptive_field_is_honest(cls):
    """Gradients of single output pixels reach exactly receptive_field pixels away, never further."""
    model = make_model(cls).eval()
    inputs = [torch.from_numpy(a)[None].requires_grad_() for a in random_scene(32, 32)]
    reach = 0
    for y, x in itertools.product((14, 15), (16, 17)):  # both parities: DownUpNet is not shift-invariant
        for tensor in inputs:
            tensor.grad = None
        model(*inputs)[0, :, y, x].sum().backward()
        touched = sum(tensor.grad[0].abs().sum(0) for tensor in inputs) > 0
        rows, cols = np.nonzero(touched.numpy())
        reach = max(reach, np.abs(rows - y).max(), np.abs(cols - x).max())
    assert reach == model.traits.receptive_field


@pytest.mark.parametrize("cls", [PadConvNet, DownUpNet])
def test_lying_about_geometry_breaks_exactness(cls):
    """A too small margin or a wrong alignment is detected by the exactness comparison used below."""
    model = make_model(cls)
    arrays = random_scene()
    expected = whole_scene(model, arrays)
    liars = [Lying(model, receptive_field=1)]
    if model.traits.alignment > 1:
        liars.append(Lying(model, alignment=1))
    for liar in liars:
        tiled = predict_scene(liar, *arrays, tile=31, blend=4)
        assert np.abs(tiled - expected).max() > 1e-4


# --- exactness: tile size does not matter -----------------------------------------------------------

@pytest.mark.parametrize("cls", [PadConvNet, DownUpNet])
@pytest.mark.parametrize(("tile", "blend", "batch_size"), [(24, 8, 4), (31, 4, 1), (32, 0, 3), (50, 16, 4),
                                                           (128, 16, 4)])
def test_tiled_equals_whole_scene(cls, tile, blend, batch_size):
    model = make_model(cls)
    arrays = random_scene()
    expected = whole_scene(model, arrays)
    tiled = predict_scene(model, *arrays, tile=tile, blend=blend, batch_size=batch_size, device="cpu")
    assert tiled.dtype == np.float32 and tiled.shape == expected.shape
    np.testing.assert_allclose(tiled, expected, rtol=0, atol=1e-5)


def test_larger_margin_is_still_exact():
    model = make_model(DownUpNet)
    arrays = random_scene()
    tiled = predict_scene(model, *arrays, tile=40, margin=8, blend=6)
    np.testing.assert_allclose(tiled, whole_scene(model, arrays), rtol=0, atol=1e-5)


class RecordingNet(PadConvNet):
    """PadConvNet that records the shape of every batch it is given."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, *inputs):
        self.shapes.append(tuple(inputs[0].shape))
        return super().forward(*inputs)


def test_only_batches_of_windows_reach_the_model():
    """Memory stays bounded: at most batch_size windows of at most tile x tile pixels per forward pass."""
    model = make_model(RecordingNet)
    predict_scene(model, *random_scene(), tile=30, blend=4, batch_size=3)
    assert len(model.shapes) > 1
    assert all(n <= 3 and h <= 30 and w <= 30 for n, _, h, w in model.shapes)


def test_a_batch_holds_at_most_batch_pixels_but_always_one_window():
    model = make_model(RecordingNet)
    arrays = random_scene()
    reference = predict_scene(model, *arrays, tile=30, blend=4, batch_size=1)
    for pixels, most in ((2 * 30 * 30, 2), (30 * 30 - 1, 1)):
        model.shapes.clear()
        tiled = predict_scene(model, *arrays, tile=30, blend=4, batch_size=8, batch_pixels=pixels)
        assert max(n for n, *_ in model.shapes) == most
        np.testing.assert_allclose(tiled, reference, rtol=0, atol=1e-6)


# --- window geometry --------------------------------------------------------------------------------

GEOMETRIES = [
    # height, width, tile, margin, blend, alignment
    (70, 95, 24, 3, 8, 1),
    (70, 95, 24, 5, 8, 2),
    (70, 95, 128, 5, 16, 2),
    (64, 64, 64, 5, 16, 2),
    (65, 66, 64, 5, 16, 2),
    (101, 37, 21, 4, 0, 2),
    (300, 257, 64, 8, 16, 1),
    (300, 257, 64, 8, 16, 2),
    (9, 200, 30, 0, 1, 1),
]


@pytest.mark.parametrize(("height", "width", "tile", "margin", "blend", "alignment"), GEOMETRIES)
def test_windows_cover_and_respect_margins(height, width, tile, margin, blend, alignment):
    windows = tile_windows(height, width, tile=tile, margin=margin, blend=blend, alignment=alignment)
    assert len({w.shape for w in windows}) == 1  # one shape, so they batch
    weight_sum = np.zeros((height, width))
    for w in windows:
        assert 0 <= w.rows.start < w.rows.stop <= height and 0 <= w.cols.start < w.cols.stop <= width
        assert w.shape[0] <= tile and w.shape[1] <= tile
        assert w.rows.start % alignment == 0 and w.cols.start % alignment == 0
        for lo, hi, core_lo, core_hi, extent in ((w.rows.start, w.rows.stop, w.core_rows.start, w.core_rows.stop,
                                                  height),
                                                 (w.cols.start, w.cols.stop, w.core_cols.start, w.core_cols.stop,
                                                  width)):
            assert core_lo - lo == (0 if lo == 0 else margin)
            assert hi - core_hi == (0 if hi == extent else margin)
        weights = window_weights(w, blend)
        assert weights.dtype == np.float32 and weights.shape == w.shape
        core = np.zeros(w.shape, dtype=bool)
        core[w.core_local] = True
        assert (weights[~core] == 0).all() and (weights[core] > 0).all() and weights.max() <= 1
        weight_sum[w.rows, w.cols] += weights
    assert (weight_sum > 0).all()


def test_weights_ramp_inside_the_core_only():
    windows = tile_windows(100, 100, tile=40, margin=5, blend=10, alignment=1)
    interior = next(w for w in windows if w.ramp_top and w.ramp_bottom and w.ramp_left and w.ramp_right)
    row = window_weights(interior, 10)[20]
    np.testing.assert_allclose(row[:5], 0)
    np.testing.assert_allclose(row[5:15], (np.arange(10) + 0.5) / 10)
    np.testing.assert_allclose(row[15:25], 1)
    np.testing.assert_allclose(row[25:35], (np.arange(10)[::-1] + 0.5) / 10)
    np.testing.assert_allclose(row[35:], 0)


def test_adjacent_cores_overlap_by_blend():
    for alignment in (1, 2):
        windows = tile_windows(20, 301, tile=50, margin=6, blend=12, alignment=alignment)
        cores = sorted({(w.core_cols.start, w.core_cols.stop) for w in windows})
        assert cores[0][0] == 0 and cores[-1][1] == 301
        for (_, stop), (start, _) in itertools.pairwise(cores):
            assert stop - start >= 12


def test_scene_smaller_than_tile_is_one_window():
    (window,) = tile_windows(70, 95, tile=256, margin=8, blend=16, alignment=2)
    assert window == Window(slice(0, 70), slice(0, 95), slice(0, 70), slice(0, 95), False, False, False, False)
    assert (window_weights(window, 16) == 1).all()


# --- nodata -----------------------------------------------------------------------------------------

def test_non_finite_inputs_are_read_as_zero():
    model = make_model(DownUpNet)
    arrays = random_scene()
    rng = np.random.default_rng(5)
    holey = [a.copy() for a in arrays]
    for array, bad in zip(holey, (np.nan, np.inf, -np.inf), strict=True):
        array[rng.random(array.shape) < 0.05] = bad
    holey[0][:, 10:30, 40:60] = np.nan
    zeroed = [np.where(np.isfinite(a), a, 0).astype(np.float32) for a in holey]
    kept = [a.copy() for a in holey]
    result = predict_scene(model, *holey, tile=32, blend=4)
    assert np.isfinite(result).all()
    np.testing.assert_array_equal(result, predict_scene(model, *zeroed, tile=32, blend=4))
    for before, after in zip(kept, holey, strict=True):  # the caller's arrays are untouched
        np.testing.assert_array_equal(before, after)


# --- errors -----------------------------------------------------------------------------------------

def test_bad_inputs_name_the_argument():
    model = make_model(PadConvNet)
    good = random_scene(20, 20)
    with pytest.raises(InputError, match=r"coarse_ref has shape \(3, 20, 19\).*\(bands, H, W\)"):
        predict_scene(model, good[0], good[1][:, :, :19], good[2])
    with pytest.raises(InputError, match=r"fine_ref must be a 3-D .*\(bands, H, W\); got \(20, 20\)"):
        predict_scene(model, good[0][0], *good[1:])
    with pytest.raises(InputError, match="coarse_target must hold float"):
        predict_scene(model, *good[:2], (good[2] * 10000).astype(np.int16))


def test_bad_parameters_name_the_parameter():
    model = make_model(PadConvNet)
    arrays = random_scene(20, 20)
    with pytest.raises(ConfigError, match=r"margin=2 .*receptive field \(3 px\)"):
        predict_scene(model, *arrays, margin=2)
    with pytest.raises(ConfigError, match=r"tile must be > 2\*margin \+ blend.*tile=22, margin=3, blend=16"):
        predict_scene(model, *arrays, tile=22)
    with pytest.raises(ConfigError, match="alignment"):
        predict_scene(Lying(model, alignment=2), *arrays, tile=23, blend=16)
    with pytest.raises(ConfigError, match="batch_size"):
        predict_scene(model, *arrays, batch_size=0)
    with pytest.raises(ConfigError, match="batch_pixels"):
        predict_scene(model, *arrays, batch_pixels=0)
    with pytest.raises(ConfigError, match="Identity is not a FusionModel"):
        predict_scene(nn.Identity(), *arrays)


@pytest.mark.parametrize("traits", [{"receptive_field": -1}, {"receptive_field": 2.5}, {"receptive_field": 3, "alignment": 0},
                                    {"receptive_field": True}, {"receptive_field": 3, "reconstruction_scales": 0}])
def test_model_traits_are_checked_when_made(traits):
    with pytest.raises(ConfigError, match=next(k for k, v in traits.items() if k != "receptive_field" or v != 3)):
        ModelTraits(**traits)


def test_tile_at_the_limit_is_accepted():
    model = make_model(DownUpNet)
    arrays = random_scene(30, 41)  # small: the stride is 2, so windows are many
    tile = 2 * 5 + 4 + 2 * 2 - 1  # the smallest tile the docstring allows for alignment 2
    tiled = predict_scene(model, *arrays, tile=tile, blend=4, batch_size=64)
    np.testing.assert_allclose(tiled, whole_scene(model, arrays), rtol=0, atol=1e-5)


# --- models with input statistics -------------------------------------------------------------------

def smooth_scene(height: int = 96, width: int = 160) -> tuple[np.ndarray, ...]:
    """Slowly varying fields with a trend, so that every window has different statistics."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    arrays = []
    for k in range(3):
        bands = [0.1 + 0.002 * (x + (b + k) * y) + 0.05 * np.sin(x / (17 + 3 * b + k)) * np.cos(y / (23 + k))
                 for b in range(BANDS)]
        arrays.append(np.stack(bands).astype(np.float32))
    return tuple(arrays)


def test_input_statistics_whole_scene_when_it_fits():
    model = make_model(InstanceNormNet)
    arrays = random_scene()
    np.testing.assert_array_equal(predict_scene(model, *arrays, tile=max(HEIGHT, WIDTH)), whole_scene(model, arrays))


def seam_jumps(image: np.ndarray, windows: list[Window]) -> tuple[float, float]:
    """Largest neighbour difference across core boundaries, and elsewhere (columns and rows)."""
    seam_cols = {w.core_cols.start for w in windows if w.ramp_left} | {w.core_cols.stop for w in windows
                                                                     if w.ramp_right}
    seam_rows = {w.core_rows.start for w in windows if w.ramp_top} | {w.core_rows.stop for w in windows
                                                                    if w.ramp_bottom}
    col_jumps = np.abs(np.diff(image, axis=2)).max(axis=(0, 1))  # jump between columns i and i + 1
    row_jumps = np.abs(np.diff(image, axis=1)).max(axis=(0, 2))
    at_col = np.isin(np.arange(1, image.shape[2]), sorted(seam_cols))
    at_row = np.isin(np.arange(1, image.shape[1]), sorted(seam_rows))
    seam = max(col_jumps[at_col].max(), row_jumps[at_row].max())
    elsewhere = max(col_jumps[~at_col].max(), row_jumps[~at_row].max())
    return float(seam), float(elsewhere)


def test_input_statistics_tiled_is_blended(capsys):
    """Tiles change the numbers (reported, not asserted) but blending keeps seams as smooth as the rest."""
    model = make_model(InstanceNormNet)
    arrays = smooth_scene()
    expected = whole_scene(model, arrays)
    tile, margin = 48, 4
    blended = predict_scene(model, *arrays, tile=tile, margin=margin, blend=16)
    hard = predict_scene(model, *arrays, tile=tile, margin=margin, blend=0)
    assert blended.shape == expected.shape and np.isfinite(blended).all()
    seam, elsewhere = seam_jumps(blended, tile_windows(96, 160, tile=tile, margin=margin, blend=16))
    hard_seam, hard_elsewhere = seam_jumps(hard, tile_windows(96, 160, tile=tile, margin=margin, blend=0))
    with capsys.disabled():
        print(f"\ninstance norm, tile {tile}: max |tiled - whole| = {np.abs(blended - expected).max():.4g}; "
              f"seam jump {seam:.4g} vs {elsewhere:.4g} elsewhere (blend 16), "
              f"{hard_seam:.4g} vs {hard_elsewhere:.4g} (blend 0)")
    assert np.abs(blended - expected).max() > 1e-4  # the test scene does make tiles disagree
    assert hard_seam > 3 * hard_elsewhere  # without blending the seams stand out, so the check can fail
    assert seam <= 2 * elsewhere


# --- model state ------------------------------------------------------------------------------------

def test_model_flags_restored_and_eval_during_call():
    seen = []

    class Recording(PadConvNet):
        def forward(self, *inputs):
            seen.append((self.training, self.body.training, torch.is_inference_mode_enabled()))
            return super().forward(*inputs)

    model = make_model(Recording).train()
    model.pad.eval()  # mixed flags must come back as they were
    predict_scene(model, *random_scene(20, 20), tile=16, blend=2, progress=True)
    assert seen and all(flags == (False, False, True) for flags in seen)
    assert model.training and model.body.training and not model.pad.training
