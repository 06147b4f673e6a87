"""Exported weights: safetensors files with a card, written by the evaluate stage and read by fuse and info."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from stfusion.cli import main
from stfusion.errors import InputError
from stfusion.inference.weights import export_weights, load_model, read_card, read_weights, write_safetensors
from stfusion.io import write_json
from stfusion.methods.models import build_model
from stfusion.paths import Workspace
from stfusion.reporting.exports import export_models, exported_weights, mean_test_scores

ARCH = {"channels": [4, 6, 8]}
CARD = {"dataset": "cia-sim", "seed": 42, "tier": "quick", "best_epoch": 3, "tile": 40, "uncertainty_samples": 0,
        "bands": ["blue", "green", "red", "nir", "swir1", "swir2"], "reflectance_scale": 10000.0, "ratio": 20,
        "pixel_size": [25.0, 25.0], "crs": "EPSG:32755", "patch_size": 64, "batch_size": 8, "epochs": 4,
        "steps": 120, "train_dates": ["2001-10-08"], "validation_targets": ["2002-01-12"]}
RUN = {"device": "cpu", "cpu_threads": 1, "processes": 1, "train_seconds": 12.5, "best_val_rmse": 0.031,
       "code": {"stfusion": "0.1.0", "commit": "0123456789"}}


def scores_table(dataset="cia-sim", model="dcstfn", seed=42) -> pd.DataFrame:
    rows = []
    for target, rmse in (("2002-02-13", 0.02), ("2002-04-01", 0.04)):
        for metric, value in (("rmse", rmse), ("ssim", 0.9)):
            rows.append({"dataset": dataset, "method": model, "seed": seed, "target_date": target, "band": "all",
                         "region": "all", "metric": metric, "value": value})
        rows.append({"dataset": dataset, "method": model, "seed": seed, "target_date": target, "band": "nir",
                     "region": "all", "metric": "rmse", "value": 9.0})  # per band: not the card's
    return pd.DataFrame(rows)


@pytest.fixture
def trained(tmp_path):
    """A workspace whose train stage left dcstfn seed 42 of cia-sim: model.pt and run.json."""
    workspace = Workspace(tmp_path / "study")
    folder = workspace.predictions("cia-sim", "dcstfn", 42)
    torch.manual_seed(0)
    export_weights(folder / "model.pt", "dcstfn", build_model("dcstfn", ARCH), ARCH, **CARD)
    write_json(folder / "run.json", {**RUN, "model": "dcstfn"})
    return workspace


def test_export_writes_safetensors_with_the_card_and_test_scores(trained):
    [path] = export_models(trained, ["cia-sim"], ["dcstfn"], [42], scores_table())
    assert path == exported_weights(trained, "cia-sim", "dcstfn", 42) and path.suffix == ".safetensors"
    card = read_card(path)
    assert card["model"] == "dcstfn" and card["arch"] == ARCH
    assert {k: card["card"][k] for k in CARD} == CARD
    assert {k: card["card"][k] for k in RUN} == RUN
    assert card["card"]["test"] == {"targets": ["2002-02-13", "2002-04-01"], "mean": {"rmse": 0.03, "ssim": 0.9}}
    original, _ = load_model(trained.predictions("cia-sim", "dcstfn", 42) / "model.pt")
    exported, _ = load_model(path, expected="dcstfn")
    for key, value in original.state_dict().items():
        assert torch.equal(value, exported.state_dict()[key]), key


def test_the_card_is_a_json_header_readable_without_torch(trained):
    [path] = export_models(trained, ["cia-sim"], ["dcstfn"], [42], scores_table())
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")  # the safetensors layout: header length, JSON header, tensors
    header = json.loads(raw[8:8 + size])
    assert json.loads(header["__metadata__"]["stfusion"])["metadata"]["test"]["mean"]["rmse"] == 0.03


def test_exports_are_byte_stable_and_replace_the_dataset_folder_whole(trained):
    scores = scores_table()
    [path] = export_models(trained, ["cia-sim"], ["dcstfn"], [42], scores)
    first = path.read_bytes()
    stale = path.parent / "seed-7.safetensors"
    stale.write_bytes(b"old")
    assert export_models(trained, ["cia-sim"], ["dcstfn"], [42], scores)[0].read_bytes() == first
    assert not stale.exists()


def test_a_run_without_test_scores_is_an_error_and_keeps_the_earlier_export(trained):
    [path] = export_models(trained, ["cia-sim"], ["dcstfn"], [42], scores_table())
    before = path.read_bytes()
    with pytest.raises(InputError, match="no test scores of dcstfn seed 42"):
        export_models(trained, ["cia-sim"], ["dcstfn"], [42], scores_table(seed=43))
    assert path.read_bytes() == before


def test_test_scores_are_the_whole_image_mean_over_targets():
    assert mean_test_scores(scores_table(), "cia-sim", "dcstfn", 42)["mean"]["rmse"] == pytest.approx(0.03)


def test_info_weights_prints_the_card(trained, capsys):
    [path] = export_models(trained, ["cia-sim"], ["dcstfn"], [42], scores_table())
    assert main(["info", "weights", str(path)]) == 0
    out = capsys.readouterr().out
    for text in ("dcstfn, quick tier", "blue, green, red, nir, swir1, swir2", "reflectance x 10000", "25 m",
                 "120 steps", "seed 42", "on cpu in 12 s", "best RMSE 0.031 at epoch 3", "rmse 0.03",
                 "commit 0123456789"):
        assert text in out, text
    assert main(["info", "weights", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["card"]["seed"] == 42
    model_pt = trained.predictions("cia-sim", "dcstfn", 42) / "model.pt"
    assert main(["info", "weights", str(model_pt)]) == 0
    assert "not in this file" in capsys.readouterr().out


@pytest.mark.parametrize("case, message", [
    ("missing", "weights file not found"), ("text", "not a readable safetensors file"),
    ("foreign", "not an stfusion weights file"), ("no-path", "give the weights file"),
])
def test_info_weights_bad_input_is_one_line(tmp_path, capsys, case, message):
    path = tmp_path / "w.safetensors"
    if case == "text":
        path.write_text("not weights")
    elif case == "foreign":
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(2)}, path, metadata={"other": "tool"})
    args = ["info", "weights"] + ([] if case == "no-path" else [str(path)])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_truncated_safetensors_file_is_refused(trained, tmp_path):
    [path] = export_models(trained, ["cia-sim"], ["dcstfn"], [42], scores_table())
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match="cut.safetensors"):
        load_model(cut)


def test_write_safetensors_round_trips_a_payload(tmp_path):
    model = build_model("dcstfn", ARCH)
    path = export_weights(tmp_path / "model.pt", "dcstfn", model, ARCH, seed=1)
    payload = read_weights(path)
    copy = write_safetensors(tmp_path / "copy.safetensors", payload)
    again = read_weights(copy)
    assert {k: v for k, v in again.items() if k != "state_dict"} == {k: v for k, v in payload.items()
                                                                     if k != "state_dict"}
    assert all(torch.equal(again["state_dict"][k], v) for k, v in payload["state_dict"].items())
    assert "state_dict" not in read_weights(copy, tensors=False)


def test_fuse_with_the_exported_file_gives_the_same_prediction(trained, tmp_path):
    from affine import Affine
    from rasterio.crs import CRS

    from stfusion.data.raster import Grid, read_geotiff, write_geotiff

    [path] = export_models(trained, ["cia-sim"], ["dcstfn"], [42], scores_table())
    grid = Grid(40, 60, Affine(25.0, 0, 300000.0, 0, -25.0, 6200000.0), CRS.from_epsg(32755))
    rng = np.random.default_rng(3)
    files = {}
    for name in ("f1", "c1", "c2"):
        files[name] = tmp_path / f"{name}.tif"
        write_geotiff(files[name], rng.integers(300, 4000, (6, 40, 60)).astype(np.int16), grid,
                      band_names=CARD["bands"])
    outs = {}
    for weights in (path, trained.predictions("cia-sim", "dcstfn", 42) / "model.pt"):
        outs[weights.suffix] = tmp_path / f"p{weights.suffix}.tif"
        assert main(["fuse", "--weights", str(weights), "--fine-ref", str(files["f1"]), "--coarse-ref",
                     str(files["c1"]), "--coarse-target", str(files["c2"]), "--out", str(outs[weights.suffix])]) == 0
    a, b = (read_geotiff(p).data for p in outs.values())
    assert np.isfinite(a).all() and np.array_equal(a, b)
