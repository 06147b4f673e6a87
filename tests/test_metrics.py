"""The metrics: identity, hand-computed values, scikit-image cross-checks, invariances, masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from stfusion.errors import InputError
from stfusion.evaluation.metrics import (METRICS, Conventions, compute_metrics, observed_change, overall_rmse,
                                        score_table)


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    observed = rng.uniform(0.02, 0.5, (4, 40, 36))
    prediction = np.clip(observed + rng.normal(0, 0.02, observed.shape), 0.001, 1)
    return prediction, observed


def scores(prediction, observed, mask=None, conventions=Conventions(ratio=20), **kw):
    return compute_metrics(prediction, observed, mask, device="cpu", conventions=conventions, **kw)["all"]


def test_identical_images_score_perfectly(pair):
    _, observed = pair
    s = scores(observed, observed)
    for metric in ("rmse", "mae", "bias", "sam", "ergas"):
        assert s[metric]["all"] == pytest.approx(0, abs=1e-7), metric
    for metric in ("ssim", "cc", "uiqi"):
        assert s[metric]["all"] == pytest.approx(1, abs=1e-12), metric
    assert s["psnr"]["all"] == math.inf


def test_by_hand_on_a_small_case():
    observed = np.array([[[0.1, 0.2], [0.3, 0.4]], [[0.2, 0.2], [0.4, 0.6]]])
    prediction = np.array([[[0.2, 0.2], [0.3, 0.2]], [[0.2, 0.4], [0.4, 0.6]]])
    s = scores(prediction, observed, conventions=Conventions(ratio=2))
    err = prediction - observed
    assert s["rmse"]["band1"] == pytest.approx(np.sqrt((0.01 + 0.04) / 4))
    assert s["rmse"]["band2"] == pytest.approx(np.sqrt(0.04 / 4))
    assert s["rmse"]["all"] == pytest.approx(np.sqrt(0.09 / 8))
    assert s["mae"]["all"] == pytest.approx(np.abs(err).mean())
    assert s["bias"]["band1"] == pytest.approx((0.1 - 0.2) / 4)
    assert s["psnr"]["band2"] == pytest.approx(10 * np.log10(1 / 0.01))
    mu = observed.reshape(2, -1).mean(axis=1)
    rmse = np.sqrt((err**2).reshape(2, -1).mean(axis=1))
    assert s["ergas"]["all"] == pytest.approx(100 * 0.5 * np.sqrt(np.mean((rmse / mu) ** 2)))
    p, r = prediction.reshape(2, -1), observed.reshape(2, -1)
    assert s["cc"]["band1"] == pytest.approx(np.corrcoef(p[0], r[0])[0, 1])
    cov = np.mean((p[1] - p[1].mean()) * (r[1] - r[1].mean()))
    q = 4 * cov * p[1].mean() * r[1].mean() / ((p[1].var() + r[1].var()) * (p[1].mean() ** 2 + r[1].mean() ** 2))
    assert s["uiqi"]["band2"] == pytest.approx(q)
    cos = (p * r).sum(0) / (np.linalg.norm(p, axis=0) * np.linalg.norm(r, axis=0))
    assert s["sam"]["all"] == pytest.approx(np.arccos(np.clip(cos, -1, 1)).mean())


def test_ssim_and_psnr_match_scikit_image(pair):
    prediction, observed = pair
    s = scores(prediction, observed)
    for k in range(observed.shape[0]):
        expected = structural_similarity(observed[k], prediction[k], data_range=1.0, gaussian_weights=True,
                                         sigma=1.5, use_sample_covariance=False)
        assert s["ssim"][f"band{k + 1}"] == pytest.approx(expected, abs=1e-10)
        assert s["psnr"][f"band{k + 1}"] == pytest.approx(peak_signal_noise_ratio(observed[k], prediction[k], data_range=1.0))
    assert s["psnr"]["all"] == pytest.approx(peak_signal_noise_ratio(observed, prediction, data_range=1.0))


def test_data_range_matters(pair):
    prediction, observed = pair
    narrow, wide = scores(prediction, observed), scores(prediction, observed, conventions=Conventions(data_range=2.0))
    assert wide["psnr"]["all"] == pytest.approx(narrow["psnr"]["all"] + 20 * np.log10(2))
    assert wide["ssim"]["all"] > narrow["ssim"]["all"]


def test_sam_ignores_per_pixel_scaling_and_reports_degrees(pair):
    prediction, observed = pair
    gain = np.random.default_rng(1).uniform(0.5, 2.0, observed.shape[1:])
    base = scores(prediction, observed)["sam"]["all"]
    assert scores(prediction * gain, observed)["sam"]["all"] == pytest.approx(base, rel=1e-9)
    assert scores(observed * gain, observed)["sam"]["all"] == pytest.approx(0, abs=1e-7)
    degrees = scores(prediction, observed, conventions=Conventions(sam_unit="deg"))["sam"]["all"]
    assert degrees == pytest.approx(np.degrees(base))


def test_ergas_scales_with_the_resolution_ratio_and_cc_with_nothing(pair):
    prediction, observed = pair
    s20, s40 = scores(prediction, observed), scores(prediction, observed, conventions=Conventions(ratio=40))
    assert s40["ergas"]["all"] == pytest.approx(s20["ergas"]["all"] / 2)
    assert math.isnan(scores(prediction, observed, conventions=Conventions())["ergas"]["all"])  # no ratio, no ERGAS
    with pytest.raises(InputError, match="ratio: expected the coarse over fine pixel size"):
        Conventions(ratio=0.05)
    assert scores(prediction * 3 + 0.1, observed)["cc"]["all"] == pytest.approx(s20["cc"]["all"])


def test_masked_and_nan_pixels_are_excluded(pair):
    prediction, observed = pair
    mask = np.ones(observed.shape[1:], bool)
    mask[:, :12] = False
    damaged = prediction.copy()
    damaged[:, :, :12] = 5.0  # garbage where the mask is false must not count
    clean = scores(prediction[:, :, 12:], observed[:, :, 12:])
    masked = scores(damaged, observed, mask)
    for metric in ("rmse", "mae", "bias", "psnr", "sam", "ergas", "cc", "uiqi"):
        assert masked[metric]["all"] == pytest.approx(clean[metric]["all"], rel=1e-9), metric
    # SSIM: windows touching a masked pixel are skipped, so it equals the SSIM of the unmasked part.
    assert masked["ssim"]["all"] == pytest.approx(clean["ssim"]["all"], rel=1e-9)
    nan = prediction.copy()
    nan[:, :, :12] = np.nan
    assert scores(nan, observed)["rmse"]["all"] == pytest.approx(clean["rmse"]["all"])


def test_the_overall_rmse_alone_is_the_same_number(pair):
    """The robustness sweep needs only the overall RMSE: computed alone it must be compute_metrics' to the bit."""
    prediction, observed = pair
    mask = np.ones(observed.shape[1:], bool)
    mask[5:9, :] = False
    nan = prediction.copy()
    nan[1, :, :3] = np.nan
    for args in ((prediction, observed, None), (nan, observed, mask)):
        assert overall_rmse(*args, device="cpu") == scores(*args)["rmse"]["all"]
    assert math.isnan(overall_rmse(prediction, observed, np.zeros(observed.shape[1:], bool), device="cpu"))


