"""The training framework: settings, determinism, resume, checkpoint selection, exported weights."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from stfusion.data.raster import read_geotiff
from stfusion.methods.models import build_autoencoder
from stfusion.data.splits import Splits
from stfusion.errors import ConfigError, InputError
from stfusion.inference.predict import prediction_name, uncertainty_name
from stfusion.train.config import tier_settings, train_config
from stfusion.train.datamodule import FusionDataModule, training_pairs
from stfusion.train.fit import build_task, train_model
from stfusion.train.run import run_method
from stfusion.inference.weights import export_weights, load_feature_encoder, load_model

TINY = {"epochs": 2, "steps_per_epoch": 3, "batch_size": 2, "patch_size": 32, "lr": 1e-3,
        "msssim_weight": 0.0, "val_patches": 4}


def tiny_config(**changes):
    return train_config({**TINY, "arch": {"channels": [8, 8, 16]}, **changes}, key="test")


def fit(tiny_processed, tmp_path, name="dcstfn", config=None, **kwargs):
    _, cube, splits = tiny_processed
    return train_model(name, cube, splits, config or tiny_config(), seed=7, checkpoint_dir=tmp_path / "ckpt",
                       progress=False, **kwargs)


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# --- settings ------------------------------------------------------------------------------------

def test_train_config_names_the_bad_setting():
    with pytest.raises(ConfigError, match=r"test\.lr"):
        train_config({**TINY, "lr": -1}, key="test")
    with pytest.raises(ConfigError, match=r"test\.epoch: unknown setting"):
        train_config({**TINY, "epoch": 3}, key="test")
    with pytest.raises(ConfigError, match=r"test\.batch_size"):
        train_config({**TINY, "batch_size": 0}, key="test")
    missing = dict(TINY)
    del missing["patch_size"]
    with pytest.raises(ConfigError, match=r"test\.patch_size: required"):
        train_config(missing, key="test")


def test_tier_settings_require_both_tiers():
    with pytest.raises(ConfigError, match=r"models\.dcstfn\.paper: missing"):
        tier_settings({"dcstfn": {"quick": TINY}}, "dcstfn", "paper")
    with pytest.raises(ConfigError, match="train.tier"):
        tier_settings({"dcstfn": {"quick": TINY}}, "dcstfn", "huge")


def test_invalid_hyper_parameter_is_a_config_error(tiny_processed, tmp_path):
    with pytest.raises(ConfigError, match=r"models\.dcstfn\.arch\.depth"):
        fit(tiny_processed, tmp_path, config=train_config({**TINY, "arch": {"depth": 3}}, key="test"))


def test_unknown_model_is_a_config_error(tiny_processed, tmp_path):
    with pytest.raises(ConfigError, match="unknown model 'resnet'"):
        fit(tiny_processed, tmp_path, name="resnet")


def test_feature_loss_needs_the_autoencoder(tiny_processed, tmp_path):
    with pytest.raises(ConfigError, match="autoencoder"):
        fit(tiny_processed, tmp_path, name="edcstfn")


def test_the_frozen_loss_encoder_raises_no_eval_mode_warning(tiny_processed, tmp_path):
    """Lightning warned in every EDCSTFN and GAN training that the loss's autoencoder is in eval mode: it is
    frozen on purpose, so the warning only alarmed users."""
    arch = {"channels": [4, 8, 8, 16]}
    encoder = export_weights(tmp_path / "autoencoder.pt", "autoencoder", build_autoencoder(arch), arch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tiny_processed, tmp_path, name="edcstfn", feature_encoder_path=encoder)
    assert not [w for w in caught if "eval mode" in str(w.message)], [str(w.message) for w in caught]


# --- data: test dates never reach training or validation -------------------------------------------

def test_training_and_validation_never_see_test_dates(tiny_processed):
    _, cube, splits = tiny_processed
    for references in ("pairs", "random", "any", "self"):
        data = FusionDataModule(cube, splits, tiny_config(), references=references)
        dates = {str(d)[:10] for d in cube["time"].values}
        index = {i: d for i, d in enumerate(sorted(dates))}
        seen = set()
        for dataset in (data.train_set, data.val_set):
            seen |= {index[i] for pair in dataset.pairs for i in pair}
        assert not seen & splits.test_targets


def test_random_references_exclude_the_target_and_non_training_dates(tiny_processed):
    _, _, splits = tiny_processed
    pairs = training_pairs(splits, "random")
    assert all(ref != target for ref, target in pairs)
    assert {d for pair in pairs for d in pair} == set(splits.train_dates)


def test_any_references_are_every_training_date_pair_the_target_itself_included(tiny_processed):
    _, _, splits = tiny_processed
    pairs = training_pairs(splits, "any")
    dates = set(splits.train_dates)
    assert set(pairs) == {(ref, target) for ref in dates for target in dates}
    assert len(pairs) == len(dates) ** 2 and set(training_pairs(splits, "random")) < set(pairs)
    with pytest.raises(ConfigError, match="references: expected one of"):
        training_pairs(splits, "nearest")


# --- training ------------------------------------------------------------------------------------

def test_same_seed_same_weights_on_cpu(tiny_processed, tmp_path):
    first = state(fit(tiny_processed, tmp_path / "a").model)
    second = state(fit(tiny_processed, tmp_path / "b").model)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_a_trainer_reports_its_devices_but_no_advert(tmp_path):
    """Lightning advertised its cloud logger in every training stage's output; its device lines stay."""
    import logging

    from lightning_utilities.core import rank_zero

    from stfusion.train.fit import make_trainer

    records, handler, level = [], logging.Handler(), rank_zero.log.level
    handler.emit = records.append
    rank_zero.log.addHandler(handler)
    rank_zero.log.setLevel(logging.INFO)
    try:
        make_trainer(tiny_config(), tmp_path, accelerator="cpu", devices=1, strategy="auto", progress=False,
                     callbacks=[])
    finally:
        rank_zero.log.removeHandler(handler)
        rank_zero.log.setLevel(level)
    messages = [r.getMessage() for r in records]
    assert any("GPU available" in m for m in messages), messages
    assert not any("litlogger" in m.lower() for m in messages), messages


