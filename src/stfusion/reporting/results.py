"""The evaluate stage's result files: tidy scores, DVC metrics, Markdown and the papers' tables.

Everything under ``reports/tables`` and ``reports/metrics`` is replaced together, atomically, only
after every score has been computed, so a failure leaves the previous results whole.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from stfusion.data.datasets import get_dataset
from stfusion.evaluation.scores import (COLUMNS, ablation_folders, change_table, dataset_results, metric_table,
                                        summary_metrics)
from stfusion.io import atomic_dir, write_text
from stfusion.reporting.tables import markdown, write_paper_tables

ABLATION_NOTE = ("\nAt the quick tier (the default study) every variant trains for a few hundred CPU steps: differences "
                 "between variants are not significant (compare them with the spread over test pairs in the "
                 "`ablation` figure). The paper tier on a GPU is the one to compare with the published tables.\n")


def write_training_curves(workspace, datasets: list[str], methods: list[str], folder: Path) -> list[Path]:
    """One wide CSV per trained method (epoch, train_loss, val_loss, train_rmse, val_rmse, ...), for
    ``dvc plots show`` (dvc.yaml's top-level plots point at this folder)."""
    written = []
    for dataset in datasets:
        for method in methods:
            path = workspace.predictions(dataset, method) / "history.csv"
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


def evaluate_study(workspace, datasets: list[str], methods: list[str], variants: list[str], profile: str,
                   settings: dict | None = None, *, ablation_model: str | None = None,
                   full_model_rows: list[str] = ()) -> dict:
    """Score every method and ablation variant on every dataset; write the tables and DVC metrics.

    ``settings`` is the ``evaluate`` section of params.yaml (``change_threshold``);
    ``variants``, ``ablation_model`` and ``full_model_rows`` come from its ``ablation`` section.
    ``reports/tables`` and ``reports/metrics`` are replaced together, atomically, only after every
    score has been computed, so a failure leaves the previous results whole.
    """
    start = time.perf_counter()
    results = {d: dataset_results(workspace, d, methods,
                                   ablation_folders(workspace, d, variants, ablation_model, list(full_model_rows)),
                                   settings or {}) for d in datasets}
    scores = pd.concat([r["scores"] for r in results.values()], ignore_index=True)
    ablation = pd.concat([r["ablation"] for r in results.values()], ignore_index=True)
    runs = pd.concat([r["runs"] for r in results.values()], ignore_index=True)
    uncertainty = pd.concat([r["uncertainty"] for r in results.values()], ignore_index=True)
    markdowns = {}
    for dataset, r in results.items():
        label = get_dataset(dataset).label(profile)
        markdowns[f"metrics_{dataset}"] = (
            markdown(metric_table(r["scores"]), title=f"Mean scores over the test pairs, {dataset}", label=label)
            + "\n" + markdown(change_table(r["scores"]), title=f"RMSE over changed and unchanged pixels, {dataset}", label=label)
        )
        title = f"Ablation: mean scores over the test pairs, {dataset}"
        markdowns[f"ablation_{dataset}"] = (
            markdown(metric_table(r["ablation"]).rename_axis(index=["family", "variant"]), title=title, label=label)
            + ABLATION_NOTE if not r["ablation"].empty else f"### {title}\n\nNo ablation variant was run ({label}).\n")
    with atomic_dir(workspace.tables) as tables, atomic_dir(workspace.metrics) as metric_dir:
        scores.to_csv(tables / "scores.csv", index=False, float_format="%.8g")
        ablation.to_csv(tables / "ablation_scores.csv", index=False, float_format="%.8g")
        runs.to_csv(tables / "runs.csv", index=False, float_format="%.6g")
        uncertainty.to_csv(tables / "uncertainty.csv", index=False, float_format="%.6g")
        for name, text in markdowns.items():
            write_text(tables / f"{name}.md", text)
        write_paper_tables(scores, ablation, runs, datasets, profile, tables / "paper")
        for dataset, r in results.items():
            write_text(metric_dir / f"{dataset}.json", json.dumps(summary_metrics(r["scores"]), indent=2, sort_keys=True) + "\n")
        conventions = {d: r["conventions"] for d, r in results.items()}
        write_text(tables / "conventions.json", json.dumps(conventions, indent=2) + "\n")
        write_training_curves(workspace, datasets, methods, tables / "training")
    seconds = time.perf_counter() - start
    return {"scores": scores, "ablation": ablation, "runs": runs, "markdown": markdowns, "seconds": seconds,
            "metrics": {d: summary_metrics(r["scores"]) for d, r in results.items()}}
