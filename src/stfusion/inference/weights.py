"""Weights files: the trained generator (``model.pt``), the feature autoencoder, and the exported models.

Every file holds the same payload: its model's name, the architecture it was built with, the input
standardisation, its card (``metadata``: what a user needs to trust it, docs/sharing.md) and the tensors.
The train stage writes ``model.pt``, a plain dict that loads with ``torch.load(weights_only=True)`` (no
pickled code runs); the evaluate stage exports each trained model, its test scores added to the card, as
``.safetensors``, whose card is a JSON header that any tool reads without loading the tensors (and there is
no pickle at all). Loading checks the model's name and loads the state strictly, so a file of another model,
or of the same model at another width, is a clear error, never a silent partial load (the public EDCSTFN
code loaded nothing and trained against a random "feature" network).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from stfusion.errors import InputError
from stfusion.io import atomic_path
from stfusion.methods.models import AUTOENCODER, build_autoencoder, build_model
from stfusion.methods.models.standardize import Standardized

FORMAT = "stfusion-weights-1"
SAFETENSORS = ".safetensors"
_HEADER_KEY = "stfusion"  # the safetensors header entry holding the payload less its tensors, as JSON


def export_weights(path: str | os.PathLike, name: str, model: torch.nn.Module, arch: dict[str, Any],
                   standardize: dict[str, list[float]] | None = None, **metadata: Any) -> Path:
    """Write ``model``'s weights with its name, architecture and standardisation, atomically."""
    payload = {"format": FORMAT, "model": name, "arch": dict(arch), "standardize": standardize, "metadata": metadata,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: torch names the archive after a
        torch.save(payload, f)  # path's (random) name, a file object's always the same: the same bytes each run
    return Path(path)


def read_weights(path: str | os.PathLike, *, tensors: bool = True) -> dict[str, Any]:
    """The payload of a weights file (``tensors=False``: without ``state_dict``, read from the header alone for a
    ``.safetensors`` file)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: weights file not found")
    payload = _read_safetensors(path, tensors) if path.suffix == SAFETENSORS else _read_torch(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path}: not an stfusion weights file (expected format {FORMAT!r})")
    if not tensors:
        payload.pop("state_dict", None)
    return payload


def read_card(path: str | os.PathLike) -> dict[str, Any]:
    """What a weights file says about itself (model, architecture, card), without its tensors."""
    payload = read_weights(path, tensors=False)
    return {"format": payload["format"], "model": payload["model"], "arch": payload["arch"],
            "card": payload.get("metadata") or {}}


def _read_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not our file"
        raise InputError(f"{path}: not a weights file stfusion can read safely ({_load_error(err)})") from None


def _read_safetensors(path: Path, tensors: bool) -> Any:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
            payload = json.loads(header[_HEADER_KEY]) if _HEADER_KEY in header else None
            if isinstance(payload, dict) and tensors:
                payload["state_dict"] = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable safetensors file ({_load_error(err)})") from None
    return payload


def write_safetensors(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """``payload`` (as :func:`read_weights` returns it) as a ``.safetensors`` file, atomically; the same bytes
    for the same payload."""
    from safetensors.torch import save

    header = {key: value for key, value in payload.items() if key != "state_dict"}
    tensors = {key: value.contiguous() for key, value in payload["state_dict"].items()}
    data = save(tensors, metadata={_HEADER_KEY: json.dumps(header, sort_keys=True)})
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return Path(path)


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
