"""Exported weights: the trained generator (``model.pt``) and the feature autoencoder.

An exported file is a plain dict of tensors and JSON-like values, so it loads with
``torch.load(weights_only=True)`` (no pickled code runs). It names its model and carries the
architecture it was built with; loading checks both and loads the state strictly, so a file of
another model, or of the same model at another width, is a clear error, never a silent partial
load (the public EDCSTFN code loaded nothing and trained against a random "feature" network).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from stfusion.errors import InputError
from stfusion.io import atomic_path
from stfusion.methods.models import AUTOENCODER, build_autoencoder, build_model
from stfusion.methods.models.standardize import Standardized

FORMAT = "stfusion-weights-1"


def export_weights(path: str | os.PathLike, name: str, model: torch.nn.Module, arch: dict[str, Any],
                   standardize: dict[str, list[float]] | None = None, **metadata: Any) -> Path:
    """Write ``model``'s weights with its name, architecture and standardisation, atomically."""
    payload = {"format": FORMAT, "model": name, "arch": dict(arch), "standardize": standardize, "metadata": metadata,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: torch names the archive after a
        torch.save(payload, f)  # path's (random) name, a file object's always the same: the same bytes each run
    return Path(path)


def read_weights(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: weights file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not our file"
        raise InputError(f"{path}: not a weights file stfusion can read safely ({_load_error(err)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path}: not an stfusion weights file (expected format {FORMAT!r})")
    return payload


def _load_error(err: Exception) -> str:
    """The first line of torch's explanation: for a pickle with code it runs to a page of advice."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def load_model(path: str | os.PathLike, expected: str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model stored at ``path`` (checking it is ``expected``) and load it strictly."""
    payload = read_weights(path)
    name = payload["model"]
    if expected is not None and name != expected:
        raise InputError(f"{path}: holds weights of {name!r}, not of {expected!r}")
    model = build_autoencoder(payload["arch"]) if name == AUTOENCODER else build_model(name, payload["arch"])
    if payload.get("standardize"):
        model = Standardized(model, payload["standardize"]["mean"], payload["standardize"]["std"])
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as err:
        raise InputError(f"{path}: weights do not fit {name} with arch {payload['arch']}: {err}") from None
    return model.eval(), payload


def load_feature_encoder(path: str | os.PathLike) -> torch.nn.Module:
    """The frozen feature autoencoder whose ``encode`` the EDCSTFN and GAN-STFM losses use."""
    model, _ = load_model(path, expected=AUTOENCODER)
    return model.requires_grad_(False)
