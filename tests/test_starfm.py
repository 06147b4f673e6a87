"""STARFM: the CPU kernel and the torch path against a per-pixel reference written straight from the rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stfusion.methods.baselines import starfm as starfm_module
from stfusion.methods.baselines.starfm import StarfmParams, predict_starfm, starfm
from stfusion.errors import InputError

SMALL = StarfmParams(max_search_distance=75)  # WIN_SIZE 6: offsets -3..+2, as the C code
SMALL_SYMMETRIC = StarfmParams(max_search_distance=75, symmetric_window=True)  # -3..+3


def reference_starfm(fine, coarse, target, valid=None, params=StarfmParams()):
    """Gao's C code v1.2.1, one pixel at a time (module docstring rules 0-8); slow, tiny images only."""
    fine, coarse = (np.asarray(a, np.float64) for a in (fine, coarse))
    fine, coarse = (a if a.ndim == 4 else a[None] for a in (fine, coarse))
    pairs, bands, height, width = fine.shape
    scale = params.reflectance_scale
    r0, r1 = round(params.data_range[0] * scale), round(params.data_range[1] * scale)

    def units(a):
        u = np.rint(np.asarray(a, np.float64) * scale)
        with np.errstate(invalid="ignore"):
            u[~((u >= r0) & (u <= r1))] = np.nan
        return u

    L, M, T = units(fine), units(coarse), units(target)
    mask = np.ones((pairs, height, width), bool) if valid is None else np.broadcast_to(valid, (pairs, height, width))

    slices = np.zeros((pairs, bands), int)  # rule 1
    for p in range(pairs):
        for b in range(bands):
            x = [L[p, b, i, j] for i in range(height) for j in range(width) if mask[p, i, j] and r0 < L[p, b, i, j] < r1]
            n, sx, sx2 = len(x), sum(x), sum(v * v for v in x)
            slices[p, b] = int(int(math.sqrt(sx2 / n - (sx / n) ** 2)) * 2.0 / params.num_slice_pure_test + 0.5)
    u_m = int(params.modis_uncertainty * scale + 1e-6)  # rule 3
    u_l = int(params.landsat_uncertainty * scale + 1e-6)
    r_msr, r_lsr = int(math.sqrt(2 * u_m * u_m)), int(math.sqrt(u_m * u_m + u_l * u_l))
    combined = int(math.sqrt(r_msr**2 + r_lsr**2))
    size = int(2 * params.max_search_distance / params.resolution)  # rule 0
    last = size // 2 if params.symmetric_window else size - 1 - size // 2
    offsets = range(-(size // 2), last + 1) if params.use_spatial else range(0, 1)

    def ok(p, b, i, j):
        inside = 0 <= i < height and 0 <= j < width
        return inside and mask[p, i, j] and not np.isnan([L[p, b, i, j], M[p, b, i, j], T[b, i, j]]).any()

    out = np.full((bands, height, width), np.nan)
    for b in range(bands):
        for i in range(height):
            for j in range(width):
                usable = [p for p in range(pairs) if ok(p, b, i, j)]
                if not usable:
                    continue
                min_lsr = min([r1] + [abs(M[p, b, i, j] - L[p, b, i, j]) for p in usable])  # rule 4
                min_msr = min([r1] + [abs(M[p, b, i, j] - T[b, i, j]) for p in usable])
                sw = swp = 0.0
                for p in usable:
                    for dy in offsets:
                        for dx in offsets:
                            y, x = i + dy, j + dx
                            if not ok(p, b, y, x):
                                continue
                            if params.use_spatial and not abs(L[p, b, y, x] - L[p, b, i, j]) < slices[p, b]:  # rule 2
                                continue
                            d_lsr, d_msr = abs(M[p, b, y, x] - L[p, b, y, x]), abs(M[p, b, y, x] - T[b, y, x])
                            if d_lsr > min_lsr + r_lsr and d_msr > min_msr + r_msr:  # rule 4
                                continue
                            t = d_lsr + 1 if pairs == 1 else (d_msr + 1) * (d_lsr + 1)  # rule 5
                            d = math.hypot(dy, dx)
                            factor = 1 + (d * params.resolution / params.max_search_distance if d else 0)
                            w = 1.0 if t < combined else 1.0 / (t * factor)  # rule 6
                            sw += w
                            swp += w * (L[p, b, y, x] + T[b, y, x] - M[p, b, y, x])  # rule 7
                if sw > 0 and r0 < swp / sw < r1:
                    out[b, i, j] = swp / sw / scale
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Inputs


def random_scene(rng, pairs=1, bands=2, height=12, width=14):
    """Random texture; coarse = fine + noise of the size of the uncertainties, so every rule branches."""
    shape = (pairs, bands, height, width)
    fine = rng.uniform(0.02, 0.6, shape)
    coarse = fine + rng.normal(0, 0.01, shape) + 0.005
    target = coarse[0] + rng.normal(0.02, 0.015, shape[1:])
    return fine.astype(np.float32), coarse.astype(np.float32), target.astype(np.float32)


def field_scene(rng, pairs=1, bands=2, height=12, width=14):
    """Fields with sharp edges, a little texture, coarse = 2 x 2 block means, a change per field."""
    labels = (np.arange(height)[:, None] // 5) * 3 + (np.arange(width)[None, :] * 3 // width)
    labels[3:9, 6:10] = 9  # a field across the others' edges
    level = rng.uniform(0.05, 0.5, (bands, 10))
    fine = level[:, labels] + rng.normal(0, 0.004, (pairs, bands, height, width))
    fine[1:] += 0.01 * np.arange(1, pairs)[:, None, None, None]
    blocks = fine.reshape(pairs, bands, height // 2, 2, width // 2, 2).mean(axis=(3, 5))
    coarse = blocks.repeat(2, axis=2).repeat(2, axis=3)
    target = coarse[0] + rng.uniform(-0.05, 0.08, (bands, 10))[:, labels]
    return fine.astype(np.float32), coarse.astype(np.float32), target.astype(np.float32)


def squeeze(fine, coarse, pairs):
    return (fine[0], coarse[0]) if pairs == 1 else (fine, coarse)


# ---------------------------------------------------------------------------------------------
# Against the reference


@pytest.mark.parametrize("scene", [random_scene, field_scene])
@pytest.mark.parametrize("pairs", [1, 2])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_reference(scene, pairs, masked):
    rng = np.random.default_rng(10 * pairs + masked)
    fine, coarse, target = scene(rng, pairs)
    valid = None
    if masked:
        valid = rng.random((pairs, 12, 14)) > 0.2 if pairs == 2 else rng.random((12, 14)) > 0.2
        target[1, 4, 5] = np.nan  # non-finite and out-of-range values are nodata too
        coarse[0, 0, 7, 2] = np.inf
        fine[-1, 1, 2, 11] = 1.2
    fine, coarse = squeeze(fine, coarse, pairs)
    expected = reference_starfm(fine, coarse, target, valid, SMALL)
    got = predict_starfm(fine, coarse, target, valid=valid, ratio=2, params=SMALL, device="cpu")
    assert got.dtype == np.float32 and got.shape == target.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)
    assert np.isfinite(got).mean() > 0.5  # the comparison is not vacuous
    if masked:
        always_invalid = ~np.broadcast_to(valid, (pairs, 12, 14)).any(axis=0)
        assert np.isnan(got[:, always_invalid]).all()
        assert np.isnan(got[1, 4, 5])


@pytest.mark.parametrize("params", [SMALL_SYMMETRIC, StarfmParams(max_search_distance=75, use_spatial=False),
                                    StarfmParams(max_search_distance=50, landsat_uncertainty=0.002, modis_uncertainty=0.01)])
def test_matches_reference_other_parameters(params):
    fine, coarse, target = field_scene(np.random.default_rng(5), pairs=2)
    expected = reference_starfm(fine, coarse, target, None, params)
    got = predict_starfm(fine, coarse, target, ratio=2, params=params, device="cpu")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)


def test_the_sample_filter_matters_on_the_test_scenes():
    """Rule 4 drops candidates on the random scene, so the reference comparisons exercise it."""
    fine, coarse, target = random_scene(np.random.default_rng(1))
    no_filter = StarfmParams(max_search_distance=75, landsat_uncertainty=1.0, modis_uncertainty=1.0)
    a = predict_starfm(fine[0], coarse[0], target, ratio=2, params=SMALL)
    b = predict_starfm(fine[0], coarse[0], target, ratio=2, params=no_filter)
    assert np.nanmax(np.abs(a - b)) > 1e-3


@pytest.mark.parametrize("pairs", [1, 2])
@pytest.mark.parametrize("tile", [1, 5, 13, (5, 14), (12, 3)])
def test_tiles_do_not_change_the_result(pairs, tile):
    rng = np.random.default_rng(7)
    fine, coarse, target = field_scene(rng, pairs)
    valid = rng.random((12, 14)) > 0.1
    fine, coarse = squeeze(fine, coarse, pairs)
    whole = predict_starfm(fine, coarse, target, valid=valid, ratio=2, params=SMALL, tile=64, device="cpu")
    tiled = predict_starfm(fine, coarse, target, valid=valid, ratio=2, params=SMALL, tile=tile, device="cpu")
    np.testing.assert_array_equal(tiled, whole)  # bit for bit, NaN included


@pytest.mark.parametrize("pairs", [1, 2])
@pytest.mark.parametrize("params", [StarfmParams(max_search_distance=250), StarfmParams(max_search_distance=250, symmetric_window=True),
                                    StarfmParams(max_search_distance=250, reflectance_scale=40000.0)],  # int32 terms
                         ids=["c-window", "symmetric", "int32"])
def test_the_cpu_kernel_gives_the_bits_of_the_torch_path(pairs, params, monkeypatch):
    rng = np.random.default_rng(pairs)
    fine = rng.uniform(0.05, 0.5, (pairs, 3, 60, 70)).astype(np.float32)
    coarse = (fine + rng.normal(0, 0.01, fine.shape)).astype(np.float32)
    target = (coarse[0] + rng.uniform(-0.02, 0.05)).astype(np.float32)
    valid = rng.random((60, 70)) > 0.05
    fine, coarse = squeeze(fine, coarse, pairs)
    run = lambda: predict_starfm(fine, coarse, target, valid=valid, params=params, device="cpu", tile=(25, 33))
    fused = run()
    monkeypatch.setitem(starfm_module.ACCUMULATE, "cpu", starfm_module._accumulate)
    torch_path = run()
    assert 0.5 < np.isfinite(fused).mean() < 1
    np.testing.assert_array_equal(fused, torch_path)  # bit for bit, NaN included


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    fine, coarse, target = field_scene(np.random.default_rng(3), pairs=2)
    cpu = predict_starfm(fine, coarse, target, ratio=2, params=SMALL, device="cpu")
    cuda = predict_starfm(fine, coarse, target, ratio=2, params=SMALL, device="cuda", tile=5)
    np.testing.assert_array_equal(np.isnan(cuda), np.isnan(cpu))
    np.testing.assert_allclose(cuda, cpu, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Known answers (default parameters: 60 x 60 window, ratio 20)


def flat_fields(pairs=1, bands=3, height=40, width=60):
    """Constant fields whose values differ by 0.02, far more than the slice (~0.008): every
    candidate of a pixel lies in its own field, so STARFM must return exactly its temporal change.
    (On textured images STARFM smooths: the prediction is a weighted mean of similar neighbours.)"""
    rng = np.random.default_rng(0)
    labels = (np.arange(height)[:, None] // 8) * 5 + np.arange(width)[None, :] // 12
    levels = np.stack([rng.permutation(25) for _ in range(bands)]) * 0.02 + 0.05
    noise = np.round(rng.normal(0, 0.02, (bands, height // 20, 1, width // 20, 1)), 4)  # whole 1e-4 units
    coarse = np.clip(levels[:, labels] + noise.repeat(20, 2).repeat(20, 4).reshape(bands, height, width), 0.01, 0.9)
    shift = 0.01 * np.arange(pairs)[:, None, None, None]  # later pairs: fine and coarse both 0.01 brighter
    return (levels[:, labels] + shift).astype(np.float32), (coarse + shift).astype(np.float32)


@pytest.mark.parametrize("pairs", [1, 2])
def test_uniform_change_is_reproduced_exactly(pairs):
    fine, coarse = flat_fields(pairs)
    target = coarse[0] + np.float32(0.03)
    got = predict_starfm(*squeeze(fine, coarse, pairs), target, device="cpu")
    np.testing.assert_allclose(got, fine[0] + np.float32(0.03), rtol=0, atol=1e-6)


@pytest.mark.parametrize("pairs", [1, 2])
def test_no_change_returns_the_fine_image(pairs):
    fine, coarse = flat_fields(pairs)
    got = predict_starfm(*squeeze(fine, coarse, pairs), coarse[0], device="cpu")
    np.testing.assert_allclose(got, fine[0], rtol=0, atol=1e-6)


def test_no_change_on_texture_stays_within_one_slice():
    """With texture, no change gives a weighted mean of similar neighbours: within a slice of F1, not F1."""
    fine, coarse, _ = random_scene(np.random.default_rng(6), bands=1, height=40, width=40)
    got = predict_starfm(fine[0], coarse[0], coarse[0], device="cpu")
    x = np.rint(fine[0, 0].astype(np.float64) * 1e4)
    slice_ = int(int(x.std()) * 2 / 40 + 0.5) / 1e4
    assert 1e-4 < np.nanmax(np.abs(got - fine[0])) < slice_


def test_starfm_predictor_is_predict_starfm_with_the_defaults():
    fine, coarse, target = random_scene(np.random.default_rng(2), bands=2, height=40, width=40)
    expected = predict_starfm(fine[0], coarse[0], target, ratio=20)
    np.testing.assert_array_equal(starfm(fine[0], coarse[0], target), expected)
    small = predict_starfm(fine[0], coarse[0], target, ratio=20, params=SMALL_SYMMETRIC)
    np.testing.assert_array_equal(starfm(fine[0], coarse[0], target, window=7), small)


def test_constant_band_has_no_prediction_and_out_of_range_is_fill():
    """Rule 2 with slice 0 (strict <) and rule 7's range test, as the C code."""
    fine, coarse, target = random_scene(np.random.default_rng(4))
    fine[0, 1] = 0.3
    target[0] += 0.7  # pushes predictions past the data range
    got = predict_starfm(fine[0], coarse[0], target, ratio=2, params=SMALL)
    assert np.isnan(got[1]).all()
    assert np.isnan(got[0]).any() and np.nanmax(got[0]) < 1


def test_defaults_are_the_c_code_defaults():
    p = StarfmParams()
    assert (p.offsets.start, p.offsets.stop) == (-30, 30)  # 60 x 60: -30..+29
    assert (StarfmParams(symmetric_window=True).offsets.stop) == 31
    assert p.units() == {"r0": 0, "r1": 10000, "r_msr": 70, "r_lsr": 70, "combined": 98}


# ---------------------------------------------------------------------------------------------
# Bad inputs


@pytest.fixture
def good():
    fine, coarse, target = random_scene(np.random.default_rng(0))
    return fine[0], coarse[0], target


@pytest.mark.parametrize("change, message", [
    (lambda f, c, t: (f, c[:, :10], t, {}), "coarse_refs"),
    (lambda f, c, t: (f, c, t[:1], {}), "coarse_target"),
    (lambda f, c, t: (f, c, t[:, :, :12], {}), "coarse_target"),
    (lambda f, c, t: (f[0], c[0], t, {}), "fine_refs"),
    (lambda f, c, t: (f, c, t, {"ratio": 5}), r"ratio: 5 .*12 x 14"),
    (lambda f, c, t: (f, c, t, {"ratio": 0}), "ratio"),
    (lambda f, c, t: (f, c, t, {"valid": np.zeros((12, 14), bool)}), "valid: no pixel"),
    (lambda f, c, t: (f, c, t, {"valid": np.ones((3, 12, 14), bool)}), "valid: expected shape"),
    (lambda f, c, t: (f * np.nan, c, t, {}), "fine_refs"),
    (lambda f, c, t: (f, c + 5, t, {}), "coarse_refs"),
    (lambda f, c, t: (f, c, t * np.nan, {}), "coarse_target"),
    (lambda f, c, t: (f, c, t, {"tile": 0}), "tile"),
    (lambda f, c, t: (f, c, t, {"tile": (4, 4, 4)}), "tile"),
    (lambda f, c, t: (f, c, t, {"params": {"resolution": 25}}), "params"),
])
def test_bad_inputs_name_the_argument(good, change, message):
    fine, coarse, target, kwargs = change(*good)
    kwargs = {"ratio": 2, **kwargs}
    with pytest.raises(InputError, match=message):
        predict_starfm(fine, coarse, target, **kwargs)


@pytest.mark.parametrize("kwargs, name", [
    ({"resolution": 0}, "params.resolution"),
    ({"max_search_distance": 10}, "params.max_search_distance"),
    ({"num_slice_pure_test": 0}, "params.num_slice_pure_test"),
    ({"landsat_uncertainty": -1}, "params.landsat_uncertainty"),
    ({"data_range": (1.0, 0.0)}, "params.data_range"),
])
def test_bad_parameters_name_the_field(kwargs, name):
    with pytest.raises(InputError, match=name):
        StarfmParams(**kwargs)


def test_bad_window_is_named(good):
    with pytest.raises(InputError, match="window"):
        starfm(*good, ratio=2, window=4)


def test_without_spatial_information_zero_search_distance_is_fine():
    fine, coarse, target = random_scene(np.random.default_rng(8))
    params = StarfmParams(max_search_distance=0, use_spatial=False)
    np.testing.assert_allclose(predict_starfm(fine[0], coarse[0], target, ratio=2, params=params),
                               reference_starfm(fine[0], coarse[0], target, None, params), rtol=0, atol=2e-6)


def test_fill_holes_fills_valid_pixels_only_and_warns_with_the_count():
    from stfusion.methods.baselines import FallbackWarning, fill_holes

    rng = np.random.default_rng(0)
    fine, coarse, target = (rng.uniform(0.05, 0.5, (2, 4, 5)).astype(np.float32) for _ in range(3))
    fine[:, 3, 4] = np.nan  # an invalid input: its hole stays
    pred = rng.uniform(0.05, 0.5, (2, 4, 5)).astype(np.float32)
    pred[:, 1, 2], pred[0, 2, 2], pred[:, 3, 4] = np.nan, np.nan, np.nan
    valid = np.ones((4, 5), bool)
    valid[0, 0] = False
    pred[:, 0, 0] = np.nan  # masked by ``valid``: stays NaN
    kept = pred[1, 2, 2]
    with pytest.warns(FallbackWarning, match="2 of 18 pixels") as record:
        out = fill_holes("starfm", pred, fine, coarse, target, valid)
    assert record[0].message.count == 2 and record[0].message.holes[1, 2]
    np.testing.assert_allclose(out[:, 1, 2], fine[:, 1, 2] + target[:, 1, 2] - coarse[:, 1, 2])
    assert out[1, 2, 2] == kept and np.isnan(out[:, 3, 4]).all() and np.isnan(out[:, 0, 0]).all()


def test_fill_holes_averages_the_fallback_over_two_pairs():
    from stfusion.methods.baselines import FallbackWarning, fill_holes

    fines = np.stack([np.full((1, 2, 2), 0.2, np.float32), np.full((1, 2, 2), 0.4, np.float32)])
    coarses = np.stack([np.full((1, 2, 2), 0.1, np.float32), np.full((1, 2, 2), 0.3, np.float32)])
    pred = np.full((1, 2, 2), np.nan, np.float32)
    with pytest.warns(FallbackWarning):
        out = fill_holes("estarfm", pred, fines, coarses, np.full((1, 2, 2), 0.2, np.float32))
    np.testing.assert_allclose(out, 0.3)
