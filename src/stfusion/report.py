"""Tables of the study in Markdown (and, later, LaTeX), each labelled with its data and profile."""

from __future__ import annotations

import pandas as pd

REAL_NAMES = {"cia": "CIA", "lgc": "LGC"}


def study_label(dataset: str, profile: str) -> str:
    """What a table's numbers come from, e.g. 'synthetic cia-sim, default profile: ...'."""
    if dataset.endswith("-sim"):
        return f"synthetic {dataset}, {profile} profile: not comparable to the published numbers"
    return f"real {REAL_NAMES.get(dataset, dataset)}, {profile} profile"


def rmse_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Methods as rows, test target dates as columns (global RMSE), plus their mean."""
    overall = scores[(scores["band"] == "all") & (scores["metric"] == "rmse")]
    table = overall.pivot_table(index=["family", "method"], columns="target_date", values="value", aggfunc="mean")
    table["mean"] = table.mean(axis=1)
    return table.sort_values("mean")


def band_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Methods as rows, bands as columns: RMSE averaged over test pairs."""
    per_band = scores[(scores["band"] != "all") & (scores["metric"] == "rmse")]
    table = per_band.pivot_table(index="method", columns="band", values="value", aggfunc="mean", sort=False)
    return table


def markdown(table: pd.DataFrame, *, title: str, label: str, digits: int = 4) -> str:
    """A titled Markdown table with its provenance label underneath."""
    body = table.reset_index().to_markdown(index=False, floatfmt=f".{digits}f")
    return f"### {title}\n\n{body}\n\n_{label}._\n"
