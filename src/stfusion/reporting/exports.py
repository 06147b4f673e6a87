"""The study as a registry of trained models: each deep model's weights exported with a card.

The evaluate stage writes ``data/models/<dataset>/<model>/seed-<seed>.safetensors`` for every model and seed
it scored: the train stage's weights, and a card that says what a user needs to trust them without loading
the tensors (``stfusion info weights``): the training data and settings from ``model.pt``, the device, time
and code from ``run.json``, and the test scores from the evaluate stage (the study's test dates, band
``all``, region ``all``, mean over the test targets). ``dvc get`` fetches one such file (docs/sharing.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from stfusion.errors import InputError
from stfusion.inference.weights import read_weights, write_safetensors
from stfusion.io import atomic_dir
from stfusion.paths import Workspace

RUN_FIELDS = ("device", "cpu_threads", "processes", "train_seconds", "best_val_rmse", "code")
"""What the card takes from the train stage's run.json: measured, so not in model.pt (whose bytes a rerun keeps)."""


def exported_weights(workspace: Workspace, dataset: str, model: str, seed: int) -> Path:
    return workspace.models(dataset) / _name(model, seed)


def _name(model: str, seed: int) -> Path:
    """An exported file's path in its dataset's folder."""
    return Path(model) / f"seed-{seed}.safetensors"


def mean_test_scores(scores: pd.DataFrame, dataset: str, model: str, seed: int) -> dict[str, Any]:
    """The model's scores over the whole test image (band ``all``, region ``all``), mean over its test targets."""
    rows = scores[(scores["dataset"] == dataset) & (scores["method"] == model)
                  & (pd.to_numeric(scores["seed"], errors="coerce") == seed)
                  & (scores["band"] == "all") & (scores["region"] == "all")]
    if rows.empty:
        raise InputError(f"scores of {dataset}: no test scores of {model} seed {seed}; run the evaluate stage")
    means = rows.groupby("metric")["value"].mean()
    return {"targets": sorted(rows["target_date"].astype(str).unique()),
            "mean": {metric: (None if math.isnan(value) else round(float(value), 8)) for metric, value in means.items()}}


def model_card(payload: dict[str, Any], folder: Path, scores: pd.DataFrame, dataset: str, model: str,
               seed: int) -> dict[str, Any]:
    """The exported card of the run in ``folder`` (a train stage's prediction folder), whose ``model.pt`` holds
    ``payload``."""
    run = json.loads((folder / "run.json").read_text())
    card = {"model": payload["model"], **(payload.get("metadata") or {}),
            **{field: run.get(field) for field in RUN_FIELDS}}
    card["test"] = mean_test_scores(scores, dataset, model, seed)
    return card


def export_models(workspace: Workspace, datasets: list[str], models: list[str], seeds: list[int],
                  scores: pd.DataFrame) -> list[Path]:
    """Export every ``models`` × ``seeds`` run of every dataset; each dataset's folder is replaced whole."""
    written = []
    for dataset in datasets:
        with atomic_dir(workspace.models(dataset)) as staging:
            for model in models:
                for seed in seeds:
                    folder = workspace.predictions(dataset, model, seed)
                    payload = read_weights(folder / "model.pt")
                    payload["metadata"] = model_card(payload, folder, scores, dataset, model, seed)
                    write_safetensors(Path(staging) / _name(model, seed), payload)
        written += [exported_weights(workspace, dataset, m, s) for m in models for s in seeds]
    return written


def card_text(card: dict[str, Any], path: str | Path) -> str:
    """A weights file's card as ``stfusion info weights`` prints it: one line per subject."""
    c = card["card"]
    get = lambda key, default="unknown": default if c.get(key) is None else c[key]  # noqa: E731
    bands = c.get("bands") or []
    size = c.get("pixel_size")
    lines = [
        ("file", f"{path} ({card['format']})"),
        ("model", f"{card['model']}, {get('tier')} tier; architecture {json.dumps(card['arch'], sort_keys=True)}"),
        ("data", f"{get('dataset')}: "
                 + (f"{len(bands)} bands in this order: {', '.join(bands)}" if bands else "bands unknown") + "; stored as "
                 f"reflectance x {_plain(c.get('reflectance_scale'))}; pixels {f'{_plain(size[0])} m' if size else 'unknown'}"
                 f" ({get('crs', 'no CRS')}); coarse/fine ratio {get('ratio')}"),
        ("training", f"{get('steps')} steps ({get('epochs')} epochs) of {get('batch_size')} patches of "
                     f"{get('patch_size')} px, seed {get('seed')}, on {get('device')}"
                     + (f" in {c['train_seconds']:.0f} s" if c.get("train_seconds") is not None else "")
                     + f"; dates {', '.join(c.get('train_dates') or []) or 'unknown'}"),
        ("validation", f"best RMSE {_number(c.get('best_val_rmse'))} at epoch {get('best_epoch')}; targets "
                       f"{', '.join(c.get('validation_targets') or []) or 'unknown'}"),
    ]
    test = c.get("test")
    if test:
        scores = ", ".join(f"{m} {_number(v)}" for m, v in sorted(test["mean"].items()))
        lines.append(("test", f"mean over {len(test['targets'])} targets ({', '.join(test['targets'])}): {scores}"))
    else:
        lines.append(("test", "not in this file (the train stage's model.pt; the evaluate stage exports the scores)"))
    code = c.get("code") or {}
    lines.append(("code", f"stfusion {code.get('stfusion', 'unknown')}, commit {code.get('commit', 'unknown')}"))
    lines.append(("inference", f"tile {get('tile')}" + (f", {c['uncertainty_samples']} samples"
                                                       if c.get("uncertainty_samples") else "")))
    return "\n".join(f"{key:<11} {value}" for key, value in lines)


def _number(value: Any) -> str:
    return "unknown" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _plain(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else "unknown"
