"""The study's figures: every file is written, parameters are checked, the helpers compute the right values."""

import datetime
import shutil

import numpy as np
import pandas as pd
import pytest

from stfusion import BANDS
from stfusion.errors import ConfigError
from stfusion.methods.registry import get_method
from stfusion.paths import Workspace
from stfusion.data.images import composite, difference, ndvi, symmetric_limit
from stfusion.reporting.plots import (FIGURE_GUIDE, crop_window, default_crop, figures_study, method_styles,
                                      showcase_pair)
from stfusion.inference.predict import predict_split

DATASET = "cia-sim"
METHODS = ["persistence", "temporal-difference"]
KINDS = ["boxplots", "change", "scatter", "scene", "crop"]


def fake_scores(splits, metrics=("rmse", "mae", "bias", "psnr", "ssim", "sam", "ergas", "cc", "uiqi"),
                regions=("all", "changed", "unchanged")) -> pd.DataFrame:
    """scores.csv as the evaluate stage writes it (fabricated values: the figures must not care)."""
    rng = np.random.default_rng(0)
    rows = [
        [DATASET, method, None, get_method(method).family, ref, target, band, region, metric, rng.uniform(0.01, 0.9)]
        for method in METHODS for ref, target in splits.test for band in (*BANDS, "all") for region in regions
        for metric in metrics if band == "all" or metric not in ("sam", "ergas")
    ]
    return pd.DataFrame(rows, columns=["dataset", "method", "seed", "family", "reference_date", "target_date", "band",
                                       "region", "metric", "value"])


def make_study(tmp_path, tiny_processed, scores=None) -> Workspace:
    out, cube, splits = tiny_processed
    ws = Workspace(tmp_path)
    shutil.copytree(out, ws.processed(DATASET))
    for name in METHODS:
        predict_split(get_method(name), cube, splits, ws.predictions(DATASET, name))
    ws.tables.mkdir(parents=True)
    (fake_scores(splits) if scores is None else scores).to_csv(ws.tables / "scores.csv", index=False)
    return ws


def test_the_forest_plot_is_drawn_from_the_differences_and_removed_without_them(tmp_path, tiny_processed):
    ws = make_study(tmp_path, tiny_processed)
    rows = [{"dataset": DATASET, "region": region, "comparison": "vs temporal-difference", "method": "persistence",
             "against": "temporal-difference", "difference": 0.01, "low": 0.004, "high": 0.02, "significant": True,
             "seeds": 1, "against_seeds": 1, "level": 0.95} for region in ("all", "changed")]
    pd.DataFrame(rows).to_csv(ws.tables / "differences.csv", index=False)
    paths = figures_study(ws, [DATASET], METHODS, "smoke", seed=0, dpi=40)
    assert figure_files(ws, ["differences"]) <= set(paths) and all(p.is_file() for p in figure_files(ws, ["differences"]))
    (ws.tables / "differences.csv").unlink()
    figures_study(ws, [DATASET], METHODS, "smoke", seed=0, dpi=40)
    assert not any(p.exists() for p in figure_files(ws, ["differences"]))


def figure_files(ws, kinds):
    return {ws.figures / ext / f"{kind}_{DATASET}.{ext}" for kind in kinds for ext in ("png", "pdf")}


def test_every_figure_is_written_and_no_training_figure_without_history(tmp_path, tiny_processed):
    ws = make_study(tmp_path, tiny_processed)
    paths = figures_study(ws, [DATASET], METHODS, "smoke", seed=0, dpi=40)
    assert set(paths) == figure_files(ws, KINDS)
    assert all(p.stat().st_size > 1000 for p in paths)
    assert not list(ws.figures.rglob("training_*"))
    assert set(FIGURE_GUIDE) == {*KINDS, "training", "ablation", "uncertainty", "differences"} and all(len(t) > 100 for t in FIGURE_GUIDE.values())


def test_training_figure_from_history(tmp_path, tiny_processed):
    ws = make_study(tmp_path, tiny_processed)
    history = pd.DataFrame([(e, split, "loss", 1.0 / e + (0.1 if split == "val" else 0.0))
                            for e in range(1, 6) for split in ("train", "val")], columns=["epoch", "split", "metric", "value"])
    history.to_csv(ws.predictions(DATASET, "temporal-difference") / "history.csv", index=False)
    paths = figures_study(ws, [DATASET], METHODS, "smoke", seed=0, dpi=40)
    assert set(paths) == figure_files(ws, [*KINDS, "training"])
    assert all(p.stat().st_size > 1000 for p in paths)


