"""How much training each deep model needs: test RMSE against the training budget.

    python benchmarks/learning_curves.py [--models dcstfn ...] [--datasets cia-sim ...]
        [--multipliers 1 4 16] [--seeds 42] [--hours 2] [--threads 1] [--out docs/learning_curves]
        [--set KEY=VALUE ...]

Each run trains a model at the quick tier of params.yaml with ``multiplier`` x its epochs (the same
steps per epoch, so the cosine schedule stretches over the longer run), selects its checkpoint on the
validation pairs as the study does, and scores the test pairs (overall RMSE, mean over pairs). The
baselines' RMSE (from the completed study's reports/tables/scores.csv) are the horizontal lines.
Needs a completed `make study` (the datacubes and the feature autoencoders). Runs on CUDA when present.

``--set`` changes a quick-tier setting of every model run (YAML values; ``arch.channels=[16,32,64]``
merges into ``arch``), for experiments such as a wider generator; give such runs their own ``--out``.

A 1× run of one of the study's ``seeds`` (without ``--set``) is the study's own train stage: the same
data, settings and seed give the same numbers, so its row is read from the completed study (its
``run.json`` and ``reports/tables/scores.csv``, ``source`` = ``study``) instead of training again;
``--retrain`` trains it anyway.

Rows are appended to ``<out>/runs.csv`` as each run finishes, and a run already there is skipped, so
the benchmark resumes where it stopped; ``--hours`` stops starting new runs after that much time.
Several processes may share one ``--out`` (e.g. one per dataset, each on its own core): each append
holds a lock on the table and rewrites it atomically.
It then writes ``<out>/learning_curves.md`` (the table and, per model and dataset, the smallest budget
whose RMSE beats temporal-difference) and ``<out>/learning_curves.png``.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

HEADER = """# Learning curves: test RMSE against the training budget

Written by `python benchmarks/learning_curves.py` (its docstring says how); the runs are in `runs.csv`.
Each model trains at the quick tier of params.yaml with its epochs multiplied by the budget (1× = the
default study's budget), on one thread, with the seeds in `runs.csv`; its checkpoint is chosen on the
validation pairs and the test RMSE is the mean over the test pairs. Each cell: the mean over seeds
± their standard deviation (number of seeds). "Beats temporal-difference from" is the smallest budget
whose mean RMSE is below temporal-difference's; where a budget has one seed, a margin under about
0.002 (the spread between seeds) is not evidence. `train_seconds` in `runs.csv`
are wall seconds on whatever machine and load the run had. Data: the study's scenes as params.yaml
generates them (the realistic sensor since 2026-12-04; the earlier clean-sensor curves are in
`clean-sensor/`). `source`: `study` for a 1× run read from the study's own train stage (same seed,
settings and data), `trained` for a run this benchmark trained.
"""

COLUMNS = ["dataset", "model", "seed", "multiplier", "epochs", "steps", "train_seconds", "best_epoch", "test_rmse",
           "source"]


def parse_overrides(items: list[str]) -> dict:
    """``["arch.channels=[16, 32]", "lr=0.003"]`` -> ``{"arch": {"channels": [16, 32]}, "lr": 0.003}``."""
    import yaml

    overrides: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE, e.g. lr=0.003 or arch.channels=[16,32,64]")
        *parents, leaf = key.split(".")
        node = overrides
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return overrides


def quick_config(model: str, multiplier: float, overrides: dict | None = None):
    from stfusion.pipeline.params import load_params
    from stfusion.train.config import merge_settings, tier_settings, train_config

    models = load_params(build_models=False)["models"]
    tier_settings(models, model, "quick")  # a model without quick settings: a one-line ConfigError
    settings = merge_settings(models[model]["quick"], overrides or {})
    config = train_config(settings, key=f"models.{model}.quick" + (" (with --set)" if overrides else ""))
    return replace(config, epochs=max(1, round(config.epochs * multiplier)))


def study_row(dataset: str, model: str, seed: int, root: Path, workspace) -> dict | None:
    """The 1× row of ``seed`` from the completed study's train stage, or None if the study has not run it."""
    import json

    run = workspace.predictions(dataset, model, seed) / "run.json"
    scores = pd.read_csv(root / "reports" / "tables" / "scores.csv")
    rmse = scores[(scores["dataset"] == dataset) & (scores["method"] == model) & (scores["seed"] == seed)
                  & (scores["band"] == "all") & (scores["region"] == "all") & (scores["metric"] == "rmse")]
    if not run.is_file() or rmse.empty:
        return None
    record, config = json.loads(run.read_text()), quick_config(model, 1)
    if record["epochs"] != config.epochs or record.get("tier") != "quick":
        return None  # the study ran other settings than params.yaml's quick tier holds now
    return {"dataset": dataset, "model": model, "seed": seed, "multiplier": 1.0, "epochs": record["epochs"],
            "steps": record["epochs"] * config.steps_per_epoch, "train_seconds": record["train_seconds"],
            "best_epoch": record["best_epoch"], "test_rmse": float(rmse["value"].mean()), "source": "study"}


