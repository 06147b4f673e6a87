"""The preprocess stage: verified raw files -> datacube + split manifest, written together."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import xarray as xr

from stfusion.data.datacube import build_cube, save_cube
from stfusion.data.manifest import Manifest
from stfusion.data.splits import Splits, make_splits
from stfusion.io import atomic_dir


def preprocess_dataset(raw_folder: str | os.PathLike, out_folder: str | os.PathLike,
                       split_settings: dict[str, Any] | None = None) -> tuple[xr.Dataset, Splits]:
    """Verify the manifest, build the cube and the splits, and write both atomically.

    Everything is checked before anything is written: a bad file or split setting leaves
    ``out_folder`` as it was.
    """
    manifest = Manifest.load(raw_folder)
    manifest.verify()
    splits = make_splits(manifest.dataset, manifest.date_list(), **(split_settings or {}),
                         key=f"preprocess.splits.{manifest.dataset}")
    cube = build_cube(manifest)
    with atomic_dir(out_folder) as tmp:
        save_cube(cube, Path(tmp) / "cube.nc")
        splits.save(Path(tmp) / "splits.json")
    return cube, splits
