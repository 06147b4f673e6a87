"""The study's report: provenance labels, Markdown tables, and ``reports/README.md``.

The report is plain Markdown that renders on any Git host: it embeds the tables the evaluate stage
wrote and links the PNG figures by relative path, with a short paragraph on how to read each.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from stfusion.data.datasets import get_dataset
from stfusion.evaluation.significance import REFERENCE
from stfusion.io import write_text
from stfusion.provenance import git_commit
from stfusion.reporting.plots import FIGURE_GUIDE


def _names(methods: list[str]) -> str:
    quoted = [f"`{m}`" for m in methods]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _against_reference(differences: pd.DataFrame, dataset: str, region: str) -> str:
    """Which methods the bootstrap puts above, below or level with temporal-difference in ``region``."""
    rows = differences[(differences["dataset"] == dataset) & (differences["region"] == region)
                       & (differences["comparison"] == f"vs {REFERENCE}")].sort_values("difference")
    if rows.empty:
        return ""
    level = f"{rows['level'].iloc[0]:.0%}"
    better = rows[rows["significant"] & (rows["difference"] < 0)]["method"].tolist()
    worse = rows[rows["significant"] & (rows["difference"] > 0)]["method"].tolist()
    parts = []
    if better:
        parts.append(f"{_names(better)} {'is' if len(better) == 1 else 'are'} better than `{REFERENCE}` "
                     f"({level} CI of the RMSE difference below 0)")
    if worse:  # the reference is named in the first clause, whichever it is
        than = "" if parts else f" than `{REFERENCE}` ({level} CI of the RMSE difference above 0)"
        parts.append(f"{_names(worse)} {'is' if len(worse) == 1 else 'are'} worse{than or ' (CI above 0)'}")
    level_with = len(rows) - len(better) - len(worse)
    if level_with:
        parts.append("the rest are indistinguishable from it" if parts
                     else f"every method is indistinguishable from `{REFERENCE}`")
    elif not parts:
        return ""
    return "; ".join(parts)


def _headline(differences: pd.DataFrame, ranking: pd.DataFrame, dataset: str) -> str:
    """The dataset's headline, written from the bootstrap intervals, not from the means."""
    text = f"**{dataset}**: " + (_against_reference(differences, dataset, "all") or "no comparison was made") + "."
    changed = _against_reference(differences, dataset, "changed")
    if changed:
        text += f" Over changed pixels: {changed}."
    top = ranking[(ranking["dataset"] == dataset) & (ranking["region"] == "all") & (ranking["rank"] == 1)]
    if not top.empty:
        text += f" Rank 1 (no method significantly better): {_names(top.sort_values('rmse')['method'].tolist())}."
    return text


CALIBRATED = 0.02
"""A coverage within this of the nominal 0.90 is reported as calibrated, not as over- or under-confident."""


def _verdict(coverage: float) -> str:
    if abs(coverage - 0.9) <= CALIBRATED:
        return f"calibrated (within {CALIBRATED:.2f} of 0.90)"
    return "over-confident" if coverage < 0.9 else "under-confident"


def _calibration(coverage: pd.DataFrame, dataset: str) -> list[str]:
    """One line per method with an uncertainty map: its measured coverage of a nominal 90 % interval."""
    rows = coverage[(coverage["dataset"] == dataset) & (coverage["region"] != "unchanged")]
    lines = []
    for method, group in rows.groupby("method", sort=True):
        share = group.groupby("region")["coverage_90"].mean()
        verdict = _verdict(share.get("all", float("nan")))
        runs = f" (mean over {group['seed'].nunique()} seeds)" if group["seed"].notna().any() else ""
        changed = share.get("changed", float("nan"))
        changed = "" if pd.isna(changed) else f" and {changed:.2f} over changed pixels"  # none: no change mask
        lines.append(f"- **{dataset}**, `{method}`: its nominal 90 % interval covers {share.get('all', float('nan')):.2f} "
                     f"of all band-values{changed}{runs}: {verdict}.")
    return lines


def _section_figures(figures: Path, dataset: str, guide: dict[str, str]) -> list[str]:
    lines = []
    for kind, how_to_read in guide.items():
        png = figures / "png" / f"{kind}_{dataset}.png"
        if png.is_file():
            lines += [f"#### {kind.capitalize()} ({dataset})", "", f"![{kind} {dataset}](figures/png/{png.name})", "",
                      how_to_read, ""]
    return lines


