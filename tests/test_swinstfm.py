"""SwinSTFM: size, windowing of any grid, masks, reference skip, argument checks, whole-scene tiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stfusion.errors import ConfigError
from stfusion.methods.models import build_model
from stfusion.methods.models.swinstfm import MASKED, SwinBlock, SwinSTFM, WindowGeometry
from stfusion.inference.tiling import predict_scene

from model_inputs import n_params, triplet

TINY = {"embed_dim": 8, "depths": (1, 1, 2, 1), "decoder_depths": (1, 1, 1, 1), "head_dim": 4}


def test_paper_scale_parameter_count_matches_the_public_code():
    torch.manual_seed(0)
    model = SwinSTFM()
    # models.md: 37,535,290 in the public code (7.55 M per encoder); the review's Table 8 says 39.67 M.
    assert abs(n_params(model) - 37_535_290) <= 0.10 * 37_535_290
    assert abs(n_params(model) - 39_670_000) <= 0.10 * 39_670_000
    assert n_params(model.coarse_encoder) == n_params(model.fine_encoder) == 7_547_036
    assert n_params(build_model("swinstfm", {})) == n_params(model)


def test_interface_attributes():
    model = SwinSTFM(**TINY)
    assert (model.traits.alignment, model.traits.input_statistics, model.traits.uses_coarse_ref) == (32, True, True)
    assert not model.traits.stochastic
    assert model.traits.receptive_field == 64


@pytest.mark.parametrize("size", [(37, 45), (64, 64), (1, 3), (70, 33), (300, 20)])
def test_any_size_gives_a_finite_output_of_the_input_shape(size):
    torch.manual_seed(1)
    model = SwinSTFM(**TINY).eval()
    with torch.no_grad():
        out = model(*triplet(2, *size))
    assert out.shape == (2, 6, *size)
    assert torch.isfinite(out).all()


def test_window_shrinks_to_a_small_grid_without_shift():
    geometry = WindowGeometry(5, 11, window=8, shifted=True, device=torch.device("cpu"))
    assert (geometry.wh, geometry.sh) == (5, 0)  # 5 <= 8: one window along rows, not shifted
    assert (geometry.ww, geometry.sw) == (8, 4)
    assert (geometry.hp, geometry.wp) == (5, 16)


@pytest.mark.parametrize("shifted", [False, True])
def test_padded_tokens_are_never_attended(shifted):
    geometry = WindowGeometry(9, 13, window=4, shifted=shifted, device=torch.device("cpu"))
    keys = geometry.split(torch.ones(1, 9, 13, 1))[..., 0]  # (windows, L): 1 for a real key, 0 for padding
    allowed = geometry.mask == 0
    assert not (allowed & (keys[:, None, :] == 0)).any(), "a padded key is attended"
    # Every real query still has itself to attend to.
    diagonal = allowed.diagonal(dim1=1, dim2=2)
    assert (diagonal[keys == 1]).all()
    assert set(geometry.mask.unique().tolist()) <= {0.0, MASKED}


def test_padding_does_not_change_the_attention_of_real_tokens():
    """A 9 x 9 grid with window 8: row 8 shares its windows with padding only, so its tokens must give
    what they give on their own as a 1 x 8 grid (where the window shrinks to the grid, unpadded)."""
    torch.manual_seed(0)
    block = SwinBlock(dim=8, heads=2, window=8, shifted=False).eval()
    x = torch.randn(1, 9, 9, 8)
    with torch.no_grad():
        whole = block(x)
        row = block(x[:, 8:9, :8])
    torch.testing.assert_close(whole[:, 8, :8], row[:, 0], rtol=1e-5, atol=1e-5)


def test_a_forward_pass_builds_each_window_geometry_once(monkeypatch):
    """Blocks on the same grid with the same shift share one geometry in a pass (the paper tier built 57 for
    9 distinct ones); the result is the same as with a geometry per block."""
    from stfusion.methods.models import swinstfm

    built = []
    monkeypatch.setattr(swinstfm, "WindowGeometry", lambda *a: built.append(a[:4]) or WindowGeometry(*a))
    torch.manual_seed(0)
    model = SwinSTFM(bands=3, embed_dim=8, depths=(2, 2, 2, 2), decoder_depths=(2, 2, 2, 2), window=4).eval()
    x = [torch.rand(1, 3, 40, 48) for _ in range(3)]
    with torch.no_grad():
        shared = model(*x)
        assert len(built) == len(set(built)) < 40  # 4 levels x 2 shifts (+ the bottom's)
        per_block = swinstfm.SwinBlock.forward
        monkeypatch.setattr(swinstfm.SwinBlock, "forward", lambda self, y, geometries=None: per_block(self, y))
        assert torch.equal(model(*x), shared)


def _split_by_roll(geometry: WindowGeometry, x: torch.Tensor) -> torch.Tensor:
    """The textbook Swin windowing (pad, cyclic shift, partition) that the gather replaces."""
    x = F.pad(x, (0, 0, 0, geometry.wp - geometry.w, 0, geometry.hp - geometry.h))
    x = torch.roll(x, (-geometry.sh, -geometry.sw), (1, 2))
    n, h, w, c = x.shape
    x = x.view(n, h // geometry.wh, geometry.wh, w // geometry.ww, geometry.ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, geometry.wh * geometry.ww, c)


@pytest.mark.parametrize("grid", [(16, 16, True), (9, 13, True), (9, 13, False), (5, 11, True), (24, 8, True)])
def test_window_gather_equals_pad_roll_partition_with_its_gradient(grid):
    h, w, shifted = grid
    geometry = WindowGeometry(h, w, window=4, shifted=shifted, device=torch.device("cpu"))
    x = torch.randn(2, h, w, 3, requires_grad=True)
    windows = geometry.split(x)
    expected = _split_by_roll(geometry, x)
    assert torch.equal(windows, expected)
    weights = torch.randn_like(windows)
    torch.testing.assert_close(torch.autograd.grad((windows * weights).sum(), x)[0],
                               torch.autograd.grad((expected * weights).sum(), x)[0], rtol=0, atol=0)
    # join inverts split, and its gradient reaches only the real tokens' windows.
    y = windows.detach().requires_grad_()
    assert torch.equal(geometry.join(y, 2), x.detach())
    grad = torch.autograd.grad((geometry.join(y, 2) * x.detach()).sum(), y)[0]
    assert torch.equal(grad, _split_by_roll(geometry, x.detach()))  # padded tokens: zero gradient


def test_shift_mask_separates_wrapped_regions():
    geometry = WindowGeometry(16, 16, window=8, shifted=True, device=torch.device("cpu"))
    # After the cyclic shift the last window holds four regions from opposite scene corners.
    last = geometry.mask[-1] == 0
    assert last.sum(-1).tolist() == [16] * 64  # each token sees only its own 4 x 4 region
    assert geometry.mask[0].eq(0).all()  # the first window is one region


def test_reference_skip_starts_at_persistence_and_is_off_at_paper_scale():
    torch.manual_seed(0)
    f1, c1, c2 = triplet(1, 40, 24)
    with torch.no_grad():
        torch.testing.assert_close(SwinSTFM(**TINY, reference_skip=True)(f1, c1, c2), f1)
    assert SwinSTFM().reference_skip is False


def test_coarse_change_reaches_the_output():
    torch.manual_seed(0)
    model = SwinSTFM(**TINY).eval()
    f1, c1, c2 = triplet(1, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(model(f1, c1, c2), model(f1, c1, c1 + 0.2))
        assert not torch.allclose(model(f1, c1, c2), model(f1, c1 - 0.2, c2))  # C1 is used (uses_coarse_ref)


@pytest.mark.parametrize("arguments", [
    {"depths": (2, 2, 2)}, {"decoder_depths": (2, 2, 2, 0)}, {"window": 0}, {"embed_dim": 2.5},
    {"reference_skip": "yes"}, {"depths": "2222"},
])
def test_invalid_arguments_raise_config_error(arguments):
    with pytest.raises(ConfigError):
        SwinSTFM(**{**TINY, **arguments})


def test_whole_scene_tile_equals_the_forward_pass():
    torch.manual_seed(0)
    model = SwinSTFM(**TINY).eval()
    f1, c1, c2 = triplet(1, 50, 70)
    with torch.no_grad():
        expected = model(f1, c1, c2)[0].numpy()
    got = predict_scene(model, *(x[0].numpy() for x in (f1, c1, c2)), tile=256, device="cpu")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_tiled_prediction_is_finite_and_blends():
    torch.manual_seed(0)
    model = SwinSTFM(**TINY, reference_skip=True).eval()
    f1, c1, c2 = triplet(1, 300, 260)
    got = predict_scene(model, *(x[0].numpy() for x in (f1, c1, c2)), tile=256, device="cpu")
    assert got.shape == (6, 300, 260) and np.isfinite(got).all()
