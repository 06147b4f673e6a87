"""The evaluate stage's result files: tidy scores of every run, the seed ensembles, the bootstrap
comparisons and ranking, DVC metrics, Markdown and the papers' tables.

Everything under ``data/ensembles``, ``reports/tables`` and ``reports/metrics`` is replaced together,
atomically, only after every score has been computed, so a failure leaves the previous results whole.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from stfusion.data.datacube import open_cube
from stfusion.data.datasets import get_dataset
from stfusion.data.splits import Splits
from stfusion.evaluation.scores import (Run, ablation_runs, change_table, dataset_results, method_folder, metric_table,
                                        pair_table, seed_spread, study_runs, summary_metrics)
from stfusion.evaluation.significance import study_significance
from stfusion.inference.ensemble import ensemble_name, write_ensemble
from stfusion.io import atomic_dir, write_text
from stfusion.reporting.tables import markdown, significance_markdown, with_spread, write_paper_tables

ABLATION_NOTE = ("\nEach variant, and the full model's rows, is one run with the study's `seed`: the ablation is "
                 "not repeated over seeds, so it has no seed spread or interval. At the quick tier (the default "
                 "study) every variant trains for a few hundred CPU steps: differences between variants are not "
                 "significant (compare them with the spread over test pairs in the `ablation` figure). The paper "
                 "tier on a GPU is the one to compare with the published tables.\n")


def write_training_curves(workspace, datasets: list[str], methods: list[str], seed: int, folder: Path) -> list[Path]:
    """One wide CSV per trained method, from its run with the study's ``seed`` (epoch, train_loss,
    val_loss, train_rmse, val_rmse, ...), for ``dvc plots show`` (dvc.yaml's top-level plots point here)."""
    written = []
    for dataset in datasets:
        for method in methods:
            path = method_folder(workspace, dataset, method, seed) / "history.csv"
            if not path.is_file():
                continue
            history = pd.read_csv(path)
            wide = history.pivot_table(index="epoch", columns=["split", "metric"], values="value")
            wide.columns = [f"{split}_{metric}" for split, metric in wide.columns]
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{dataset}_{method}.csv"
            wide.reset_index().to_csv(target, index=False, float_format="%.6g")
            written.append(target)
    return written


def write_ensembles(workspace, dataset: str, models: list[str], seeds: list[int], out_dir: Path,
                    cube, splits) -> list[Run]:
    """The seed ensemble of every deep model (with two seeds or more), written under ``out_dir``."""
    if len(seeds) < 2:
        return []
    runs = []
    for model in models:
        folder = out_dir / ensemble_name(model)
        write_ensemble(model, [workspace.predictions(dataset, model, s) for s in seeds], cube, splits, folder)
        runs.append(Run(ensemble_name(model), None, folder))
    return runs


PREDICTED_NOTE = (
    "\nScored pixels are those valid in the truth. `all`, `changed`, `unchanged`: the fine reference is valid "
    "there too; `gap`: it is cloudy or missing, and only a method that fills gaps predicts it (the deep models "
    "fill them from the coarse reference; the traditional methods leave them out). STARFM also leaves out "
    "pixels where none of its candidate neighbours passes its filters.\n"
)


def _dataset_markdown(r: dict, dataset: str, label: str) -> dict[str, str]:
    means, spread = metric_table(r["scores"]), seed_spread(r["scores"])
    pair_mean, pair_std = pair_table(r["scores"])
    text = (markdown(with_spread(means, spread), title=f"Mean scores over the test pairs (± sd over seeds), {dataset}",
                     label=label)
            + "\n" + markdown(with_spread(pair_mean, pair_std), title=f"RMSE per test pair (± sd over seeds), {dataset}",
                              label=label)
            + "\n" + markdown(with_spread(change_table(r["scores"]), None),
                              title=f"RMSE over changed and unchanged pixels, and at gaps of the reference, {dataset}",
                              label=label)
            + "\n" + markdown(change_table(r["scores"], "predicted"),
                              title=f"Share of the scored pixels each method predicted, {dataset}", label=label)
            + PREDICTED_NOTE)
    title = f"Ablation: mean scores over the test pairs, {dataset}"
    ablation = (markdown(metric_table(r["ablation"]).rename_axis(index=["family", "variant"]), title=title, label=label)
                + ABLATION_NOTE if not r["ablation"].empty else f"### {title}\n\nNo ablation variant was run ({label}).\n")
    return {f"metrics_{dataset}": text, f"ablation_{dataset}": ablation}


def evaluate_study(workspace, datasets: list[str], methods: list[str], variants: list[str], profile: str,
                   settings: dict | None = None, *, models: list[str] = (), seed: int = 0, seeds: list[int] = (0,),
                   ablation_model: str | None = None, full_model_rows: list[str] = ()) -> dict:
    """Score every run (each seed of each deep model), the seed ensembles and the ablation variants on every
    dataset; compare the methods by bootstrap; write the tables, the DVC metrics and the ensembles.

    ``settings`` is the ``evaluate`` section of params.yaml (``change_threshold``, ``bootstrap``);
    ``variants``, ``ablation_model`` and ``full_model_rows`` come from its ``ablation`` section.
    ``data/ensembles``, ``reports/tables`` and ``reports/metrics`` are replaced together, atomically,
    only after every score has been computed, so a failure leaves the previous results whole.
    """
    start = time.perf_counter()
    settings = settings or {}
    bootstrap = {"resamples": 2000, "level": 0.95, **settings.get("bootstrap", {})}
    bootstrap.pop("block", None)
    results = {}
    with atomic_dir(workspace.ensembles(datasets[0]).parent) as ensembles:
        for d in datasets:
            cube, splits = open_cube(workspace.cube(d)), Splits.load(workspace.splits(d))
            runs = study_runs(workspace, d, methods, list(seeds))
            runs += write_ensembles(workspace, d, list(models), list(seeds), Path(ensembles) / d, cube, splits)
            ablation = ablation_runs(workspace, d, variants, ablation_model, list(full_model_rows), seed)
            results[d] = dataset_results(cube, splits, runs, ablation, settings)
        tables = {key: pd.concat([r[key] for r in results.values()], ignore_index=True)
                  for key in ("scores", "blocks", "ablation", "runs", "uncertainty", "coverage")}
        families = dict(zip(tables["scores"]["method"], tables["scores"]["family"]))
        differences, ranks = study_significance(tables["blocks"], families, [m for m in methods if m in models],
                                                seed=seed, **bootstrap)
        markdowns = {}
        for dataset, r in results.items():
            label = get_dataset(dataset).label(profile)
            markdowns.update(_dataset_markdown(r, dataset, label))
            markdowns[f"significance_{dataset}"] = significance_markdown(
                differences[differences["dataset"] == dataset], ranks[ranks["dataset"] == dataset],
                dataset=dataset, label=label, level=bootstrap["level"], resamples=bootstrap["resamples"])
        _write_tables(workspace, tables, differences, ranks, markdowns, results, datasets, methods, seed, profile)
    seconds = time.perf_counter() - start
    return {**tables, "differences": differences, "ranking": ranks, "markdown": markdowns, "seconds": seconds,
            "metrics": {d: summary_metrics(r["scores"]) for d, r in results.items()}}


def _write_tables(workspace, tables: dict, differences, ranks, markdowns, results, datasets, methods, seed, profile) -> None:
    with atomic_dir(workspace.tables) as out, atomic_dir(workspace.metrics) as metric_dir:
        tables["scores"].to_csv(out / "scores.csv", index=False, float_format="%.8g")
        tables["ablation"].to_csv(out / "ablation_scores.csv", index=False, float_format="%.8g")
        tables["runs"].to_csv(out / "runs.csv", index=False, float_format="%.6g")
        tables["uncertainty"].to_csv(out / "uncertainty.csv", index=False, float_format="%.6g")
        tables["coverage"].to_csv(out / "coverage.csv", index=False, float_format="%.6g")
        differences.to_csv(out / "differences.csv", index=False, float_format="%.6g")
        ranks.to_csv(out / "ranking.csv", index=False, float_format="%.6g")
        for name, text in markdowns.items():
            write_text(out / f"{name}.md", text)
        write_paper_tables(tables["scores"], tables["ablation"], tables["runs"], datasets, profile, out / "paper")
        for dataset, r in results.items():
            write_text(metric_dir / f"{dataset}.json", json.dumps(summary_metrics(r["scores"]), indent=2, sort_keys=True) + "\n")
        conventions = {d: r["conventions"] for d, r in results.items()}
        write_text(out / "conventions.json", json.dumps(conventions, indent=2) + "\n")
        write_training_curves(workspace, datasets, methods, seed, out / "training")
