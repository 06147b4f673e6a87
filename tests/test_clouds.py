"""Clouds, shadows and gaps: present at the requested magnitude, masked in the datacube, filled for the
deep models, left out by the traditional ones, and scored only where the truth is valid."""

import numpy as np
import pytest

from stfusion.data.clouds import add_clouds, cloud_field, shadow_offset, solar_angles
from stfusion.data.datacube import date_index
from stfusion.data.manifest import QA_CLEAR, QA_CLOUD, QA_SHADOW
from stfusion.data.preprocess import preprocess_dataset
from stfusion.data.raster import read_geotiff
from stfusion.data.samplers import PairPatchDataset
from stfusion.data.synthetic import PRESETS, generate_dataset, synthetic_config
from stfusion.errors import ConfigError, InputError
from stfusion.evaluation.scores import score_pair
from stfusion.inference.predict import pair_inputs, predict_pair
from stfusion.inference import sampling
from stfusion.methods.registry import get_method
from stfusion.units import to_reflectance

CLOUDY = {"height": 100, "width": 100, "n_dates": 6, "seed": 5, "preset": "realistic", "cloud_cover": 0.3}


@pytest.fixture(scope="module")
def cloudy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cloudy")
    manifest = generate_dataset("cia-sim", folder / "raw", CLOUDY)
    cube, splits = preprocess_dataset(folder / "raw", folder / "processed", {"n_test": 1, "n_val": 1})
    return manifest, cube


def qa_of(manifest, date):
    return read_geotiff(manifest.file(date, "fine_qa"), bands=1).data[0]


@pytest.mark.parametrize("cover", [0.0, 0.05, 0.2, 0.6])
def test_the_cloud_field_covers_exactly_the_requested_share(cover):
    opacity = cloud_field(np.random.default_rng(0), (200, 180), cover, size_px=20)
    assert (opacity > 0).sum() == round(cover * 200 * 180)
    assert opacity.max() <= 1 and (opacity[opacity > 0] >= 0.5).all()


def test_the_requested_share_of_dates_is_cloudy_at_the_requested_cover(cloudy):
    manifest, _ = cloudy
    cloudy_dates = manifest.meta["clouds"]["cloudy_dates"]
    assert len(cloudy_dates) == round(0.5 * 6)
    for date in manifest.date_list():
        qa = qa_of(manifest, date)
        assert (qa == QA_CLOUD).mean() == pytest.approx(0.3 if date in cloudy_dates else 0.0, abs=1e-9)
        assert ((qa == QA_SHADOW).sum() > 0) == (date in cloudy_dates)


def test_a_shadow_lies_away_from_the_sun_at_height_times_tan_zenith():
    zenith, azimuth = solar_angles("2002-01-12", -34.0)
    assert 20 < zenith < 45 and 45 < azimuth < 135  # southern summer, 10:00: the sun is high, in the east
    rows, cols = shadow_offset(1500.0, zenith, azimuth, 25.0)
    length = 1500.0 * np.tan(np.radians(zenith)) / 25.0
    assert np.hypot(rows, cols) == pytest.approx(length, abs=1.0) and cols < 0  # cast westwards
    opacity = np.zeros((100, 100), np.float32)
    opacity[40:50, 60:70] = 1.0
    image, qa = add_clouds(np.full((6, 100, 100), 0.2, np.float32), opacity, (rows, cols))
    shadow_rows, shadow_cols = np.nonzero(qa == QA_SHADOW)
    assert (shadow_rows.min() - 40, shadow_cols.min() - 60) == (rows, cols)
    assert image[3][qa == QA_SHADOW] == pytest.approx(0.2 * 0.32) and image[0][qa == QA_CLOUD] == pytest.approx(0.45)
    assert (image[:, qa == QA_CLEAR] == np.float32(0.2)).all()


def test_solar_zenith_is_about_zero_at_the_equator_at_equinox_noon():
    zenith, _ = solar_angles("2002-03-21", 0.0, solar_hour=12.0)
    assert zenith < 1.5


def test_coarse_images_do_not_see_the_clouds(tmp_path):
    clear = generate_dataset("cia-sim", tmp_path / "clear", {**CLOUDY, "cloud_cover": 0.0})
    clouded = generate_dataset("cia-sim", tmp_path / "clouded", CLOUDY)
    assert "fine_qa" not in clear.dates[0] and "clouds" not in clear.meta
    date = clouded.meta["clouds"]["cloudy_dates"][0]
    coarse = [read_geotiff(m.file(date, "coarse"), bands=6).data for m in (clear, clouded)]
    fine = [read_geotiff(m.file(date, "fine"), bands=6).data for m in (clear, clouded)]
    np.testing.assert_array_equal(*coarse)
    qa = qa_of(clouded, date)
    np.testing.assert_array_equal(fine[0][:, qa == QA_CLEAR], fine[1][:, qa == QA_CLEAR])
    assert (fine[0][:, qa != QA_CLEAR] != fine[1][:, qa != QA_CLEAR]).any()


