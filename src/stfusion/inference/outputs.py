"""Where ``stfusion fuse`` may write, checked before any computation: nothing a user gave is ever replaced.

An output may not be any input (the same path, or the same file through a link), an existing output is
replaced only when asked (``--overwrite``), and the path must be a GeoTIFF name in a writable folder, so
that a long fusion does not end in an error it could have given at the start.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from stfusion.errors import ConfigError, InputError

GEOTIFF_SUFFIXES = (".tif", ".tiff")

PREDICTION_TAGS = {
    "prediction": {"content": "predicted surface reflectance", "units": "reflectance (unitless)"},
    "uncertainty": {"content": "per-pixel standard deviation of the method's samples", "units": "reflectance (unitless)"},
}
"""Tags of the files a prediction writes: GIS users see what a band holds."""


def fallback_tags(count: int) -> dict[str, str]:
    """The prediction's tag of how many pixels hold the fallback value (F1 + (C2 - C1)), not the method's own."""
    return {"fallback_pixels": str(count)}


def std_path(out: str | os.PathLike) -> Path:
    """Where the per-pixel standard deviation of a stochastic model's samples goes: ``<out>_std.tif``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_std{out.suffix or '.tif'}")


def same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file: equal resolved paths, or one inode (hard or symbolic links)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return a.resolve() == b.resolve()


def check_folder(folder: Path, key: str) -> None:
    """Files can be written in ``folder``: it is a writable folder, or the first part of it that exists is
    (the rest is created on writing)."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key}: {existing} is a file, so the folder {folder} cannot be made")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: the folder {existing} is not writable")


def check_output(out: str | os.PathLike, inputs: Iterable[Path], *, overwrite: bool, key: str = "--out") -> Path:
    """``out`` as a Path once it and its ``_std.tif`` side file are safe to write (module docstring)."""
    if not str(out).strip():
        raise ConfigError(f"{key}: empty; expected the path of a GeoTIFF to write, such as prediction.tif")
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"{key}: {out} is a folder; expected the path of a GeoTIFF file inside it")
    if out.suffix.lower() not in GEOTIFF_SUFFIXES:
        raise ConfigError(f"{key}: {out} does not end in .tif or .tiff; the prediction is a GeoTIFF")
    check_folder(out.parent, key)
    inputs = [Path(p) for p in inputs]
    for path in (out, std_path(out)):
        source = next((p for p in inputs if same_file(path, p)), None)
        if source is not None:
            raise InputError(f"{key}: {path} is the input {source}; choose another output path (nothing was written)")
        if path.exists() and not overwrite:
            raise InputError(f"{key}: {path} exists; pass --overwrite to replace it, or choose another path")
    return out


def remove_stale_std(out: Path, layers: Iterable[str]) -> Path | None:
    """After ``--overwrite``: an earlier run's ``_std.tif`` that the new prediction has no match for is removed,
    so the folder never pairs a prediction with another method's uncertainty. Returns what was removed."""
    std = std_path(out)
    if "uncertainty" in layers or not std.exists():
        return None
    std.unlink()
    return std
