"""`stfusion gpu-check`: refused without CUDA; its code, run on the CPU at the quick tier, checks what it says."""

from __future__ import annotations

import json

import pytest

from stfusion.cli import main
from stfusion.rehearsal.gpu import TOLERANCE, gpu_check


def test_without_cuda_it_stops_at_once_with_one_line(capsys, tmp_path):
    pytest.importorskip("torch").cuda.is_available() and pytest.skip("this machine has CUDA")
    assert main(["gpu-check", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stfusion: error: gpu-check: no CUDA device") and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_its_checks_run_the_study_code_and_report(tmp_path):
    path = gpu_check(tmp_path, models=["autoencoder", "dcstfn"], device="cpu", tier="quick", steps=2, scene=(100, 80),
                     crop=100)
    report = json.loads(path.read_text())
    autoencoder, row = report["models"]
    assert row["model"] == "dcstfn" and row["patches_per_s"] > 0 and row["finite"] and row["scene"] == [100, 80]
    checks = {c["check"]: c for c in report["checks"]}
    assert set(checks) == {"starfm", "fsdaf", "estarfm", "metrics", "ddp", "ddp-gan-stfm"}, checks
    assert all(c["ok"] for c in checks.values()), checks
    assert checks["starfm"]["tolerance"] == TOLERANCE["starfm"] and checks["ddp"]["world_size"] == 1
