import copy

import pytest
import yaml

from stfusion.pipeline.params import load_params, validate_params
from stfusion.pipeline.profiles import merge, profile_params, write_study
from stfusion.errors import ConfigError
from stfusion.paths import find_root

ROOT = find_root()


def test_shipped_parameters_are_valid():
    assert load_params(ROOT / "params.yaml")["profile"] == "default"


@pytest.mark.parametrize("name", ["smoke", "full", "rehearsal"])
def test_profiles_are_valid_overlays(name):
    params = profile_params(ROOT, name)
    overlay = yaml.safe_load((ROOT / "profiles" / f"{name}.yaml").read_text())
    overlay.pop("extends", None)
    default = _params()
    assert params["profile"] == name
    assert len(yaml.safe_dump(overlay)) < len(yaml.safe_dump(default)) / 2  # only what differs
    assert overlay != default and all(key in default for key in overlay)


def test_the_rehearsal_is_the_full_profile_with_fewer_steps():
    full, rehearsal = profile_params(ROOT, "full"), profile_params(ROOT, "rehearsal")
    assert rehearsal["datasets"] == full["datasets"] and rehearsal["preprocess"] == full["preprocess"]
    micro = rehearsal["train"].pop("micro_batch")  # micro-batches: the paper batches within 16 GiB
    assert rehearsal["train"] == {k: v for k, v in full["train"].items() if k != "micro_batch"}
    assert rehearsal["train"]["tier"] == "paper"
    assert all(tiers["paper"]["batch_size"] % micro == 0 for tiers in full["models"].values())
    counts = {"epochs", "steps_per_epoch", "val_patches", "uncertainty_samples", "sample_steps"}  # what it cuts
    for name, tiers in full["models"].items():
        paper, cut = tiers["paper"], rehearsal["models"][name]["paper"]
        kept = lambda s: {k: v for k, v in {**s, **s.get("arch", {})}.items() if k not in counts | {"arch", "tile"}}
        assert kept(cut) == kept(paper), name  # architecture, batch, patch: the paper's
        assert cut.get("tile") == paper.get("tile") or (name, cut["tile"]) == ("gan-stfm", 1024)  # 2048: 15.9 GiB
        assert cut["steps_per_epoch"] * cut["epochs"] < paper["steps_per_epoch"] * paper["epochs"]


def test_a_profile_can_extend_another(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "base.yaml").write_text("seed: 7\nseeds: [7, 8]\nrobustness: {levels: {time_gap: [1]}}\n")
    (tmp_path / "profiles" / "child.yaml").write_text("extends: base\nseeds: [7]\n")
    params = profile_params(tmp_path, "child")
    assert params["seed"] == 7 and params["seeds"] == [7] and params["profile"] == "child"
    assert params["robustness"]["levels"]["time_gap"] == [1] and params["robustness"]["levels"]["clouds"][0] == 0.0
    (tmp_path / "profiles" / "base.yaml").write_text("extends: child\n")
    with pytest.raises(ConfigError, match="base.yaml: extends: expected the name of another profile"):
        profile_params(tmp_path, "child")
    (tmp_path / "profiles" / "child.yaml").write_text("extends: nowhere\n")
    with pytest.raises(ConfigError, match="child.yaml: extends: no profile 'nowhere'"):
        profile_params(tmp_path, "child")


def test_an_overlay_merges_mappings_and_replaces_the_rest():
    base = {"a": {"x": 1, "y": [1, 2], "z": {"deep": 1, "keep": 2}}, "b": 3}
    merged = merge(base, {"a": {"y": [3], "z": {"deep": None}}, "c": 4})
    assert merged == {"a": {"x": 1, "y": [3], "z": {"deep": None, "keep": 2}}, "b": 3, "c": 4}
    assert base["a"]["z"] == {"deep": 1, "keep": 2}  # the base is not changed


def test_a_profile_study_gets_its_own_parameters_and_pipeline(tmp_path):
    import shutil

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "tiny.yaml").write_text("seed: 7\nseeds: [7, 8]\n")
    folder = write_study(tmp_path, "tiny")
    assert folder == tmp_path / "studies" / "tiny"
    params = yaml.safe_load((folder / "params.yaml").read_text())
    assert params["seed"] == 7 and params["seeds"] == [7, 8] and params["profile"] == "tiny" and params["models"] == _params()["models"]
    pipeline = (folder / "dvc.yaml").read_text()
    assert '- code: "../../"' in pipeline and pipeline.count("${code}notebooks/") == 10
    assert (tmp_path / "params.yaml").read_text() == (ROOT / "params.yaml").read_text()  # never rewritten
    (tmp_path / "profiles" / "bad.yaml").write_text("profile: other\n")
    with pytest.raises(ConfigError, match="bad.yaml: profile: leave it out"):
        write_study(tmp_path, "bad")
    (tmp_path / "profiles" / "worse.yaml").write_text("seed: many\n")
    with pytest.raises(ConfigError, match="seed: expected an integer"):
        write_study(tmp_path, "worse")
    (tmp_path / "profiles" / "worse.yaml").write_text("seed: 7\n")
    with pytest.raises(ConfigError, match=r"seeds: expected a list that includes seed \(7\)"):
        write_study(tmp_path, "worse")
    (tmp_path / "profiles" / "worse.yaml").write_text("seeds: [42, 42]\n")
    with pytest.raises(ConfigError, match="seeds: expected no duplicates"):
        write_study(tmp_path, "worse")
    assert not (tmp_path / "studies" / "worse").exists() and not (tmp_path / "studies" / "bad").exists()
    with pytest.raises(ConfigError, match="--profile: no profile 'nope'"):
        write_study(tmp_path, "nope")


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
        (["evaluate", "ergas_ratio"], 0.05, "evaluate.ergas_ratio"),  # the ratio comes from the data
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