def test_history_and_record(tiny_processed, tmp_path):
    result = fit(tiny_processed, tmp_path)
    history = result.history
    assert set(history["split"]) == {"train", "val"}
    assert {"loss", "rmse"} <= set(history["metric"])
    assert sorted(history["epoch"].unique()) == [0, 1]
    assert np.isfinite(history["value"]).all()
    record = result.record
    assert record["parameters"] == sum(p.numel() for p in result.model.parameters())
    assert record["train_seconds"] > 0
    val = history[(history["split"] == "val") & (history["metric"] == "rmse")]
    assert record["best_epoch"] == int(val.loc[val["value"].idxmin(), "epoch"])
    assert record["best_val_rmse"] == pytest.approx(val["value"].min(), rel=1e-5)


class Interrupt(Callback):
    """Kill the run at the start of epoch ``at`` (after the previous epoch's checkpoint)."""

    def __init__(self, at: int):
        self.at = at

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.at:
            raise RuntimeError("killed")


def test_resume_continues_an_interrupted_run(tiny_processed, tmp_path):
    config = tiny_config(epochs=3)
    straight = fit(tiny_processed, tmp_path / "straight", config=config)
    with pytest.raises(RuntimeError, match="killed"):
        fit(tiny_processed, tmp_path / "killed", config=config, callbacks=[Interrupt(2)])
    assert (tmp_path / "killed" / "ckpt" / "last.ckpt").is_file()
    resumed = fit(tiny_processed, tmp_path / "killed", config=config)
    assert resumed.record["resumed"] is True
    assert sorted(resumed.history["epoch"].unique()) == [0, 1, 2]
    for key, value in state(straight.model).items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)


