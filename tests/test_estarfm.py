"""ESTARFM: the CPU kernel and the torch path against a per-pixel implementation of the IDL code's rules
(ESTARFM_FAST), and against each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import linregress

from stfusion.errors import InputError
from stfusion.methods.baselines import estarfm as estarfm_module
from stfusion.methods.baselines.estarfm import EstarfmParams, estarfm, predict_estarfm


def reference(fine, coarse, target, ok, p: EstarfmParams) -> np.ndarray:
    """One pixel at a time, in the order and with the formulas of the IDL code."""
    _, bands, height, width = fine.shape
    w = p.half_window
    th = np.array([[fine[q, b][ok].std(ddof=1) * 2.0 / p.classes for b in range(bands)] for q in range(2)])
    out = np.full((bands, height, width), np.nan)
    for i in range(height):
        for j in range(width):
            if not ok[i, j]:
                continue
            window = [(y, x) for y in range(max(0, i - w), min(height, i + w + 1))
                      for x in range(max(0, j - w), min(width, j + w + 1))]  # raster order
            valid = [(y, x) for y, x in window if ok[y, x]]
            scores = []
            scaled = fine.astype(np.float32) / th.astype(np.float32)[:, :, None, None]
            for y, x in valid:  # float32, in threshold units
                d = np.abs(scaled[:, :, y, x] - scaled[:, :, i, j])
                if (d < 1).all():
                    scores.append((d.sum(dtype=np.float32), (y, x)))
            chosen = [pos for _, pos in sorted(scores, key=lambda s: s[0])][:p.similar]  # ties: raster order
            means = {name: np.array([np.mean([a[b, y, x] for y, x in valid]) for b in range(bands)])
                     for name, a in (("c1", coarse[0]), ("c2", coarse[1]), ("c0", target))}
            if len(chosen) > p.min_similar - 1:
                out[:, i, j] = _predict(fine, coarse, target, chosen, (i, j), means, p)
            else:
                d1, d2 = means["c0"] - means["c1"] + 1e-10, means["c0"] - means["c2"] + 1e-10
                t1 = (1 / abs(d1)) / (1 / abs(d1) + 1 / abs(d2))
                out[:, i, j] = t1 * (fine[0, :, i, j] + d1) + (1 - t1) * (fine[1, :, i, j] + d2)
    return out


def _predict(fine, coarse, target, chosen, centre, means, p):
    i, j = centre
    bands, w = fine.shape[1], p.half_window
    f = np.array([[fine[q, :, y, x] for y, x in chosen] for q in range(2)])  # (pair, n, band)
    c = np.array([[coarse[q, :, y, x] for y, x in chosen] for q in range(2)])
    c0 = np.array([target[:, y, x] for y, x in chosen])
    if bands == 1:
        s_d = 1 - 0.5 * (np.abs((f[0, :, 0] - c[0, :, 0]) / (f[0, :, 0] + c[0, :, 0]))
                         + np.abs((f[1, :, 0] - c[1, :, 0]) / (f[1, :, 0] + c[1, :, 0])))
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            s_d = np.array([np.corrcoef(np.r_[f[0, k], f[1, k]], np.r_[c[0, k], c[1, k]])[0, 1] for k in range(len(chosen))])
    s_d = np.where(np.isnan(s_d), 0.5, s_d)
    d_d = np.array([1 + np.hypot(y - i, x - j) / w for y, x in chosen])
    weight = 1 / ((1 - s_d) * d_d + 1e-7)
    weight /= weight.sum()
    result = np.empty(bands)
    for b in range(bands):
        v = 1.0
        if abs(c[0, :, b].mean() - c[1, :, b].mean()) >= p.min_coarse_change:
            x, y = np.r_[c[0, :, b], c[1, :, b]], np.r_[f[0, :, b], f[1, :, b]]
            if np.ptp(x) > 0:
                fit = linregress(x, y)
                if fit.pvalue <= p.significance and 0 < fit.slope <= p.max_coefficient:
                    v = fit.slope
        d1, d2 = abs(means["c0"][b] - means["c1"][b]) + 1e-10, abs(means["c0"][b] - means["c2"][b]) + 1e-10
        t1 = (1 / d1) / (1 / d1 + 1 / d2)
        f01 = fine[0, b, i, j] + np.sum(weight * v * (c0[:, b] - c[0, :, b]))
        f02 = fine[1, b, i, j] + np.sum(weight * v * (c0[:, b] - c[1, :, b]))
        pred = t1 * f01 + (1 - t1) * f02
        if pred <= p.data_range[0] or pred >= p.data_range[1]:
            pred = t1 * np.sum(weight * f[0, :, b]) + (1 - t1) * np.sum(weight * f[1, :, b])
        result[b] = pred
    return result


def scene(bands: int = 3, size: int = 18, seed: int = 0):
    """Two pairs and a target: patchy fields whose coarse images are block means plus a sensor gain."""
    rng = np.random.default_rng(seed)
    field = rng.integers(0, 4, (size // 3, size // 3)).repeat(3, 0).repeat(3, 1)
    base = 0.05 + 0.1 * field[None] + 0.02 * rng.random((bands, size, size))
    growth = np.array([0.0, 0.05, 0.12])[:, None, None, None] * (field == 2)[None, None] * np.linspace(1, 2, bands)[:, None, None]
    fine = np.stack([base + growth[0], base + growth[2]])  # dates 1 and 2 (before and after)
    truth = base + growth[1]

    def coarse_of(image):
        blocks = image.reshape(bands, size // 6, 6, size // 6, 6).mean(axis=(2, 4))
        return 1.05 * blocks.repeat(6, 1).repeat(6, 2) + 0.003 * rng.standard_normal(image.shape)

    return fine, np.stack([coarse_of(f) for f in fine]), coarse_of(truth), truth


PATHS = {"fused": estarfm_module._predict_fused, "torch": estarfm_module._predict_tiles}
"""ESTARFM's CPU prediction by path: the fused kernel (the default) and the torch path (CUDA's)."""


@pytest.mark.parametrize("bands, gap, settings", [
    (3, False, {}),
    (1, False, {}),
    (3, True, {}),
    (3, False, {"data_range": (0.0, 0.3)}),  # predictions above 0.3 are revised to the weighted fine values
    (3, True, {"min_similar": 40}),  # never enough similar pixels: each pair's window change alone
])
@pytest.mark.parametrize("path", ["fused", "torch"])
def test_matches_the_per_pixel_rules(bands, gap, settings, path, monkeypatch):
    monkeypatch.setitem(estarfm_module.PREDICT, "cpu", PATHS[path])
    fine, coarse, target, _ = scene(bands)
    ok = np.ones(fine.shape[-2:], bool)
    if gap:
        ok[4:8, 10:15] = False  # a cloud on one date: invalid in all
    params = EstarfmParams(half_window=4, similar=8, min_coarse_change=0.005, **settings)
    fast = predict_estarfm(fine, coarse, target, valid=ok, params=params, device="cpu", tile=7)  # tiles cut through windows
    slow = reference(fine, coarse, target, ok, params)
    assert np.isnan(fast[:, ~ok]).all() and np.isfinite(fast[:, ok]).all()
    np.testing.assert_allclose(fast[:, ok], slow[:, ok], rtol=1e-5, atol=1e-6)


def test_the_cpu_kernel_selects_as_the_torch_path(monkeypatch):
    """The same similar pixels on a scene with a gap and near ties: the same NaNs, and float32 outputs at most
    one unit in the last place apart (the kernel sums the float64 terms in order, torch in blocks)."""
    fine, coarse, target, _ = scene(bands=4, size=48, seed=3)
    ok = np.ones(fine.shape[-2:], bool)
    ok[10:20, 5:30] = False
    params = EstarfmParams(half_window=6, similar=12, min_coarse_change=0.005)
    out = {}
    for path, predict in PATHS.items():
        monkeypatch.setitem(estarfm_module.PREDICT, "cpu", predict)
        out[path] = predict_estarfm(fine, coarse, target, valid=ok, params=params, device="cpu", tile=16)
    np.testing.assert_array_equal(np.isnan(out["fused"]), ~ok[None].repeat(4, 0))
    np.testing.assert_array_max_ulp(out["fused"][:, ok], out["torch"][:, ok], maxulp=1)


def test_the_cpu_kernel_does_not_depend_on_the_thread_count():
    fine, coarse, target, _ = scene(size=42, seed=5)
    params = EstarfmParams(half_window=5, similar=10)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = predict_estarfm(fine, coarse, target, params=params, device="cpu")
        torch.set_num_threads(3)
        three = predict_estarfm(fine, coarse, target, params=params, device="cpu")
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(one, three)


def test_tiles_do_not_change_the_result(monkeypatch):
    monkeypatch.setitem(estarfm_module.PREDICT, "cpu", PATHS["torch"])
    fine, coarse, target, _ = scene(size=24)
    params = EstarfmParams(half_window=5, similar=10)
    a = predict_estarfm(fine, coarse, target, params=params, device="cpu", tile=5)
    b = predict_estarfm(fine, coarse, target, params=params, device="cpu", tile=64)
    np.testing.assert_array_equal(a, b)


def test_beats_either_pair_alone():
    """The truth is halfway: ESTARFM, which mixes both dates, is closer to it than either fine image."""
    fine, coarse, target, truth = scene(size=36)
    pred = estarfm(fine, coarse, target, window=9)
    error = lambda image: np.sqrt(np.nanmean((image - truth) ** 2))  # noqa: E731
    assert error(pred) < min(error(fine[0]), error(fine[1]))


def test_bad_inputs_name_the_argument():
    fine, coarse, target, _ = scene()
    with pytest.raises(InputError, match="fine_refs: ESTARFM takes two pairs"):
        predict_estarfm(fine[0], coarse[0], target)
    with pytest.raises(InputError, match="coarse_target"):
        predict_estarfm(fine, coarse, target[:2])
    with pytest.raises(InputError, match="valid: no pixel is valid"):
        predict_estarfm(fine, coarse, target, valid=np.zeros(fine.shape[-2:], bool))
    with pytest.raises(InputError, match="params.half_window"):
        EstarfmParams(half_window=0)


def test_fuse_takes_two_pairs(tmp_path, capsys):
    from stfusion.cli import main
    from stfusion.data.raster import Grid, read_geotiff, write_geotiff

    fine, coarse, target, _ = scene(size=24)
    grid = Grid(24, 24)
    names = {}
    for name, image in (("f1", fine[0]), ("f2", fine[1]), ("c1", coarse[0]), ("c2", coarse[1]), ("c0", target)):
        names[name] = str(write_geotiff(tmp_path / f"{name}.tif", image.astype(np.float32), grid))
    out = tmp_path / "pred.tif"
    args = ["fuse", "--method", "estarfm", "--window", "9", "--coarse-target", names["c0"], "--out", str(out)]
    assert main([*args, "--fine-ref", names["f1"], names["f2"], "--coarse-ref", names["c1"], names["c2"]]) == 0
    expected = estarfm(fine, coarse, target, window=9)
    np.testing.assert_allclose(read_geotiff(out).data, expected, rtol=1e-6)
    assert main([*args, "--fine-ref", names["f1"], "--coarse-ref", names["c1"]]) == 2
    assert "--fine-ref: estarfm takes 2 reference pair(s), got 1 fine images (the earlier pair first)" in capsys.readouterr().err


def test_the_study_predicts_each_test_target_from_the_pairs_around_it(tiny_processed, tmp_path):
    from stfusion.evaluation.robustness import sweep
    from stfusion.inference.predict import prediction_name, predict_split
    from stfusion.methods.registry import get_method

    _, cube, splits = tiny_processed
    ((target, before, after),) = splits.brackets
    assert before < target < after and (before, after) == splits.bracket(target, who="estarfm")
    record = predict_split(get_method("estarfm"), cube, splits, tmp_path / "estarfm", progress=False)
    assert record["brackets"] == [[target, before, after]]
    from stfusion.data.raster import read_geotiff

    prediction = read_geotiff(tmp_path / "estarfm" / prediction_name(splits.test[0])).data
    assert prediction.shape == (6, 60, 40) and np.isfinite(prediction).mean() > 0.5
    table = sweep(cube, splits, [get_method("estarfm"), get_method("persistence")], {"clouds": [0.0, 0.3], "geolocation": [0.0], "coarse_noise": [0.0], "time_gap": [1]}, seed=0,
                  progress=False)
    assert set(table["method"]) == {"persistence"}  # one-pair degradations: ESTARFM is not swept


def test_a_test_target_without_a_pair_on_both_sides_is_a_clear_error():
    from stfusion.data.splits import Splits

    splits = Splits("x", ("2001-01-01", "2001-01-02"), (("2001-01-01", "2001-01-02"),), (), (("2001-01-02", "2001-01-03"),))
    with pytest.raises(InputError, match="test target 2001-01-03 has no reference date on one side; estarfm needs"):
        splits.bracket("2001-01-03", who="estarfm")
