"""What ``make full`` will cost, stage by stage, from costs measured on one device.

The rehearsal (``stfusion rehearse``) measures on this machine every stage at full size with the models cut
to a few steps; ``stfusion gpu-check`` measures the models on a GPU. Neither runs the full budgets, so
the time of a stage is rebuilt from counts the full profile fixes and seconds measured:

- a training run: its optimiser steps x seconds per step, plus validation (a forward pass of each
  validation batch every epoch, counted as a third of a step), plus its test predictions;
- a prediction: seconds per fine megapixel x the scene's megapixels (STFDiff: per sample and DDIM
  step, times the full profile's samples and steps);
- the ablation: each variant as one more MCBAM-GAN run; the robustness sweep: every method once per
  test pair and condition;
- evaluate: as measured, times the prediction sets it scores per dataset in ``make full`` over those it
  scored in the measured study (each seed of each model, the seed ensembles, the ablation's rows);
- the other stages the rehearsal does not cut (download, preprocess, figures, report): as measured.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from stfusion.data.real import get_spec
from stfusion.methods.models import AUTOENCODER
from stfusion.methods.registry import get_method
from stfusion.paths import Workspace
from stfusion.pipeline.params import study_methods

@dataclass(frozen=True)
class Costs:
    """Seconds measured on one device."""

    device: str
    step_s: dict[str, float]  # model (the autoencoder included) -> one optimiser step at its paper batch
    scene_s_per_mpx: dict[str, float]  # method -> one prediction per fine megapixel (STFDiff: per sample and step)
    stage_s: dict[str, float] = field(default_factory=dict)  # DVC stage name -> measured wall seconds
    scored_runs: int | None = None  # prediction sets the measured evaluate stage scored per dataset


def scored_runs(params: dict[str, Any]) -> int:
    """Prediction sets the evaluate stage scores per dataset: each baseline, each seed of each deep model, a
    seed ensemble per model (with two seeds or more), each ablation variant and each row the full model fills."""
    models, seeds = len(params["methods"]["models"]), len(params["seeds"])
    ablation = params["ablation"]
    return (len(params["methods"]["baselines"]) + models * seeds + (models if seeds > 1 else 0)
            + len(ablation["variants"]) + len(ablation.get("full_model_rows", [])))


def _sampling_evaluations(settings: dict[str, Any]) -> int:
    """U-Net evaluations per pixel of a stochastic model's prediction (1 for the others)."""
    steps = settings.get("arch", {}).get("sample_steps")
    return steps * max(1, settings.get("uncertainty_samples", 0)) if steps else 1


def rehearsal_costs(study: Path, params: dict[str, Any]) -> Costs:
    """CPU costs from a rehearsal study: its runs' ``run.json`` and its ``rehearsal.csv``."""
    steps, scene, ws = {}, {}, Workspace(study)
    for dataset in params["datasets"]:
        runs = {AUTOENCODER: ws.autoencoder(dataset) / "run.json"}
        for method in study_methods(params):
            seed = params["seed"] if method in params["methods"]["models"] else None
            runs[method] = ws.predictions(dataset, method, seed) / "run.json"
        for method, path in runs.items():
            if not path.is_file():
                continue
            record = json.loads(path.read_text())
            settings = record.get("settings", {})
            if settings.get("steps_per_epoch"):
                steps.setdefault(method, []).append(record["train_seconds"] / (settings["epochs"] * settings["steps_per_epoch"]))
            if record.get("predict_seconds"):
                mpx = record["height"] * record["width"] / 1e6
                per = [s / mpx / _sampling_evaluations(settings) for s in record["predict_seconds"].values()]
                scene.setdefault(method, []).extend(per)
    table = study / "rehearsal.csv"
    stages = {r["stage"]: float(r["wall_s"]) for r in csv.DictReader(table.open()) if r["status"] == "ran"} if table.is_file() else {}
    measured = study / "params.yaml"  # the rehearsal's own parameters: what its evaluate stage scored
    scored = scored_runs(yaml.safe_load(measured.read_text())) if measured.is_file() else None
    return Costs("cpu", {k: statistics.median(v) for k, v in steps.items()},
                 {k: statistics.median(v) for k, v in scene.items()}, stages, scored)


def gpu_costs(report: dict[str, Any], params: dict[str, Any]) -> Costs:
    """GPU costs from ``gpu-check.json`` (it trains and predicts with the full profile's paper settings)."""
    steps = {r["model"]: r["step_s"] for r in report["models"]}
    scene = {}
    for r in report["models"]:
        if "scene_s" in r:
            settings = params["models"][r["model"]]["paper"]
            scene[r["model"]] = r["scene_s"] / (r["scene"][0] * r["scene"][1] / 1e6) / _sampling_evaluations(settings)
    return Costs(report["device"], steps, scene)