def _section_robustness(workspace, dataset: str) -> list[str]:
    """The robustness stage's findings, table and figure for ``dataset`` (nothing if it did not run)."""
    folder = workspace.robustness(dataset)
    if not (folder / "summary.md").is_file():
        return []
    return [(folder / "summary.md").read_text(), f"![robustness {dataset}](robustness/{dataset}/robustness.png)", "",
            "RMSE (mean over the test pairs) against each degradation's level, one line per method; colour = "
            f"family. Every number: [robustness/{dataset}/robustness.csv](robustness/{dataset}/robustness.csv).", ""]


def build_report(workspace, datasets: list[str], methods: list[str], profile: str, params: dict) -> str:
    """The text of ``reports/README.md`` from the tables, metrics and figures already written."""
    tables, root = workspace.tables, workspace.root
    differences, ranking = pd.read_csv(tables / "differences.csv"), pd.read_csv(tables / "ranking.csv")
    coverage = pd.read_csv(tables / "coverage.csv")
    runs = pd.read_csv(tables / "runs.csv")
    conventions = json.loads((tables / "conventions.json").read_text())
    lines = [
        "# stfusion: study report", "",
        "_Generated by `dvc repro` (stage `report`); do not edit by hand._", "",
        f"- **Profile**: `{profile}`; **datasets**: " + "; ".join(get_dataset(d).label(profile) for d in datasets),
        f"- **Methods**: {', '.join(f'`{m}`' for m in methods)}",
        f"- **Git commit**: `{git_commit(root)}`",
        "- **Metrics**: reflectance in [0, 1], valid pixels only; SSIM Gaussian 11×11, σ 1.5; SAM per pixel "
        "in radians; ERGAS with h/l = "
        + ", ".join(f"{d} 1/{c['ratio']}" for d, c in conventions.items())
        + "; full conventions in [tables/conventions.json](tables/conventions.json).", "",
        "## Headline", "",
        "Written from the paired bootstrap intervals (test pairs, seeds and spatial blocks resampled; "
        "[docs/metrics.md](../docs/metrics.md)), not from the means.", "",
        *[f"- {_headline(differences, ranking, d)}" for d in datasets], "",
        *(["### Calibration of the uncertainty maps", "",
           "Coverage of the interval prediction ± 1.645 × spread (nominal 90 %): below 0.90 the spread is too "
           "small (over-confident), above it too large (under-confident); within "
           f"{CALIBRATED:.2f} of 0.90 it is reported as calibrated.", "",
           *[line for d in datasets for line in _calibration(coverage, d)], ""] if not coverage.empty else []),
    ]
    for dataset in datasets:
        lines += [f"## {dataset}", "", (tables / f"metrics_{dataset}.md").read_text(),
                  (tables / f"significance_{dataset}.md").read_text(),
                  (tables / f"ablation_{dataset}.md").read_text(),
                  f"Change mask: {conventions[dataset]['change_mask']}. Test pairs (reference → target): "
                  + ", ".join(f"{r} → {t}" for r, t in conventions[dataset]["test_pairs"]) + ".", "",
                  "### Figures", "", *_section_figures(workspace.figures, dataset, FIGURE_GUIDE),
                  *_section_robustness(workspace, dataset)]
    lines += ["## Cost of each method", "",
              "Learnable parameters, training seconds and the median full-scene inference seconds, measured "
              "on the machine that ran the study.", "", runs.fillna("").to_markdown(index=False, floatfmt=".3g"), ""]
    lines += ["## The papers' tables, rebuilt", "",
              "Published values (transcribed in `src/stfusion/resources/published_results.csv`) next to this "
              "study's; LaTeX versions sit beside each Markdown file in [tables/paper/](tables/paper/).", ""]
    lines += [path.read_text() for path in sorted((tables / "paper").glob("*.md"))]
    lines += ["## Parameters", "", "From `params.yaml`:", "", "```yaml",
              yaml.safe_dump(params, sort_keys=False).strip(), "```", ""]
    return "\n".join(lines)


def write_report(workspace, datasets: list[str], methods: list[str], profile: str, params: dict) -> Path:
    """Write ``reports/README.md`` atomically and return its path."""
    return write_text(workspace.reports / "README.md", build_report(workspace, datasets, methods, profile, params))
