"""`stfusion info models`: every model, both tiers, and paper-tier counts that match the papers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stfusion.cli import model_table

# Published sizes (models.md section 0; DCSTFN from MCBAM-GAN Table 5, 6 bands jointly here).
PAPER = {("dcstfn", "parameters"): 710_000, ("edcstfn", "parameters"): 284_134,
         ("gan-stfm", "parameters"): 578_130, ("gan-stfm", "discriminator_parameters"): 3_665_959,
         ("autoencoder", "parameters"): 217_990, ("mcbam-gan", "parameters"): 14_875_000,
         ("mcbam-gan", "discriminator_parameters"): 3_665_959, ("swinstfm", "parameters"): 37_535_290,
         ("stfdiff", "parameters"): 7_482_054}


@pytest.fixture(scope="module")
def rows():
    return model_table()


@pytest.mark.parametrize("model, field", list(PAPER))
def test_paper_scale_counts_match_the_papers_within_ten_percent(rows, model, field):
    row = next(r for r in rows if r["model"] == model and r["tier"] == "paper" and r["variant"] is None)
    assert row[field] == pytest.approx(PAPER[model, field], rel=0.10)


def test_every_model_has_both_tiers_and_quick_is_not_larger(rows):
    for model in ("dcstfn", "edcstfn", "gan-stfm", "mcbam-gan", "swinstfm", "stfdiff", "autoencoder"):
        tiers = {r["tier"]: r for r in rows if r["model"] == model and r["variant"] is None}
        assert set(tiers) == {"quick", "paper"}
        assert tiers["quick"]["parameters"] <= tiers["paper"]["parameters"]


def test_json_output_lists_family_scale_and_count():
    out = subprocess.run([sys.executable, "-m", "stfusion.cli", "info", "models", "--json"],
                         capture_output=True, text=True, check=True).stdout
    table = json.loads(out)
    assert {(r["model"], r["family"]) for r in table} >= {("dcstfn", "cnn"), ("edcstfn", "cnn"), ("gan-stfm", "gan")}
    assert all(r["parameters"] > 0 for r in table)


def test_every_ablation_variant_is_listed_at_both_scales(rows):
    variants = {(r["variant"], r["tier"]) for r in rows if r["variant"] is not None}
    assert {v for v, _ in variants} == {"depth-1", "depth-2", "multi-scale", "cbam", "multi-scale+cbam",
                                        "multi-scale+aff", "multi-scale+cbam+aff"}
    assert all((v, s) in variants for v, _ in variants for s in ("quick", "paper"))
    depth = {r["variant"]: r["parameters"] for r in rows if r["tier"] == "paper" and r["variant"]}
    assert depth["depth-1"] < depth["depth-2"]  # each reconstruction scale adds a head


def test_info_methods_gives_each_deep_model_its_size_at_the_selected_tier(rows, capsys):
    from stfusion.cli import main

    assert main(["info", "methods"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    for row in rows:
        if row["selected"] and row["variant"] is None and row["model"] in lines:
            assert f"{row['parameters']:,d} parameters" in lines[row["model"]]
    assert " 0 parameters" in lines["starfm"] and " 0 parameters" not in lines["swinstfm"]
