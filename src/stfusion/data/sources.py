"""The download stage's entry point: synthetic datasets are generated, real ones downloaded, sites read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from stfusion.data.datasets import get_dataset
from stfusion.data.manifest import Manifest
from stfusion.io import atomic_dir


def acquire(dataset: str, folder: str | os.PathLike, *, raw_dir: str | None = None,
            scene: dict[str, Any] | None = None) -> Manifest:
    """Make ``folder`` hold ``dataset``'s raw files and manifest.

    Synthetic datasets are generated from ``scene`` (overrides of the generator's defaults).
    Real datasets are taken from ``raw_dir`` when given (files you downloaded yourself), or
    downloaded from the CSIRO Data Access Portal. A site is read from its folder and aligned to its
    fine grid (stfusion.data.site).
    """
    spec = get_dataset(dataset)
    if spec.kind == "site":
        from stfusion.data.site import ingest_site

        return ingest_site(dataset, spec.folder, folder)
    if spec.synthetic:
        from stfusion.data.synthetic import generate_dataset, synthetic_config  # each kind imports its own

        return generate_dataset(dataset, Path(folder), synthetic_config(dataset, scene or {}))
    from stfusion.data.real import download

    # Downloads go to data/downloads/<dataset>, outside the stage's DVC output (which DVC deletes
    # before each run), so an interrupted download resumes instead of starting over.
    folder = Path(folder)
    manifest = download(dataset, folder.parent.parent / "downloads" / dataset, raw_dir=raw_dir)
    with atomic_dir(folder) as tmp:
        manifest.relocated(tmp).save()
    return Manifest.load(folder)
