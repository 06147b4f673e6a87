"""The dataset registry: one spec per dataset the study knows.

Every other module asks this registry what a dataset is (synthetic, real or a user's site, its display
name, the papers' dataset it stands for, how it is acquired) instead of testing its name. Users' sites
come from params.yaml's ``download.sites``; :func:`use_sites` registers them for this process and, through
the environment, for the notebook kernels and training processes it starts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from stfusion import BANDS
from stfusion.errors import ConfigError

PAPER_NAMES = {"cia": "CIA", "lgc": "LGC"}
"""Display names of the papers' two benchmark sites."""


@dataclass(frozen=True)
class Dataset:
    name: str  # as in params.yaml, folder names and tables
    kind: str  # "synthetic" (generated here), "real" (downloaded) or "site" (a user's folder)
    title: str  # display name
    paper: str | None  # the papers' dataset it stands for ("cia" or "lgc"; None for sites): its published values are compared
    acquisition: str  # how the download stage gets its raw files
    bands: tuple[str, ...] = BANDS
    fine_metres: float = 25.0  # fine pixel size; the coarse/fine ratio itself is read from the data
    coarse_metres: float = 500.0
    folder: str | None = None  # a site's folder (absolute)

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
        if self.kind == "site":
            return f"site {self.name}, {profile} profile"
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


SITES_VARIABLE = "STFUSION_SITES"
"""The environment variable that carries the registered sites ({name: folder}, JSON) to child processes."""


def site_dataset(name: str, folder: str) -> Dataset:
    return Dataset(name, "site", name, None, f"read from the site folder {folder} (its site.yaml)", folder=folder)


def use_sites(sites: dict[str, str]) -> None:
    """Register users' sites ({name: absolute folder}) here and for every process started from now on."""
    clash = sorted(set(sites) & set(DATASETS))
    if clash:
        raise ConfigError(f"download.sites.{clash[0]}: a site cannot take the name of a built-in dataset {list(DATASETS)}")
    os.environ[SITES_VARIABLE] = json.dumps(dict(sorted(sites.items())))


def _all() -> dict[str, Dataset]:
    sites = json.loads(os.environ.get(SITES_VARIABLE) or "{}")
    return {**DATASETS, **{name: site_dataset(name, folder) for name, folder in sites.items()}}


def get_dataset(name: object, *, key: str = "dataset") -> Dataset:
    """The spec of dataset ``name``; an unknown name is a ConfigError naming ``key``."""
    known = _all()
    if name not in known:
        raise ConfigError(f"{key}: unknown dataset {name!r}; known datasets are {list(known)} "
                          "(your own sites go under download.sites)")
    return known[name]


def dataset_names(kind: str | None = None) -> tuple[str, ...]:
    """Names of the known datasets, of one ``kind`` ("synthetic", "real" or "site") when given."""
    return tuple(name for name, d in _all().items() if kind is None or d.kind == kind)
