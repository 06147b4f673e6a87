"""A deep model the train stage already trained, loaded back from its prediction folder as a method."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from stfusion.errors import InputError
from stfusion.inference.sampling import deep_predictor
from stfusion.inference.weights import load_model
from stfusion.methods.registry import Method, get_method
from stfusion.paths import Workspace


def trained_method(name: str, folder: str | os.PathLike, *, seed: int, device: str | None = None) -> Method:
    """Method ``name`` predicting with ``folder/model.pt``: the tile and number of samples it was trained
    with, and the noise of ``seed`` for a sampling model, so it predicts as the train stage did."""
    path = Path(folder) / "model.pt"
    if not path.is_file():
        raise InputError(f"{path}: trained weights not found; run the train stage of {name} first")
    model, payload = load_model(path, expected=name)
    metadata = payload.get("metadata") or {}
    samples = (metadata.get("uncertainty_samples") or 0) if model.traits.stochastic else 0
    predictor = deep_predictor(model, tile=metadata["tile"], device=device, samples=samples, seed=seed)
    return dataclasses.replace(get_method(name), predictor=predictor)


def study_method(name: str, workspace: Workspace, dataset: str, *, seed: int, device: str | None = None) -> Method:
    """A baseline as registered, or a deep model as the train stage left it for ``dataset`` and ``seed``."""
    method = get_method(name)
    if not method.trainable:
        return method
    return trained_method(name, workspace.predictions(dataset, name, seed), seed=seed, device=device)
