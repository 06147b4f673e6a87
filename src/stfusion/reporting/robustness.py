"""The robustness stage's outputs: the tidy table, its summary, the findings and one figure per dataset.

``reports/robustness/<dataset>/`` holds ``robustness.csv`` (every method, degradation, level and test
pair), ``summary.csv`` and ``summary.md`` (RMSE with no degradation and at the worst level, and the
measured findings) and ``robustness.png`` (RMSE against each degradation, one line per method).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from stfusion.evaluation.robustness import DEGRADATIONS, comparable, findings, summary
from stfusion.io import atomic_dir, write_text
from stfusion.reporting.styles import method_styles, save_png  # sets the headless backend first


def robustness_figure(table: pd.DataFrame, dataset: str, label: str) -> plt.Figure:
    """RMSE (mean over the test pairs present at every level) against each degradation's level, one panel each."""
    styles = method_styles(list(dict.fromkeys(table["method"])))
    names = [d for d in DEGRADATIONS if d in set(table["degradation"])]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = comparable(table[table["degradation"] == name])  # the same targets at every level
        means = rows.groupby(["method", "level"])["rmse"].mean().unstack("level")
        for method, style in styles.items():
            if method in means.index:
                ax.plot(means.columns, means.loc[method], color=style.colour, marker=style.marker, label=method)
        spec = DEGRADATIONS[name]
        ax.set(title=spec.label, xlabel=f"{name} ({spec.unit})", ylabel="RMSE (reflectance, 0-1)\nlower is better ↓")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"{dataset}: RMSE of every method as one input is degraded (mean over test pairs)\n{label}")
    fig.tight_layout()
    return fig


def summary_markdown(summary_table: pd.DataFrame, dataset: str, label: str) -> str:
    """The findings, then the summary table, as Markdown."""
    shown = summary_table.drop(columns=["dataset"]).rename(columns={"worst_level": "worst level"})
    lines = [f"### Robustness, {dataset}", "",
             "Deep models trained once on the default data (the study's seed), then applied to degraded inputs. "
             "RMSE over the pixels valid in the truth that the method predicted; `predicted_worst`: their share "
             "at the worst level; a method that failed at some level has no change.", "",
             *[f"- {line}" for line in findings(summary_table)], "",
             shown.to_markdown(index=False, floatfmt=".4g"), "", f"_{label}._", ""]
    return "\n".join(lines)


def write_robustness(table: pd.DataFrame, out_dir: str | os.PathLike, *, dataset: str, label: str,
                     dpi: int = 150) -> Path:
    """Write the dataset's robustness outputs into ``out_dir``, replacing it as a whole, atomically."""
    summary_table = summary(table)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        tmp = Path(tmp)
        table.to_csv(tmp / "robustness.csv", index=False, float_format="%.6g")
        summary_table.to_csv(tmp / "summary.csv", index=False, float_format="%.6g")
        write_text(tmp / "summary.md", summary_markdown(summary_table, dataset, label))
        figure = robustness_figure(table, dataset, label)
        save_png(figure, tmp / "robustness.png", dpi)
        plt.close(figure)
    return out_dir

