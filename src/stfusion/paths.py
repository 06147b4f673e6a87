"""Where things live. Every path in the project is resolved from here.

Two roots. The *study root* holds a study's dvc.yaml, params.yaml, data/ and reports/: the project
root for the default study, ``studies/<profile>/`` for another profile. The *code root* holds
notebooks/ and src/: the project root always. JupyterLab and nbval start kernels in ``notebooks/``,
papermill under DVC in the study root, and the end-to-end test runs in a temporary copy of the
repository; so both are found from the working directory, and ``STFUSION_ROOT`` names the code
root explicitly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def find_root(start: Path | None = None) -> Path:
    """The study root: the nearest ancestor of the working directory with dvc.yaml and params.yaml."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file() and (folder / "params.yaml").is_file():
            return folder
    return code_root()


def code_root() -> Path:
    """The folder holding notebooks/ and src/stfusion: ``$STFUSION_ROOT``, else the nearest such ancestor
    of the working directory, else the checkout this package was installed from."""
    if os.environ.get("STFUSION_ROOT"):
        return Path(os.environ["STFUSION_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "notebooks").is_dir() and (folder / "src" / "stfusion").is_dir():
            return folder
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Workspace:
    """The folder layout of one study. The DVC pipeline uses the project root; notebooks opened
    by hand default to ``scratch/`` so that exploring never touches DVC-tracked outputs."""

    root: Path

    @classmethod
    def resolve(cls, workspace: str | os.PathLike | None) -> "Workspace":
        """``None`` means the scratch workspace; a relative path is taken from the project root."""
        root = find_root()
        if workspace is None:  # notebooks opened by hand: the project's scratch folder
            return cls(code_root() / "scratch")
        path = Path(workspace)
        return cls((path if path.is_absolute() else root / path).resolve())

    def raw(self, dataset: str) -> Path:
        return self.root / "data" / "raw" / dataset

    def processed(self, dataset: str) -> Path:
        return self.root / "data" / "processed" / dataset

    def cube(self, dataset: str) -> Path:
        return self.processed(dataset) / "cube.nc"

    def splits(self, dataset: str) -> Path:
        return self.processed(dataset) / "splits.json"

    def predictions(self, dataset: str, method: str, seed: int | None = None) -> Path:
        """A method's prediction folder; a deep model has one per training seed (``seed-<seed>``)."""
        folder = self.root / "data" / "predictions" / dataset / method
        return folder if seed is None else folder / f"seed-{seed}"

    def ensembles(self, dataset: str) -> Path:
        """The seed ensembles of every deep model (``<model>-ensemble/``), written by the evaluate stage."""
        return self.root / "data" / "ensembles" / dataset

    def models(self, dataset: str) -> Path:
        """The trained models exported with their cards (``<model>/seed-<seed>.safetensors``), by the evaluate stage."""
        return self.root / "data" / "models" / dataset

    def autoencoder(self, dataset: str) -> Path:
        """The feature autoencoder's folder (``autoencoder.pt``, history, run.json)."""
        return self.root / "data" / "autoencoders" / dataset

    def checkpoints(self, dataset: str, name: str, seed: int | None = None) -> Path:
        """Resume state of a training run in progress (removed when the run finishes)."""
        folder = self.root / "data" / "checkpoints" / dataset / name
        return folder if seed is None else folder / f"seed-{seed}"

    def ablation(self, dataset: str) -> Path:
        return self.root / "data" / "ablation" / dataset

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def tables(self) -> Path:
        return self.reports / "tables"

    @property
    def figures(self) -> Path:
        return self.reports / "figures"

    @property
    def metrics(self) -> Path:
        return self.reports / "metrics"

    def robustness(self, dataset: str) -> Path:
        return self.reports / "robustness" / dataset
