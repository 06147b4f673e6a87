"""FSDAF: the vectorised steps against deliberately simple per-pixel versions of the official code,
known answers, the local TPS, the classification rule, tiling and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.interpolate import RBFInterpolator

from stfusion.methods.baselines import fsdaf as fsdaf_module
from stfusion.methods.baselines.fsdaf import (
    FsdafParams,
    class_fractions,
    classify,
    clip_outliers,
    distribute_residual,
    fsdaf,
    homogeneity_index,
    predict_fsdaf,
    similar_pixel_filter,
    tps_interpolate,
    unmix,
)
from stfusion.errors import InputError

S, W = 4, 3  # ratio and half window of the small cases (2 bands x 20 x 20)
WF = 5  # half window of the similar-pixel cases: 121 offsets, more than the 64 the fast code ranks densely


# ---------------------------------------------------------------------------------------------
# Per-pixel reference versions, written after the loops of FSDAF.pro (IDL) with nodata added


def ref_fractions(classes, k, s):
    hc, wc = classes.shape[0] // s, classes.shape[1] // s
    out = np.zeros((k, hc, wc))
    for i in range(hc):
        for j in range(wc):
            block = classes[i * s:(i + 1) * s, j * s:(j + 1) * s]
            for c in range(k):
                out[c, i, j] = (block == c).sum() / block.size
            if out[:, i, j].sum() <= 0.999:
                out[:, i, j] = 0
    return out


def ref_hi(classes, w):
    h, wd = classes.shape
    hi = np.zeros((h, wd))
    for y in range(h):
        for x in range(wd):
            if classes[y, x] < 0:
                continue
            win = classes[max(0, y - w): y + w + 1, max(0, x - w): x + w + 1]
            hi[y, x] = (win == classes[y, x]).sum() / (win >= 0).sum()
    return hi


def ref_residual(f1, f2_tp, f2_sp, hi, c1, c2, valid, s, dmin, dmax):
    f1, f2_tp, f2_sp, hi, c1, c2 = (np.asarray(a, float) for a in (f1, f2_tp, f2_sp, hi, c1, c2))
    nb, h, wd = f1.shape
    change = np.zeros((nb, h, wd))
    for b in range(nb):
        lo = max(min(c2[b][valid].min(), f2_tp[b][valid].min()), dmin)
        hi_ = min(max(c2[b][valid].max(), f2_tp[b][valid].max()), dmax)
        for i in range(h // s):
            for j in range(wd // s):
                blk = (slice(i * s, (i + 1) * s), slice(j * s, (j + 1) * s))
                v = valid[blk]
                if not v.any():
                    continue
                r = (c2[b][blk][v].mean() - c1[b][blk][v].mean()) - (f2_tp[b][blk][v].mean() - f1[b][blk][v].mean())
                e = f2_sp[b][blk][v] - f2_tp[b][blk][v]
                e[e > 0 if r <= 0 else e < 0] = 0
                wgt = np.abs(e) * hi[blk][v] + abs(r) * (1 - hi[blk][v]) + 1e-10
                wgt /= wgt.mean()
                wgt[wgt > 10] = wgt.mean()
                wgt /= wgt.mean()
                f2 = np.clip(f2_tp[b][blk][v] + wgt * r, lo, hi_)
                out = np.zeros((s, s))
                out[v] = f2 - f1[b][blk][v]
                change[b][blk] = out
    return change


def ref_filter(f1, change, c1, c2, valid, num_class, w, k, dmin=0.0, dmax=1.0):
    nb, h, wd = f1.shape
    th = np.array([2 * f1[b][valid].astype(float).std(ddof=1) / num_class for b in range(nb)], np.float32)
    out = np.full(f1.shape, np.nan)
    for y in range(h):
        for x in range(wd):
            if not valid[y, x]:
                continue
            ys, xs = np.mgrid[max(0, y - w): min(h, y + w + 1), max(0, x - w): min(wd, x + w + 1)]
            ys, xs = ys.ravel(), xs.ravel()  # the window in raster order
            centre = f1[:, y, x]
            similar = np.zeros(len(ys), np.float32)  # float32 sums in band order, as the fast code
            candidate = valid[ys, xs].copy()
            for b in range(nb):
                diff = np.abs(f1[b, ys, xs] - centre[b])
                candidate &= diff < th[b]
                similar += diff / (centre[b] + np.float32(1e-12))
            dist = np.sqrt((ys - y) ** 2 + (xs - x) ** 2)
            key = (similar + np.float32(1e-5)) * (10 + dist / w).astype(np.float32)
            cand = np.flatnonzero(candidate)
            pick = cand[np.argsort(key[cand], kind="stable")[:k]]
            cd = 1.0 / ((1.0 + dist[pick] / w) * (similar[pick].astype(float) + 1.0))
            weight = cd / cd.sum()
            for b in range(nb):
                pred = f1[b, y, x] + (weight * change[b, ys[pick], xs[pick]]).sum()
                alt = f1[b, y, x] + c2[b, y, x] - c1[b, y, x]
                if pred < dmin:
                    pred = min(dmax, max(dmin, alt))
                if pred > dmax:
                    pred = max(dmin, min(dmax, alt))
                out[b, y, x] = pred
    return out


# ---------------------------------------------------------------------------------------------
# Inputs


def scene(kind: str, seed: int = 0, nb: int = 2, size: int = 20):
    """(fine, classes) on a size x size grid: 'random' texture or 'structured' flat patches (many ties)."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        classes = rng.integers(0, 3, (size, size))
        fine = rng.uniform(0.05, 0.5, (nb, size, size))
    else:
        classes = (np.add.outer(np.arange(size) // 5, np.arange(size) // 7) % 3)
        spectra = np.array([[0.05, 0.3, 0.1], [0.12, 0.2, 0.3], [0.2, 0.25, 0.15]])[:, :nb]
        if kind == "negative":  # negative reflectance: negative similarity keys (an order-preserving map)
            spectra[0] -= 0.4
        fine = spectra[classes].transpose(2, 0, 1).copy()
        fine[:, 3:6, 10:13] += 0.01  # a slightly different patch inside one class
    return fine.astype(np.float32), classes


def nodata_mask(size: int = 20, seed: int = 1):
    valid = np.random.default_rng(seed).random((size, size)) > 0.15
    valid[:S, :S] = False  # one whole coarse pixel of nodata
    return valid


def coarse_pair(fine, rng, s=S):
    """Coarse images on the fine grid: block means at t1, plus a smooth change and noise at t2."""
    nb, h, w = fine.shape
    block = fine.reshape(nb, h // s, s, w // s, s).mean((2, 4))
    c1 = np.repeat(np.repeat(block, s, 1), s, 2)
    change = 0.03 + 0.02 * np.sin(np.arange(h // s))[None, :, None] + rng.normal(0, 0.01, block.shape)
    c2 = c1 + np.repeat(np.repeat(change, s, 1), s, 2)
    return c1.astype(np.float32), c2.astype(np.float32)


CASES = [(kind, mask) for kind in ("random", "structured") for mask in (False, True)]


# ---------------------------------------------------------------------------------------------
# Vectorised steps == per-pixel references


@pytest.mark.parametrize(("kind", "masked"), CASES)
def test_fractions_and_hi_match_reference(kind, masked):
    _, classes = scene(kind)
    if masked:
        classes = np.where(nodata_mask(), classes, -1)
    np.testing.assert_allclose(class_fractions(classes, 3, S), ref_fractions(classes, 3, S), atol=1e-12)
    np.testing.assert_allclose(homogeneity_index(torch.as_tensor(classes), W).numpy(), ref_hi(classes, W), atol=1e-6)


@pytest.mark.parametrize(("kind", "masked"), CASES)
def test_residual_distribution_matches_reference(kind, masked):
    rng = np.random.default_rng(5)
    fine, classes = scene(kind)
    valid = nodata_mask() if masked else np.ones(classes.shape, bool)
    classes = np.where(valid, classes, -1)
    c1, c2 = coarse_pair(fine, rng)
    f2_tp = (fine + np.array([[0.01, -0.02, 0.03], [0.02, 0.0, -0.01]], np.float32)[:, classes.clip(0)])
    f2_sp = (f2_tp + rng.normal(0, 0.02, fine.shape)).astype(np.float32)
    f2_sp[:, 7, 9] += 0.5  # one extreme spatial prediction: exercises the cap of the weights at 10
    hi = ref_hi(classes, W).astype(np.float32)
    fast = distribute_residual(fine, f2_tp, f2_sp, hi, c1, c2, valid, S, 0.0, 1.0).numpy()
    ref = ref_residual(fine, f2_tp, f2_sp, hi, c1, c2, valid, S, 0.0, 1.0)
    np.testing.assert_allclose(fast, ref, atol=2e-7)


@pytest.mark.parametrize("k", [6, 20])
@pytest.mark.parametrize(("kind", "masked"), CASES + [("negative", False)])
def test_similar_pixel_filter_matches_reference(kind, masked, k):
    rng = np.random.default_rng(7)
    fine, _ = scene(kind)
    valid = nodata_mask() if masked else np.ones(fine.shape[1:], bool)
    fine = np.where(valid, fine, np.nan).astype(np.float32)  # nodata carries garbage
    c1, c2 = coarse_pair(np.nan_to_num(fine), rng)
    change = rng.uniform(-0.1, 0.1, fine.shape).astype(np.float32)
    change[:, 0, :3] = -0.9  # pushes a few predictions below 0: the code's revision with F1 + C2 - C1
    params = FsdafParams(half_window=WF, num_similar_pixel=k, data_min=-1.0 if kind == "negative" else 0.0)
    fast = similar_pixel_filter(fine, change, c1, c2, valid, 3, params).numpy()
    ref = ref_filter(fine, change, c1, c2, valid, 3, WF, k, dmin=params.data_min)
    np.testing.assert_allclose(fast, ref, atol=2e-6)
    assert np.isnan(fast[:, ~valid]).all() and np.isfinite(fast[:, valid]).all()


@pytest.mark.parametrize("masked", [False, True])
def test_tiles_do_not_change_the_result(masked, monkeypatch):
    monkeypatch.setitem(fsdaf_module.FILTER, "cpu", fsdaf_module._filter_tiled)  # the torch path (CUDA's); the CPU kernel has no tiles
    rng = np.random.default_rng(3)
    fine, _ = scene("random", nb=3, size=24)
    valid = nodata_mask(24) if masked else None
    c1, c2 = coarse_pair(fine, rng)
    common = dict(valid=valid, ratio=S, device="cpu")
    base = FsdafParams(half_window=WF, num_similar_pixel=6, min_class_pixels=10)
    whole = predict_fsdaf(fine, c1, c2, params=base, **common)
    for tile in (5, 7, 11):
        tiled = predict_fsdaf(fine, c1, c2, params=FsdafParams(**{**base.__dict__, "tile": tile}), **common)
        np.testing.assert_array_equal(tiled, whole)


@pytest.mark.parametrize("k", [6, 20, 200])  # 200: more than the window holds
@pytest.mark.parametrize(("kind", "masked"), CASES + [("negative", False)])
def test_the_cpu_kernel_gives_the_bits_of_the_torch_path(kind, masked, k, monkeypatch):
    rng = np.random.default_rng(11)
    fine, _ = scene(kind)
    valid = nodata_mask() if masked else np.ones(fine.shape[1:], bool)
    c1, c2 = coarse_pair(fine, rng)
    change = rng.uniform(-0.1, 0.1, fine.shape).astype(np.float32)
    params = FsdafParams(half_window=WF, num_similar_pixel=k, tile=7, data_min=-1.0 if kind == "negative" else 0.0)
    fused = similar_pixel_filter(fine, change, c1, c2, valid, 3, params).numpy()
    monkeypatch.setitem(fsdaf_module.FILTER, "cpu", fsdaf_module._filter_tiled)
    tiled = similar_pixel_filter(fine, change, c1, c2, valid, 3, params).numpy()
    assert np.isfinite(fused[:, valid]).all()
    np.testing.assert_array_equal(fused, tiled)  # bit for bit, NaN included


# ---------------------------------------------------------------------------------------------
# Known answers


def field_scene(nb=3, size=40, seed=0):
    """Fields of four spectra with a little texture, coarse images = block means (ratio 4)."""
    rng = np.random.default_rng(seed)
    classes = (np.arange(size)[:, None] // 6 + 2 * (np.arange(size)[None, :] // 9)) % 4
    spectra = rng.uniform(0.05, 0.45, (4, nb))
    fine = (spectra[classes].transpose(2, 0, 1) * rng.uniform(0.97, 1.03, (nb, size, size))).astype(np.float32)
    c1, _ = coarse_pair(fine, rng)
    return fine, c1, classes


@pytest.mark.parametrize("masked", [False, True])
def test_uniform_change_is_reproduced(masked):
    fine, c1, _ = field_scene()
    delta = np.array([0.02, -0.01, 0.05], np.float32)[:, None, None]
    valid = nodata_mask(40) if masked else None
    params = FsdafParams(half_window=W, min_class_pixels=20)
    out = predict_fsdaf(fine, c1, c1 + delta, valid=valid, ratio=S, params=params, device="cpu")
    ok = valid if masked else np.ones(fine.shape[1:], bool)
    np.testing.assert_allclose(out[:, ok], (fine + delta)[:, ok], atol=2e-6)
    assert np.isnan(out[:, ~ok]).all()


@pytest.mark.parametrize("masked", [False, True])
def test_no_change_returns_the_fine_image(masked):
    fine, c1, _ = field_scene(seed=2)
    fine[0, 5, 5] = 0.99  # an outlier that the 99.99 % clip changes in steps 1-6 but not in the output
    valid = nodata_mask(40) if masked else None
    out = predict_fsdaf(fine, c1, c1.copy(), valid=valid, ratio=S, params=FsdafParams(half_window=W), device="cpu")
    ok = valid if masked else np.ones(fine.shape[1:], bool)
    np.testing.assert_array_equal(out[:, ok], fine[:, ok])


def test_unmixing_recovers_known_class_changes():
    rng = np.random.default_rng(4)
    s, hc, wc, k = 5, 12, 12, 3
    labels = rng.integers(0, k, (hc, wc))  # mostly pure coarse pixels ...
    classes = np.repeat(np.repeat(labels, s, 0), s, 1)
    mixed = rng.random((hc, wc)) < 0.3  # ... and some mixed ones
    classes[np.repeat(np.repeat(mixed, s, 0), s, 1)] = rng.integers(0, k, classes.shape)[
        np.repeat(np.repeat(mixed, s, 0), s, 1)]
    fractions = class_fractions(classes, k, s)
    truth = np.array([[0.03, -0.02, 0.10], [0.00, 0.05, -0.04]])  # (band, class)
    coarse_change = np.einsum("bk,kij->bij", truth, fractions)
    pure = np.argwhere(fractions.max(0) == 1)[:2]
    for i, j in pure:  # land-cover change in two pure pixels: above the 90 % quantile, left out
        coarse_change[:, i, j] += 0.3
    np.testing.assert_allclose(unmix(fractions, coarse_change, num_pure=100), truth, atol=1e-9)
    # the bounds (min/max coarse change -/+ one std) bind when the data ask for more
    flat = unmix(fractions, np.zeros_like(coarse_change), num_pure=100)
    np.testing.assert_array_equal(flat, 0.0)


def test_tps_is_exact_for_planes_and_equals_a_tps_on_the_window():
    rng = np.random.default_rng(0)
    s, hc, wc, m = 5, 12, 10, 6
    cy, cx = np.meshgrid(np.arange(hc) * s + (s - 1) / 2, np.arange(wc) * s + (s - 1) / 2, indexing="ij")
    plane = np.stack([0.1 + 0.002 * cy - 0.001 * cx, 0.3 - 0.003 * cy])
    yy, xx = np.mgrid[: hc * s, : wc * s]
    out = tps_interpolate(plane, s, m, "cpu").numpy()
    np.testing.assert_allclose(out, np.stack([0.1 + 0.002 * yy - 0.001 * xx, 0.3 - 0.003 * yy]), atol=1e-5)
    # any surface: each fine pixel gets the exact TPS through the m x m centres nearest to it
    values = rng.uniform(0, 1, (1, hc, wc))
    out = tps_interpolate(values, s, m, "cpu").numpy()[0]
    for y, x in [(0, 0), (2, 31), (27, 22), (59, 49), (33, 3)]:
        i0 = int(np.clip(np.argsort(np.abs(cy[:, 0] - y), kind="stable")[:m].min(), 0, hc - m))
        j0 = int(np.clip(np.argsort(np.abs(cx[0] - x), kind="stable")[:m].min(), 0, wc - m))
        win = (slice(i0, i0 + m), slice(j0, j0 + m))
        tps = RBFInterpolator(np.c_[cy[win].ravel(), cx[win].ravel()], values[0][win].ravel(),
                              kernel="thin_plate_spline")
        assert out[y, x] == pytest.approx(tps([[y, x]])[0], abs=1e-5), (y, x)


def test_classification_is_deterministic_and_finds_separated_classes():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, (60, 60))
    spectra = np.array([[0.05, 0.3, 0.2], [0.1, 0.1, 0.1], [0.3, 0.35, 0.4], [0.2, 0.05, 0.3]])
    fine = (spectra[truth].transpose(2, 0, 1) + rng.normal(0, 0.005, (3, 60, 60))).astype(np.float32)
    valid = rng.random((60, 60)) > 0.1
    params = FsdafParams()
    classes, k = classify(fine, valid, params, "cpu")
    again, _ = classify(fine, valid, params, "cpu")
    np.testing.assert_array_equal(classes, again)
    assert k == 4  # 5 or 6 centres would lie closer than the merge distance 0.05
    assert (classes[~valid] == -1).all()
    pairs = {(int(a), int(b)) for a, b in zip(truth[valid], classes[valid])}
    assert len(pairs) == 4  # the same partition, up to labels


def test_outlier_clip_follows_the_official_rule():
    fine = np.linspace(0.1, 0.2, 20000, dtype=np.float32).reshape(1, 100, 200)
    fine[0, 0, 0], fine[0, 50, 50], fine[0, 99, 199] = -0.5, 3.0, 1.5  # below data_min, above data_max
    out = clip_outliers(fine, np.ones((100, 200), bool), 0.0, 1.0)
    ranked = np.sort(fine.ravel())
    # values <= the 0.01 % quantile (index n // 10000 = 2) take the smallest value above it, and so on
    assert out.min() == ranked[3] and (out == ranked[3]).sum() == 4
    assert out.max() == ranked[20000 * 9999 // 10000 - 1]


def test_method_signature_wrapper():
    fine, c1, _ = field_scene(nb=2, size=40)
    out = fsdaf(fine, c1, c1 + 0.01, ratio=20)
    assert out.shape == fine.shape and out.dtype == np.float32 and np.isfinite(out).all()


# ---------------------------------------------------------------------------------------------
# Bad inputs name the argument


def test_bad_inputs_name_the_argument():
    fine, c1, _ = field_scene(nb=2, size=40)
    ok = dict(ratio=S, params=FsdafParams(half_window=W), device="cpu")
    cases = [
        ((fine[0], c1, c1), {}, "fine_ref"),
        ((fine, c1[:, :36], c1), {}, "coarse_ref"),
        ((fine, c1, c1[:1]), {}, "coarse_target"),
        ((fine, c1, c1), {"ratio": 3}, "ratio"),
        ((fine, c1, c1), {"ratio": 0}, "ratio"),
        ((fine, c1, c1), {"ratio": 40}, "ratio"),
        ((fine, c1, c1), {"valid": np.zeros((40, 40), bool)}, "valid"),
        ((fine, c1, c1), {"valid": np.ones((40, 41), bool)}, "valid"),
        ((np.full_like(fine, np.nan), c1, c1), {}, "fine_ref"),
        ((fine, c1, c1), {"classes": np.zeros((4, 4), int)}, "classes"),
    ]
    for args, kw, name in cases:
        with pytest.raises(InputError, match=name):
            predict_fsdaf(*args, **{**ok, **kw})
    holes = np.ones((40, 40), bool)
    holes[::S, ::S] = False  # one nodata pixel in every coarse pixel: no complete coarse pixel is left
    with pytest.raises(InputError, match="valid: too few pure coarse pixels"):
        predict_fsdaf(fine, c1, c1, valid=holes, **ok)
    with pytest.raises(InputError, match="params.half_window"):
        FsdafParams(half_window=0)
    with pytest.raises(InputError, match="params.min_class"):
        FsdafParams(min_class=5, max_class=4)