def _train_seconds(settings: dict[str, Any], step_s: float) -> float:
    validation = settings["epochs"] * math.ceil(settings.get("val_patches", 16) / settings["batch_size"]) * step_s / 3
    return settings["epochs"] * settings["steps_per_epoch"] * step_s + validation


def estimate(params: dict[str, Any], costs: Costs, scenes: dict[str, tuple[int, int, int]]) -> pd.DataFrame:
    """Hours per stage of the study ``params`` on the device of ``costs``. ``scenes``: dataset -> (fine
    megapixels, test pairs, robustness conditions per pair). A stage with no measured cost is NaN."""
    paper = lambda name: params["models"][name][params["train"]["tier"]]  # noqa: E731
    scene_s = lambda method, mpx: (costs.scene_s_per_mpx.get(method, math.nan) * mpx  # noqa: E731
                                   * (_sampling_evaluations(paper(method)) if method in params["models"] else 1))
    train_s = lambda name: _train_seconds(paper(name), costs.step_s.get(name, math.nan))  # noqa: E731
    rows = []
    for dataset, (mpx, pairs, conditions) in scenes.items():
        for stage in ("download", "preprocess"):
            rows.append((stage, dataset, 1, costs.stage_s.get(f"{stage}@{dataset}", math.nan)))
        rows.append(("autoencoder", dataset, 1, train_s(AUTOENCODER)))
        for method in params["methods"]["baselines"]:
            rows.append(("predict", dataset, 1, pairs * scene_s(method, mpx)))
        for model in params["methods"]["models"]:
            rows.append(("train", dataset, len(params["seeds"]), len(params["seeds"]) * (train_s(model) + pairs * scene_s(model, mpx))))
        ablation = params["ablation"]["model"]
        variants = len(params["ablation"]["variants"])
        rows.append(("ablation", dataset, variants, variants * (train_s(ablation) + pairs * scene_s(ablation, mpx))))
        swept = [m for m in study_methods(params) if 1 in get_method(m).pairs]  # two-pair methods are not swept
        sweep = sum(scene_s(method, mpx) for method in swept)
        rows.append(("robustness", dataset, 1, pairs * conditions * sweep))
    scale = scored_runs(params) / costs.scored_runs if costs.scored_runs else 1.0
    rows.append(("evaluate", "all", 1, costs.stage_s.get("evaluate", math.nan) * scale))
    for stage in ("figures", "report"):
        rows.append((stage, "all", 1, costs.stage_s.get(stage, math.nan)))
    table = pd.DataFrame(rows, columns=["stage", "dataset", "runs", "seconds"])
    table["hours"] = table["seconds"] / 3600
    return table


def conditions_per_pair(levels: dict[str, list[float]]) -> int:
    """Predictions per method and test pair in the robustness sweep: each degraded level once (the
    undegraded inputs are scored from the predict and train stages' predictions)."""
    return sum(len(values) - 1 for values in levels.values())


def full_scenes(params: dict[str, Any]) -> dict[str, tuple[float, int, int]]:
    """Per real dataset of ``params``: fine megapixels, test pairs and robustness conditions per pair."""
    conditions = conditions_per_pair(params["robustness"]["levels"])
    scenes = {}
    for dataset in params["datasets"]:
        _, lines, samples = get_spec(dataset).shape
        pairs = len(params["preprocess"]["splits"][dataset]["test_targets"])
        scenes[dataset] = (lines * samples / 1e6, pairs, conditions)
    return scenes


def summary(table: pd.DataFrame, device: str) -> str:
    """Hours per stage kind (every dataset's runs together) and the total, as a markdown table. A stage
    kind with runs not yet measured shows what was measured as a lower bound."""
    lines = [f"| stage ({device}) | runs | hours |", "|---|---|---|"]
    for stage, rows in table.groupby("stage", sort=False):
        measured, hours = rows["hours"].notna(), rows["hours"].sum()
        if not measured.any():
            text = "not measured"
        elif measured.all():
            text = f"{hours:,.2f}"
        else:
            text = f"≥ {hours:,.2f} ({int(rows.loc[measured, 'runs'].sum())} of {int(rows['runs'].sum())} runs measured)"
        lines.append(f"| {stage} | {int(rows['runs'].sum())} | {text} |")
    complete = table["hours"].notna().all()
    total = f"{table['hours'].sum():,.1f}" if complete else f"≥ {table['hours'].sum():,.1f} (not every run measured)"
    lines.append(f"| **total** | {int(table['runs'].sum())} | **{total}** |")
    return "\n".join(lines)