def test_presets_and_overrides(tmp_path):
    assert synthetic_config("cia-sim")["preset"] == "clean" and synthetic_config("cia-sim")["cloud_cover"] == 0
    realistic = synthetic_config("cia-sim", {"preset": "realistic", "noise": 0.0})
    assert realistic["noise"] == 0.0 and realistic["geolocation_m"] == PRESETS["realistic"]["geolocation_m"]
    for overrides, key in [({"preset": "foggy"}, "preset"), ({"cloud_cover": 0.95}, "cloud_cover"),
                           ({"cloudy_dates": 1.5}, "cloudy_dates"), ({"cloud_height_m": -1}, "cloud_height_m")]:
        with pytest.raises(ConfigError, match=f"download.synthetic.cia-sim.{key}"):
            synthetic_config("cia-sim", overrides)


def test_clouds_and_shadows_are_invalid_in_the_datacube(cloudy):
    manifest, cube = cloudy
    for date in manifest.date_list():
        qa = qa_of(manifest, date)
        valid = cube["valid"][date_index(cube, date)].values.astype(bool)
        assert not valid[qa != QA_CLEAR].any() and valid[qa == QA_CLEAR].all()


def test_a_damaged_qa_file_is_refused(tmp_path):
    manifest = generate_dataset("cia-sim", tmp_path / "raw", {**CLOUDY, "n_dates": 2, "cloudy_dates": 1.0})
    path = manifest.file(manifest.date_list()[0], "fine_qa")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(InputError, match="qa"):
        preprocess_dataset(tmp_path / "raw", tmp_path / "processed", {"n_test": 1, "n_val": 0})
    assert not (tmp_path / "processed").exists()


def cloudy_reference_pair(manifest):
    cloudy_dates = manifest.meta["clouds"]["cloudy_dates"]
    clear = [d for d in manifest.date_list() if d not in cloudy_dates]
    return cloudy_dates[0], clear[-1]


def test_a_deep_model_predicts_the_gaps_and_a_traditional_method_leaves_them_out(cloudy, monkeypatch):
    manifest, cube = cloudy
    pair = cloudy_reference_pair(manifest)
    inputs = pair_inputs(cube, pair)
    gaps = ~cube["valid"][date_index(cube, pair[0])].values.astype(bool)
    assert gaps.any() and np.isnan(inputs["fine_ref"][:, gaps]).all()
    # the deep predictor hands the network a reference whose gaps hold the coarse reference
    monkeypatch.setattr(sampling, "predict_scene", lambda model, fine_ref, *args, **kwargs: fine_ref)
    model = type("Model", (), {"traits": type("Traits", (), {"stochastic": False})()})()
    filled = sampling.deep_predictor(model, tile=256)(inputs["fine_ref"], inputs["coarse_ref"], inputs["coarse_target"])
    np.testing.assert_array_equal(filled[:, gaps], inputs["coarse_ref"][:, gaps])
    np.testing.assert_array_equal(filled[:, ~gaps], inputs["fine_ref"][:, ~gaps])
    persistence = predict_pair(get_method("persistence"), cube, pair)["prediction"]
    assert np.isnan(persistence[:, gaps]).all() and np.isfinite(persistence[:, ~gaps]).all()


def test_scores_cover_the_truth_valid_pixels_and_report_the_predicted_share(cloudy):
    manifest, cube = cloudy
    pair = cloudy_reference_pair(manifest)
    target = cube["fine"][date_index(cube, pair[1])].values
    gaps = ~cube["valid"][date_index(cube, pair[0])].values.astype(bool)
    perfect = to_reflectance(target)
    half = perfect.copy()
    half[:, gaps] = np.nan  # a method that leaves the gaps out
    for prediction, gap_share in ((perfect, 1.0), (half, None)):
        table = score_pair(cube, pair, prediction)
        overall = table[table["band"] == "all"].set_index(["region", "metric"])["value"]
        assert overall[("all", "rmse")] == 0 and overall[("all", "predicted")] == 1
        if gap_share is None:
            assert overall[("gap", "predicted")] == 0 and ("gap", "rmse") not in overall.index
        else:
            assert overall[("gap", "predicted")] == 1 and overall[("gap", "rmse")] == 0
    cloudy_target = (manifest.meta["clouds"]["cloudy_dates"][0], manifest.meta["clouds"]["cloudy_dates"][1])
    table = score_pair(cube, cloudy_target, to_reflectance(cube["fine"][date_index(cube, cloudy_target[1])].values))
    assert table.query("band == 'all' and metric == 'rmse'")["value"].max() == 0  # clouds in the truth are not scored


def test_training_patches_fill_reference_gaps_and_skip_cloudy_targets(cloudy):
    manifest, cube = cloudy
    pair = cloudy_reference_pair(manifest)
    patches = PairPatchDataset(cube, [pair[::-1], pair], patch_size=cube.sizes["y"], samples_per_epoch=4,
                               augment=False)
    ref_gaps = ~cube["valid"][date_index(cube, pair[0])].values.astype(bool)
    target_gaps = ref_gaps  # the cloudy date is the target of the first pair
    for index in range(4):
        sample = patches[index]
        ref, target = sample["pair"].tolist()
        if ref == date_index(cube, pair[0]):
            coarse = to_reflectance(cube["coarse"][ref].values)
            np.testing.assert_array_equal(sample["fine_ref"].numpy()[:, ref_gaps], coarse[:, ref_gaps])
            assert sample["valid"].numpy()[0].all()
        else:
            assert not sample["valid"].numpy()[0][target_gaps].any()