def test_regions_split_the_pixels(pair):
    prediction, observed = pair
    changed = np.zeros(observed.shape[1:], bool)
    changed[20:, :] = True
    result = compute_metrics(prediction, observed, regions={"all": np.ones_like(changed), "changed": changed,
                                                            "unchanged": ~changed}, device="cpu")
    mse = {name: result[name]["rmse"]["all"] ** 2 for name in result}
    assert mse["all"] == pytest.approx((mse["changed"] + mse["unchanged"]) / 2)  # equal halves
    only = scores(prediction[:, 20:], observed[:, 20:])
    assert result["changed"]["rmse"]["all"] == pytest.approx(only["rmse"]["all"])


def test_score_table_is_tidy_and_drops_undefined_values(pair):
    prediction, observed = pair
    empty = np.zeros(observed.shape[1:], bool)
    table = score_table(prediction, observed, regions={"all": ~empty, "changed": empty}, band_names=list("abcd"),
                        device="cpu", conventions=Conventions(ratio=20))
    assert list(table.columns) == ["band", "region", "metric", "value"]
    assert set(table["metric"]) == set(METRICS) and set(table["region"]) == {"all"}
    without_ratio = score_table(prediction, observed, regions={"all": ~empty}, device="cpu")
    assert "ergas" not in set(without_ratio["metric"])  # undefined without the ratio, so left out
    assert set(table[table["metric"] == "sam"]["band"]) == {"all"}
    assert len(table[table["metric"] == "rmse"]) == 5
    assert np.isfinite(table["value"]).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"ratio": 1 / 20}, "ratio: expected the coarse over fine pixel size"),
    ({"sam_unit": "grad"}, "sam_unit"),
    ({"data_range": 0}, "data_range"),
])
def test_bad_conventions_are_named(kwargs, message):
    with pytest.raises(InputError, match=message):
        Conventions(**kwargs)


def test_bad_shapes_are_named(pair):
    prediction, observed = pair
    with pytest.raises(InputError, match="same shape"):
        compute_metrics(prediction[:3], observed, device="cpu")
    with pytest.raises(InputError, match="mask shape"):
        compute_metrics(prediction, observed, np.ones((3, 3), bool), device="cpu")


def test_observed_change_thresholds_the_largest_band_difference():
    ref = np.zeros((2, 2, 2))
    target = ref.copy()
    target[1, 0, 0] = 0.06
    target[0, 1, 1] = -0.2
    target[0, 0, 1] = 0.04
    assert observed_change(ref, target).tolist() == [[True, False], [False, True]]
    with pytest.raises(InputError, match="threshold"):
        observed_change(ref, target, threshold=0)