def train_and_score(dataset: str, model: str, seed: int, multiplier: float, workspace,
                    overrides: dict | None = None) -> dict:
    from stfusion.data.datacube import open_cube
    from stfusion.data.splits import Splits
    from stfusion.evaluation.scores import score_predictions
    from stfusion.methods.models import get_model_spec
    from stfusion.train.run import run_method

    config = quick_config(model, multiplier, overrides)
    cube, splits = open_cube(workspace.cube(dataset)), Splits.load(workspace.splits(dataset))
    encoder = workspace.autoencoder(dataset) / "autoencoder.pt" if get_model_spec(model).feature_encoder else None
    with tempfile.TemporaryDirectory(prefix="stfusion-curve-") as tmp:
        record = run_method(model, cube, splits, Path(tmp) / "out", seed=seed, config=config, tier="quick",
                            checkpoint_dir=Path(tmp) / "ckpt", feature_encoder_path=encoder,
                            train_options={"progress": False})
        scores = score_predictions(cube, splits, Path(tmp) / "out")
    rmse = scores[(scores["band"] == "all") & (scores["region"] == "all") & (scores["metric"] == "rmse")]
    return {"dataset": dataset, "model": model, "seed": seed, "multiplier": multiplier, "epochs": config.epochs,
            "steps": config.epochs * config.steps_per_epoch, "train_seconds": record["train_seconds"],
            "best_epoch": record["best_epoch"], "test_rmse": float(rmse["value"].mean()), "source": "trained"}


def read_runs(table: Path) -> pd.DataFrame:
    return pd.read_csv(table) if table.is_file() else pd.DataFrame(columns=COLUMNS)


def append_run(table: Path, row: dict) -> pd.DataFrame:
    """Add ``row`` to the table under a lock (other processes may be appending) and return the table."""
    from stfusion.io import atomic_path

    folder = os.open(table.parent, os.O_RDONLY)  # the lock is on the folder: the table itself is replaced
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        runs = pd.concat([read_runs(table), pd.DataFrame([row])], ignore_index=True)
        with atomic_path(table) as tmp:
            runs.to_csv(tmp, index=False, float_format="%.6g")
    finally:
        os.close(folder)  # closing releases the lock
    return runs


def baselines(root: Path) -> pd.DataFrame:
    """Mean test RMSE of the methods that do not train, from the completed study."""
    scores = pd.read_csv(root / "reports" / "tables" / "scores.csv")
    chosen = scores[(scores["band"] == "all") & (scores["region"] == "all") & (scores["metric"] == "rmse")
                    & (scores["family"].isin(["reference", "traditional"]))]
    return chosen.groupby(["dataset", "method"])["value"].mean().rename("test_rmse").reset_index()