def test_figures_survive_scores_with_rmse_only(tmp_path, tiny_processed):
    """The evaluate stage of today writes RMSE over all pixels only: the panels it lacks say so."""
    _, _, splits = tiny_processed
    ws = make_study(tmp_path, tiny_processed, fake_scores(splits, metrics=("rmse",), regions=("all",)))
    assert set(figures_study(ws, [DATASET], METHODS, "smoke", seed=0, dpi=40)) == figure_files(ws, KINDS)


@pytest.mark.parametrize("crop, match", [
    ({"row": 50, "col": 0, "height": 20, "width": 10}, "inside the 60 x 40 scene"),  # runs past the bottom
    ({"row": 0, "col": -1, "height": 5, "width": 5}, "inside the 60 x 40 scene"),
    ({"row": 0, "col": 0, "height": 5}, "expected a mapping of integers"),
])
def test_crop_outside_the_scene_is_a_config_error_and_writes_nothing(tmp_path, tiny_processed, crop, match):
    ws = make_study(tmp_path, tiny_processed)
    with pytest.raises(ConfigError, match=f"figures.crop.{DATASET}: .*{match}"):
        figures_study(ws, [DATASET], METHODS, "smoke", seed=0, crop={DATASET: crop})
    assert not ws.figures.exists()  # parameters are checked before the first figure


def test_crop_and_pair_for_an_unknown_dataset_are_config_errors(tmp_path, tiny_processed):
    ws = make_study(tmp_path, tiny_processed)
    with pytest.raises(ConfigError, match="figures.crop.mars: unknown dataset"):
        figures_study(ws, [DATASET], METHODS, "smoke", seed=0, crop={"mars": None})
    with pytest.raises(ConfigError, match="figures.pairs.mars: unknown dataset"):
        figures_study(ws, [DATASET], METHODS, "smoke", seed=0, pairs={"mars": ["2001-01-01", "2001-02-01"]})
    assert not ws.figures.exists()


def test_showcase_pair_must_be_a_test_pair(tmp_path, tiny_processed):
    _, _, splits = tiny_processed
    ws = make_study(tmp_path, tiny_processed)
    train_pair = list(splits.train[0])
    with pytest.raises(ConfigError, match=f"figures.pairs.{DATASET}: .*not a test pair"):
        figures_study(ws, [DATASET], METHODS, "smoke", seed=0, pairs={DATASET: train_pair})
    assert not ws.figures.exists()
    ref, target = splits.test[0]
    # YAML reads unquoted dates as datetime.date; they name the same pair.
    as_dates = [datetime.date.fromisoformat(ref), datetime.date.fromisoformat(target)]
    assert showcase_pair(splits, as_dates) == (ref, target)
    assert showcase_pair(splits, None) == splits.test[0]
    with pytest.raises(ConfigError, match="figures.pairs"):
        showcase_pair(splits, target)


def test_crop_window_and_default_crop():
    assert crop_window({"row": 2, "col": 3, "height": 4, "width": 5}, 10, 8, "x") == (slice(2, 6), slice(3, 8))
    assert crop_window({"row": 0, "col": 0, "height": 10, "width": 8}, 10, 8, "x") == (slice(0, 10), slice(0, 8))
    with pytest.raises(ConfigError, match="figures.crop.x"):
        crop_window({"row": 0, "col": 1, "height": 10, "width": 8}, 10, 8, "x")
    with pytest.raises(ConfigError, match="figures.crop.x"):
        crop_window({"row": 0, "col": 0, "height": 0, "width": 8}, 10, 8, "x")
    with pytest.raises(ConfigError, match="figures.crop.x"):
        crop_window({"row": 0.5, "col": 0, "height": 2, "width": 2}, 10, 8, "x")
    # A centred square a quarter of the shorter side.
    assert default_crop(320, 280) == {"row": 125, "col": 105, "height": 70, "width": 70}
    region = default_crop(3, 3)
    assert crop_window(region, 3, 3, "x") == (slice(1, 2), slice(1, 2))


def hand_image() -> np.ndarray:
    """(6, 1, 4) reflectance: red and NIR chosen so NDVI is easy to compute by hand."""
    image = np.full((len(BANDS), 1, 4), 0.1, np.float32)
    image[BANDS.index("red"), 0] = [0.1, 0.2, 0.0, np.nan]
    image[BANDS.index("nir"), 0] = [0.3, 0.2, 0.0, 0.4]
    return image


