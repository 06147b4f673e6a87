"""`stfusion study`: datasets dealt into lanes, each lane's DVC targets, and the training threads."""

import os

import pytest

from stfusion.pipeline.params import load_params, validate_params
from stfusion.errors import ConfigError
from stfusion.paths import find_root
from stfusion.pipeline.stages import THREAD_VARIABLES, kernel_environment
from stfusion.pipeline.study import lane_targets, lanes_for, usable_cores


def test_datasets_are_dealt_into_lanes():
    datasets = ["cia-sim", "lgc-sim", "cia", "lgc"]
    assert lanes_for(datasets, 2) == [["cia-sim", "cia"], ["lgc-sim", "lgc"]]
    assert lanes_for(datasets, 1) == [datasets]
    assert lanes_for(["cia-sim"], 4) == [["cia-sim"]]  # never more lanes than datasets
    assert len(lanes_for(datasets)) == min(len(datasets), len(usable_cores()))
    with pytest.raises(ConfigError, match="--lanes"):
        lanes_for(datasets, 0)


def test_a_lane_targets_its_datasets_chains_only():
    assert lane_targets(["cia-sim"]) == ["download@cia-sim", "preprocess@cia-sim", "autoencoder@cia-sim",
                                         "predict@cia-sim-*", "train@cia-sim-*", "ablation@cia-sim",
                                         "robustness@cia-sim"]
    assert all("lgc" not in t for t in lane_targets(["cia-sim", "cia"]))


def test_training_stages_start_their_kernels_on_train_threads(monkeypatch):
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    with kernel_environment(1):
        assert [os.environ[name] for name in THREAD_VARIABLES] == ["1", "1"]
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ  # restored
    with kernel_environment(None):
        assert os.environ["OMP_NUM_THREADS"] == "7"


def test_train_threads_is_validated():
    params = load_params(find_root() / "params.yaml", build_models=False)
    assert params["train"]["threads"] == 1
    for bad in (0, "two", True):
        params["train"]["threads"] = bad
        with pytest.raises(ConfigError, match="train.threads"):
            validate_params(params, build_models=False)


def test_train_micro_batch_must_divide_every_batch_the_study_trains():
    params = load_params(find_root() / "params.yaml", build_models=False)
    assert params["train"]["micro_batch"] is None
    params["train"]["micro_batch"] = 4  # every quick batch is 8
    validate_params(params, build_models=False)
    for bad, message in ((3, r"train.micro_batch: expected a divisor of models\.dcstfn\.quick\.batch_size \(8\)"),
                         (0, "train.micro_batch: expected null"), (True, "train.micro_batch: expected null")):
        params["train"]["micro_batch"] = bad
        with pytest.raises(ConfigError, match=message):
            validate_params(params, build_models=False)


def test_lanes_run_side_by_side_and_a_failed_lane_is_named(tmp_path, monkeypatch, capsys):
    """A stand-in `dvc` on PATH: each lane gets its own targets; a lane that fails is named."""
    from stfusion.errors import StfusionError
    from stfusion.pipeline.study import run_lanes

    fake = tmp_path / "bin" / "dvc"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "args: $*"\ncase "$*" in *lgc*) exit 1;; esac\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(StfusionError, match=r"dvc repro failed for lgc-sim\b"):
        run_lanes([["cia-sim"], ["lgc-sim"]], tmp_path)
    out = capsys.readouterr().out
    chain = "download@{d} preprocess@{d} autoencoder@{d} predict@{d}-* train@{d}-* ablation@{d} robustness@{d}"
    for d in ("cia-sim", "lgc-sim"):
        assert f"[{d}] args: --wait-for-lock repro --single-item --glob {chain.format(d=d)}" in out
    run_lanes([["cia-sim"]], tmp_path)  # a lane that succeeds raises nothing
