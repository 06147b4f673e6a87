import copy

import pytest
import yaml

from stfusion.pipeline.params import load_params, validate_params
from stfusion.errors import ConfigError
from stfusion.paths import find_root

ROOT = find_root()


@pytest.mark.parametrize("name", ["params.yaml", "profiles/smoke.yaml", "profiles/full.yaml"])
def test_shipped_parameter_files_are_valid(name):
    params = load_params(ROOT / name)
    assert params["profile"] in name or name == "params.yaml"


def _params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize(
    "path, value, message",
    [
        (["datasets"], ["cia-sim", "mars"], r"datasets\[1\]: unknown dataset 'mars'"),
        (["methods", "baselines"], ["persistence", "magic"], r"methods.baselines\[1\]: unknown method 'magic'"),
        (["methods", "baselines"], ["persistence", "dcstfn"], r"methods.baselines\[1\]: expected a method that needs no"),
        (["methods", "models"], ["starfm"], r"methods.models\[0\]: expected a deep model"),
        (["methods"], ["persistence"], r"methods: expected a mapping"),
        (["seed"], "forty-two", "seed: expected an integer"),
        (["download", "synthetic", "cia-sim", "height"], 250, "cia-sim.height"),
        (["download", "synthetic", "cia-sim", "colour"], 1, "cia-sim.colour"),
        (["download", "raw_dir"], 5, "download.raw_dir"),
        (["preprocess", "splits", "cia-sim", "n_test"], 0, "preprocess.splits.cia-sim.n_test"),
        (["preprocess", "splits", "cia-sim", "test_targets"], "2001-11-09", "preprocess.splits.cia-sim.test_targets"),
        (["ablation", "variants"], ["depth-9"], r"ablation.variants\[0\]"),
        (["ablation", "variants"], ["cbam", "cbam"], "unique variant names"),
        (["ablation", "model"], "starfm", "ablation.model"),
        (["ablation", "full_model_rows"], ["depth-1"], "ablation.full_model_rows"),
        (["ablation", "settings", "cbam", "arch", "depth"], 7, r"ablation.settings.cbam .*depth"),
        (["ablation", "settings", "cbam", "lr"], -1, r"ablation.settings.cbam .*lr"),
        (["ablation", "tables"], 1, "ablation.tables"),
        (["bogus"], 1, "bogus"),
        (["evaluate", "change_threshold"], -0.1, "evaluate.change_threshold"),
        (["evaluate", "ergas_ratio"], 20, "evaluate.ergas_ratio"),
        (["evaluate", "ssim"], 11, "evaluate.ssim"),
        (["figures", "dpi"], 5, "figures.dpi"),
        (["figures", "difference_band"], "thermal", "figures.difference_band"),
        (["figures", "crop", "cia-sim"], {"row": 0, "col": 0, "height": 0, "width": 5}, "figures.crop.cia-sim"),
        (["figures", "crop", "mars"], {"row": 0, "col": 0, "height": 5, "width": 5}, "figures.crop.mars"),
        (["figures", "pairs", "cia-sim"], ["2001-10-08"], "figures.pairs.cia-sim"),
    ],
)
def test_invalid_parameters_are_named(path, value, message):
    params = copy.deepcopy(_params())
    node = params
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=message):
        validate_params(params)


def test_unknown_dataset_name_in_acquire(tmp_path):
    from stfusion.data.sources import acquire

    with pytest.raises(ConfigError, match="unknown dataset 'cia-simulated'"):
        acquire("cia-simulated", tmp_path / "x")
    assert not (tmp_path / "x").exists()