def test_ndvi_by_hand():
    np.testing.assert_allclose(ndvi(hand_image()), [[0.5, 0.0, np.nan, np.nan]], atol=1e-6)
    image = hand_image()
    image[BANDS.index("red"), 0, 0] = 0.5
    image[BANDS.index("nir"), 0, 0] = -0.6  # a negative prediction: NIR + red < 0 has no NDVI
    assert np.isnan(ndvi(image)[0, 0])


def test_difference_and_its_symmetric_scale():
    observed = hand_image()
    predicted = observed.copy()
    predicted[BANDS.index("nir"), 0] += [0.05, -0.1, 0.0, 0.02]
    np.testing.assert_allclose(difference(predicted, observed, "nir"), [[0.05, -0.1, 0.0, 0.02]], atol=1e-6)
    np.testing.assert_allclose(difference(predicted, observed, "red"), [[0, 0, 0, np.nan]], atol=1e-7)
    with pytest.raises(ConfigError, match="figures.difference_band"):
        difference(predicted, observed, "thermal")
    assert symmetric_limit([np.array([-0.3, 0.1]), np.array([0.2, np.nan])], percentile=100) == pytest.approx(0.3)
    assert symmetric_limit([np.zeros(3), np.full(2, np.nan)]) == 0.01  # a flat map still gets a scale


def test_composite_stretch_and_nodata():
    rgba = composite(hand_image(), ("nir", "red", "green"), (0.4, 0.2, 0.2))
    assert rgba.shape == (1, 4, 4)
    np.testing.assert_allclose(rgba[0, 0], [0.75, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(rgba[0, 3, 3], 0.0)  # red is NaN: transparent (no data colour shows)


def test_methods_of_one_family_share_a_colour_and_differ_in_marker():
    styles = method_styles(["temporal-difference", "persistence"])
    assert list(styles) == ["temporal-difference", "persistence"]
    first, second = styles.values()
    assert first.colour == second.colour == get_method("persistence").colour
    assert first.marker != second.marker and first.hatch != second.hatch


def test_ablation_figure_puts_every_metric_against_configuration():
    from stfusion.reporting.plots import ABLATION_METRICS, ablation_figure
    from stfusion.reporting.published import load_published

    rows = [{"dataset": "cia-sim", "method": variant, "family": "gan", "reference_date": "2001-01-01",
             "target_date": target, "band": "all", "region": "all", "metric": metric, "value": 0.5 + i / 10}
            for i, variant in enumerate(("depth-1", "cbam", "depth-3")) for target in ("2001-02-01", "2001-03-01")
            for metric in ABLATION_METRICS]
    fig = ablation_figure(pd.DataFrame(rows), load_published(), "cia-sim", "synthetic cia-sim, test profile")
    axes = fig.axes
    assert len(axes) == 2 * len(ABLATION_METRICS)
    ticks = [t.get_text() for t in axes[-1].get_xticklabels()]
    assert ticks[:3] == ["depth 1", "depth 2", "depth 3"] and "MS+CBAM+AFF+ML" in ticks  # the paper's order
    assert all(ax.get_ylabel() for ax in axes)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_uncertainty_figure_draws_deciles_and_maps():
    from stfusion.evaluation.scores import uncertainty_deciles
    from stfusion.reporting.plots import uncertainty_figure

    rng = np.random.default_rng(0)
    std = rng.uniform(0.001, 0.05, (6, 40, 30))
    error = rng.normal(0, std)
    deciles = uncertainty_deciles(std, error).assign(dataset="cia-sim", method="stfdiff",
                                                       reference_date="2001-01-01", target_date="2001-02-01")
    fig = uncertainty_figure(deciles, "stfdiff", "cia-sim", "synthetic cia-sim, test profile", std[3], error[3],
                             "nir", ("2001-01-01", "2001-02-01"))
    curves = fig.axes[0]
    assert curves.get_xlabel().startswith("predicted std") and "reflectance" in curves.get_ylabel()
    assert len(curves.lines) == 3  # RMSE, MAE and the calibration line
    assert all(ax.get_title() for ax in fig.axes[:3])
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_crops_of_datasets_outside_the_study_are_left_out():
    """The full profile's crops merge over the default study's: cia-sim's crop stays in its params."""
    from stfusion.pipeline.profiles import profile_params
    from stfusion.paths import code_root
    from stfusion.reporting.plots import _per_dataset

    params = profile_params(code_root(), "full")
    crop = _per_dataset(params["figures"]["crop"], "figures.crop", params["datasets"])
    assert "cia-sim" in params["figures"]["crop"] and set(crop) == set(params["datasets"]) == {"cia", "lgc"}