def test_a_truncated_last_checkpoint_is_moved_aside_and_training_starts_again(tiny_processed, tmp_path):
    """A kill while last.ckpt was written leaves half a zip: named in a warning, kept aside, never resumed."""
    config = tiny_config(epochs=2)
    with pytest.raises(RuntimeError, match="killed"):
        fit(tiny_processed, tmp_path / "run", config=config, callbacks=[Interrupt(1)])
    last = tmp_path / "run" / "ckpt" / "last.ckpt"
    content = last.read_bytes()
    last.write_bytes(content[: len(content) // 2])
    with pytest.warns(UserWarning, match="last.ckpt: cannot be resumed .* starts again from scratch"):
        result = fit(tiny_processed, tmp_path / "run", config=config)
    assert result.record["resumed"] is False
    assert (tmp_path / "run" / "ckpt.damaged-last.ckpt").read_bytes() == content[: len(content) // 2]
    assert sorted(result.history["epoch"].unique()) == [0, 1]


def test_a_stale_checkpoint_of_other_settings_is_not_resumed(tiny_processed, tmp_path):
    with pytest.raises(RuntimeError, match="killed"):
        fit(tiny_processed, tmp_path, config=tiny_config(epochs=3), callbacks=[Interrupt(1)])
    result = fit(tiny_processed, tmp_path, config=tiny_config(epochs=3, lr=2e-3))
    assert result.record["resumed"] is False


# --- exported weights ----------------------------------------------------------------------------

def test_weights_round_trip_and_refuse_other_models(tiny_processed, tmp_path):
    result = fit(tiny_processed, tmp_path)
    path = export_weights(tmp_path / "model.pt", "dcstfn", result.model, {"channels": [8, 8, 16]})
    model, payload = load_model(path, expected="dcstfn")
    for key, value in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    with pytest.raises(InputError, match="not of 'edcstfn'"):
        load_model(path, expected="edcstfn")
    with pytest.raises(InputError, match="autoencoder"):
        load_feature_encoder(path)


def test_the_same_weights_give_the_same_bytes(tmp_path):
    """DVC hashes model.pt: a rerun with the same seed must give the same file, whatever its temporary name."""
    from stfusion.methods.models import build_model

    torch.manual_seed(0)
    model = build_model("dcstfn", {"channels": [8, 8, 16]})
    a = export_weights(tmp_path / "a" / "model.pt", "dcstfn", model, {"channels": [8, 8, 16]}, seed=0)
    b = export_weights(tmp_path / "b" / "model.pt", "dcstfn", model, {"channels": [8, 8, 16]}, seed=0)
    assert a.read_bytes() == b.read_bytes()


def test_weights_of_another_width_fail_strictly(tmp_path):
    from stfusion.methods.models import build_model

    model = build_model("edcstfn", {"channels": [8, 8, 16]})
    path = export_weights(tmp_path / "model.pt", "edcstfn", model, {"channels": [8, 8, 16]})
    payload = torch.load(path, weights_only=True)
    payload["arch"] = {"channels": [8, 16, 16]}
    torch.save(payload, path)
    with pytest.raises(InputError, match="do not fit edcstfn"):
        load_model(path)


def test_foreign_files_are_refused(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt"):
        load_model(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    with pytest.raises(InputError, match="not an stfusion weights file"):
        load_model(tmp_path / "plain.pt")
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "missing.pt")


# --- the Transformer and diffusion settings ------------------------------------------------------------

DIFFUSION = {"dim": 8, "dim_mults": [1, 2, 2], "sample_steps": 2, "residual": True, "gain": 1.5, "shift": 0.0,
             "clip": None}


def test_new_settings_are_checked():
    for changes, key in (({"pixel_loss": "huber"}, "pixel_loss"), ({"ema_decay": 1.0}, "ema_decay"),
                         ({"uncertainty_samples": 1}, "uncertainty_samples"), ({"gradient_clip": -1}, "gradient_clip")):
        with pytest.raises(ConfigError, match=rf"test\.{key}"):
            train_config({**TINY, **changes}, key="test")
    config = train_config({**TINY, "gradient_clip": 1.0, "arch": {"channels": [4, 4, 8, 8]}}, key="test")
    with pytest.raises(ConfigError, match="gradient_clip"):
        build_task("gan-stfm", config, feature_encoder_path=None)


def test_stfdiff_same_seed_same_weights_and_samples_with_uncertainty(tiny_processed, tmp_path):
    _, cube, splits = tiny_processed
    config = tiny_config(arch=DIFFUSION, ema_decay=0.9, gradient_clip=1.0, standardize=True, uncertainty_samples=2)
    first = fit(tiny_processed, tmp_path / "a", name="stfdiff", config=config)
    second = fit(tiny_processed, tmp_path / "b", name="stfdiff", config=config)
    for key, value in state(first.model).items():
        assert torch.equal(value, state(second.model)[key]), key
    record = run_method("stfdiff", cube, splits, tmp_path / "out", seed=7, config=config,
                        checkpoint_dir=tmp_path / "ckpt", train_options={"progress": False})
    assert record["sampling"] == {"steps": 2, "eta": 0.0, "samples": 2}
    for pair in splits.test:
        std = read_geotiff(tmp_path / "out" / uncertainty_name(pair)).data
        mean = read_geotiff(tmp_path / "out" / prediction_name(pair)).data
        assert std.shape == mean.shape and np.isfinite(mean).any()
        finite = np.isfinite(std)
        assert (np.isfinite(mean) == finite).all() and (std[finite] >= 0).all() and std[finite].max() > 0


def test_micro_batches_take_the_steps_of_whole_batches(tiny_processed, tmp_path):
    """DCSTFN has no batch norm: summing the gradients of micro-batches is the whole batch's step."""
    config = tiny_config(batch_size=4)
    whole = fit(tiny_processed, tmp_path / "whole", config=config)
    micro = fit(tiny_processed, tmp_path / "micro", config=config, micro_batch=2)
    assert whole.record["micro_batch"] is None and micro.record["micro_batch"] == 2
    assert micro.record["best_epoch"] == whole.record["best_epoch"]
    for key, value in state(whole.model).items():
        torch.testing.assert_close(state(micro.model)[key], value, atol=2e-5, rtol=1e-4, msg=key)
    with pytest.raises(ConfigError, match=r"train\.micro_batch: 3 does not divide the batch of 4"):
        fit(tiny_processed, tmp_path / "bad", config=config, micro_batch=3)