def summary(runs: pd.DataFrame, lines: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and model: mean test RMSE at each budget, and the smallest budget that beats
    temporal-difference (or the budgets tried, where none does)."""
    stats = runs.groupby(["dataset", "model", "multiplier"])["test_rmse"].agg(["mean", "std", "count"])
    table = stats["mean"].unstack("multiplier")
    cells = (stats
             .apply(lambda r: f"{r['mean']:.5f}" + (f" ± {r['std']:.4f} ({r['count']:.0f})" if r["count"] > 1 else " (1)"),
                    axis=1).unstack("multiplier").fillna(""))
    reference = lines[lines["method"] == "temporal-difference"].set_index("dataset")["test_rmse"]
    beats = []
    for (dataset, _), row in table.iterrows():
        tried = [m for m, v in row.items() if pd.notna(v)]
        better = [m for m in tried if row[m] < reference.get(dataset, float("nan"))]
        beats.append(f"{min(better):g}×" if better else "not at " + ", ".join(f"{m:g}×" for m in tried))
    cells.columns = [f"{m:g}× RMSE" for m in cells.columns]
    return cells.assign(**{"temporal-difference RMSE": [reference.get(d) for d, _ in cells.index],
                           "beats temporal-difference from": beats})


def figure(runs: pd.DataFrame, lines: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from stfusion.methods.registry import get_method

    datasets = sorted(runs["dataset"].unique())
    markers, styles = "osD^v", ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.8 * len(datasets), 4.4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        data = runs[runs["dataset"] == dataset].groupby(["model", "steps"])["test_rmse"].agg(["mean", "min", "max"])
        seen: dict[str, int] = {}  # models drawn so far per family: one colour per family, a marker per model
        for model, curve in data.groupby(level="model"):
            method = get_method(model)
            k = seen[method.family] = seen.get(method.family, -1) + 1
            steps = curve.index.get_level_values("steps")
            ax.plot(steps, curve["mean"], marker=markers[k % len(markers)], ls=styles[k % len(styles)],
                    color=method.colour, label=f"{model} ({method.family})")
            ax.fill_between(steps, curve["min"], curve["max"], color=method.colour, alpha=0.15)
        drawn: dict[str, int] = {}  # the same for the horizontal lines: a dash pattern per method in a family
        for row in lines[lines["dataset"] == dataset].itertuples():
            family = get_method(row.method).family
            k = drawn[family] = drawn.get(family, -1) + 1
            ax.axhline(row.test_rmse, color=get_method(row.method).colour, ls=[":", "--", "-."][k % 3], lw=1.2,
                       label=f"{row.method} (no training)")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("training steps (batches of 8 patches, log scale)")
        ax.set_ylabel("test RMSE (reflectance)")
        ax.set_title(dataset)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle("Test RMSE against training budget, quick tier (horizontal lines: methods that do not train)")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")


def main() -> None:
    from stfusion.paths import Workspace, find_root
    from stfusion.pipeline.params import load_params

    params = load_params(build_models=False)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=params["methods"]["models"])
    parser.add_argument("--datasets", nargs="+", default=params["datasets"])
    parser.add_argument("--multipliers", nargs="+", type=float, default=[1, 4, 16])
    parser.add_argument("--seeds", nargs="+", type=int, default=[params["seed"]])
    parser.add_argument("--hours", type=float, default=2.0, help="start no new run after this many hours")
    parser.add_argument("--threads", type=int, default=params["train"]["threads"],
                        help="CPU threads (default: train.threads, as the study; then 1x reproduces its scores)")
    parser.add_argument("--out", default="docs/learning_curves")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="change a quick-tier setting of every run, e.g. arch.channels=[16,32,64] lr=0.003")
    parser.add_argument("--retrain", action="store_true", help="train 1x runs of the study's seeds again")
    args = parser.parse_args()
    overrides = parse_overrides(args.set)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    root, out = find_root(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "runs.csv"
    runs = read_runs(table)
    done = set(zip(runs["dataset"], runs["model"], runs["seed"], runs["multiplier"]))
    # cheapest budgets first, so a time limit leaves whole curves' low ends rather than one long run
    todo = [(d, m, s, k) for k in sorted(args.multipliers) for d in args.datasets for m in args.models
            for s in args.seeds if (d, m, s, k) not in done]
    start = time.monotonic()
    for dataset, model, seed, multiplier in todo:
        if time.monotonic() - start > args.hours * 3600:
            print(f"stopping: {args.hours} h used, {len(todo)} runs were to do; rerun to continue")
            break
        reuse = multiplier == 1 and seed in params["seeds"] and not overrides and not args.retrain
        row = study_row(dataset, model, seed, root, Workspace(root)) if reuse else None
        row = row or train_and_score(dataset, model, seed, multiplier, Workspace(root), overrides)
        print(f"{dataset} {model} seed {seed} ×{multiplier:g}: {row['steps']} steps, "
              f"{row['train_seconds']:.0f} s, test RMSE {row['test_rmse']:.5f} ({row['source']})", flush=True)
        runs = append_run(table, row)
    from stfusion.io import atomic_path, write_text

    lines = baselines(root)
    text = summary(runs, lines).reset_index().to_markdown(index=False, floatfmt=".5f")
    write_text(out / "learning_curves.md", f"{HEADER}\n{text}\n\n![learning curves](learning_curves.png)\n")
    with atomic_path(out / "learning_curves.png") as tmp:
        figure(runs, lines, tmp)
    print(text)


if __name__ == "__main__":
    main()
