"""The dataset registry: one spec per dataset the study knows.

Every other module asks this registry what a dataset is (synthetic or real, its display name, the
papers' dataset it stands for, how it is acquired) instead of testing its name.
"""

from __future__ import annotations

from dataclasses import dataclass

from stfusion import BANDS
from stfusion.errors import ConfigError

PAPER_NAMES = {"cia": "CIA", "lgc": "LGC"}
"""Display names of the papers' two benchmark sites."""


@dataclass(frozen=True)
class Dataset:
    name: str  # as in params.yaml, folder names and tables
    kind: str  # "synthetic" (generated here) or "real" (downloaded)
    title: str  # display name
    paper: str  # the papers' dataset it stands for ("cia" or "lgc"): its published values are compared
    acquisition: str  # how the download stage gets its raw files
    bands: tuple[str, ...] = BANDS
    fine_metres: float = 25.0  # fine pixel size; the coarse/fine ratio itself is read from the data
    coarse_metres: float = 500.0

    @property
    def ratio(self) -> int:
        """The coarse over fine pixel size of the real sensors (the synthetic generator takes its own)."""
        return round(self.coarse_metres / self.fine_metres)

    @property
    def synthetic(self) -> bool:
        return self.kind == "synthetic"

    def label(self, profile: str) -> str:
        """What a table's numbers come from, e.g. 'synthetic cia-sim, default profile: ...'."""
        if self.synthetic:
            return f"synthetic {self.name}, {profile} profile: not comparable to the published numbers"
        return f"real {self.title}, {profile} profile"


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("cia-sim", "synthetic", "CIA-like synthetic", "cia",
                "generated (stfusion.data.synthetic, CIA template: irrigated rice and cereals, 2001-2002)"),
        Dataset("lgc-sim", "synthetic", "LGC-like synthetic", "lgc",
                "generated (stfusion.data.synthetic, LGC template: floodplain with a flood, 2004-2005)"),
        Dataset("cia", "real", "CIA", "cia", "downloaded from the CSIRO Data Access Portal (doi:10.4225/08/5111AC0BF1229)"),
        Dataset("lgc", "real", "LGC", "lgc", "downloaded from the CSIRO Data Access Portal (doi:10.4225/08/5111AD2B7FEE6)"),
    )
}


def get_dataset(name: object, *, key: str = "dataset") -> Dataset:
    """The spec of dataset ``name``; an unknown name is a ConfigError naming ``key``."""
    if name not in DATASETS:
        raise ConfigError(f"{key}: unknown dataset {name!r}; known datasets are {list(DATASETS)}")
    return DATASETS[name]


def dataset_names(kind: str | None = None) -> tuple[str, ...]:
    """Names of the known datasets, of one ``kind`` ("synthetic" or "real") when given."""
    return tuple(name for name, d in DATASETS.items() if kind is None or d.kind == kind)
