"""The papers' tables rebuilt from this study's runs, next to the published values.

Each table of ``PAPER_TABLES`` keeps the layout of the paper (MCBAM-GAN Tables 2 to 6, the
review's Tables 6 to 8): the published rows or columns come first, exactly as printed (from
``published_results.csv``), then this study's. A method or ablation variant is shown for this
study only if it was run; nothing is filled in for what was not.

Every cell is text: published values keep their printed digits, this study's are formatted with
4 decimals (seconds with 2, or 3 significant digits below 1 s); "-" means not given or not run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from stfusion.data.datasets import PAPER_NAMES, get_dataset
from stfusion.errors import ConfigError
from stfusion.io import write_text
from stfusion.reporting.published import load_published

PAPERS = {
    "mcbam-gan": "Liu et al. (2023), MCBAM-GAN, Remote Sens. 15, 1583, doi:10.3390/rs15061583",
    "review": "Lian et al. (2025), Recent Advances in Deep Learning-Based Spatiotemporal Fusion Methods "
              "for Remote Sensing Images, Sensors 25, 1093, doi:10.3390/s25041093",
}

# The MCBAM-GAN tables' metric columns, in the printed order.
COLUMNS = {"psnr": "PSNR", "sam": "SAM", "ssim": "SSIM", "ergas": "ERGAS", "cc": "CC", "rmse": "RMSE",
           "parameters_millions": "Para (M)", "seconds": "Time (S)"}
SCORE_METRICS = ["psnr", "sam", "ssim", "ergas", "cc", "rmse"]
MODULES = {"multi-scale": "Multi-Scale", "cbam": "CBAM", "aff": "AFF-Fusion", "multi-loss": "Multi-Loss"}
REVIEW_METRICS = {"rmse": "RMSE", "ssim": "SSIM", "cc": "CC", "sam": "SAM", "ergas": "ERGAS"}
REVIEW_STATISTICS = {"min": "Min", "max": "Max", "avg": "Avg"}
TICK, CROSS, MISSING = "✓", "×", "-"

MCBAM_NOTES = (
    "SAM: the paper does not state its unit (its values look like radians); this study's SAM is in radians.",
    "Time (S): this study's is the median full-scene inference time per test pair; "
    "the paper does not say what it timed.",
)
REVIEW_NOTES = (
    "Published Min/Max/Avg summarise the values the review collected from the literature; "
    "this study's summarise its test pairs. STFDiff has a single published value (a merged cell), "
    "repeated in its Min, Max and Avg rows.",
)


@dataclass(frozen=True)
class TableSpec:
    """One paper table: where it comes from, how it is laid out and which paper datasets it covers."""

    id: str
    source: str  # a key of PAPERS and a source of published_results.csv
    table: str  # e.g. "table5", as in published_results.csv
    kind: str  # "comparison", "depth", "modules", "review-stats" or "review-parameters"
    caption: str
    paper_datasets: tuple[str, ...]  # () for a table about no dataset (review Table 8)
    notes: tuple[str, ...] = ()

    @property
    def number(self) -> int:
        return int(self.table.removeprefix("table"))


PAPER_TABLES: dict[str, TableSpec] = {
    spec.id: spec
    for spec in (
        TableSpec("mcbam-gan-table2", "mcbam-gan", "table2", "depth",
                  "Quantitative results of multiscale on CIA and LGC datasets.", ("cia", "lgc"), MCBAM_NOTES),
        TableSpec("mcbam-gan-table3", "mcbam-gan", "table3", "modules",
                  "Ablation experiments on CIA dataset.", ("cia",), MCBAM_NOTES),
        TableSpec("mcbam-gan-table4", "mcbam-gan", "table4", "modules",
                  "Ablation experiments on LGC dataset (caption lost in the OCR of the paper; identified from its text).",
                  ("lgc",), MCBAM_NOTES),
        TableSpec("mcbam-gan-table5", "mcbam-gan", "table5", "comparison",
                  "Comparison of MCBAM-GAN with some of the most advanced models on the CIA dataset.", ("cia",), MCBAM_NOTES),
        TableSpec("mcbam-gan-table6", "mcbam-gan", "table6", "comparison",
                  "Comparison of MCBAM-GAN with some of the most advanced models on the LGC dataset.", ("lgc",), MCBAM_NOTES),
        TableSpec("review-table6", "review", "table6", "review-stats",
                  "Quantitative performance evaluation on the CIA dataset.", ("cia",), REVIEW_NOTES),
        TableSpec("review-table7", "review", "table7", "review-stats",
                  "Quantitative performance evaluation on the LGC dataset.", ("lgc",), REVIEW_NOTES),
        TableSpec("review-table8", "review", "table8", "review-parameters", "Parameters for each model.", ()),
    )
}


def get_spec(table_id: str) -> TableSpec:
    """Look a paper table up by id; unknown ids give a ConfigError that lists the known ones."""
    try:
        return PAPER_TABLES[table_id]
    except KeyError:
        raise ConfigError(f"unknown paper table {table_id!r}; known tables are {list(PAPER_TABLES)}") from None


def matching_datasets(spec: TableSpec, datasets: Sequence[str]) -> list[str]:
    """The study's datasets that stand for one of the table's paper datasets (all of them for Table 8)."""
    if not spec.paper_datasets:
        return list(datasets)
    return [d for d in datasets if get_dataset(d).paper in spec.paper_datasets]


def build_table(table_id: str, scores: pd.DataFrame, ablation_scores: pd.DataFrame, runs: pd.DataFrame,
                datasets: str | Sequence[str], *, published: pd.DataFrame | None = None) -> pd.DataFrame:
    """One paper table, published part first, then this study's part from the matching ``datasets``."""
    spec = get_spec(table_id)
    published = load_published() if published is None else published
    rows = published[(published["source"] == spec.source) & (published["table"] == spec.table)]
    datasets = matching_datasets(spec, [datasets] if isinstance(datasets, str) else list(datasets))
    if spec.kind == "comparison":
        return _comparison_table(rows, scores, runs, datasets)
    if spec.kind in ("depth", "modules"):
        return _ablation_table(spec.kind, rows, ablation_scores, runs, datasets)
    if spec.kind == "review-stats":
        return _review_stats_table(rows, scores, datasets)
    return _review_parameters_table(rows, scores, runs, datasets)


# --- this study's numbers -------------------------------------------------------------------------------------


def _overall(scores: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The overall scores (band ``all``, region ``all``) of one dataset: one value per test pair and metric."""
    if scores.empty:
        return scores
    return scores[(scores["dataset"] == dataset) & (scores["band"] == "all") & (scores["region"] == "all")]


def _study_methods(scores: pd.DataFrame, dataset: str, preferred: Sequence[str] = ()) -> list[str]:
    """Methods scored on ``dataset``: those of the paper first, in its order, then the others as they come."""
    found = list(dict.fromkeys(_overall(scores, dataset)["method"])) if not scores.empty else []
    rank = {name: i for i, name in enumerate(preferred)}
    return sorted(found, key=lambda name: rank.get(name, len(rank)))


def _fmt(value: float | None, metric: str) -> str:
    """Four decimals as the papers print them; seconds with two (three significant digits below 1 s,
    so a fast method does not read as 0.00); "-" for a value that does not exist."""
    if value is None or pd.isna(value):
        return MISSING
    if metric == "seconds":
        return f"{value:.2f}" if value >= 1 else f"{value:.3g}"
    return f"{value:.4f}"


def _run(runs: pd.DataFrame, dataset: str, method: str) -> pd.Series | None:
    """The run record of a method (or ablation variant) on a dataset, if there is one; over a deep model's
    seeds, the median inference time."""
    if runs.empty:
        return None
    found = runs[(runs["dataset"] == dataset) & (runs["method"] == method)]
    if found.empty:
        return None
    return found.iloc[0] if len(found) == 1 else pd.concat(
        [found.iloc[0].drop("predict_seconds_median"),
         pd.Series({"predict_seconds_median": float(found["predict_seconds_median"].median())})])


def _study_cells(scores: pd.DataFrame, runs: pd.DataFrame, dataset: str, method: str) -> dict[str, str]:
    """A method's row of the MCBAM-GAN layout: mean over test pairs per metric, Para (M), Time (S)."""
    overall = _overall(scores, dataset)
    means = overall[overall["method"] == method].groupby("metric")["value"].mean() if not overall.empty else {}
    cells = {COLUMNS[m]: _fmt(means.get(m), m) for m in SCORE_METRICS}
    run = _run(runs, dataset, method)
    parameters = None if run is None or run["parameters"] == 0 else run["parameters"] / 1e6  # "-" as the paper's STARFM
    cells["Para (M)"] = _fmt(parameters, "parameters_millions")
    cells["Time (S)"] = _fmt(None if run is None else run["predict_seconds_median"], "seconds")
    return cells


def _study_source(dataset: str, datasets: Sequence[str]) -> str:
    """'this study', naming the dataset only when two of the study's datasets stand for the same paper dataset."""
    return "this study" if len(datasets) == 1 else f"this study ({dataset})"


# --- published numbers ----------------------------------------------------------------------------------------


def _published_rows(rows: pd.DataFrame) -> dict[tuple[str, str, str], dict[str, str]]:
    """(dataset, row label, method) -> {metric column: value as printed}, in the printed order."""
    out: dict[tuple[str, str, str], dict[str, str]] = {}
    for record in rows.itertuples():
        out.setdefault((record.dataset, record.row, record.method), {})[COLUMNS[record.metric]] = record.value_text
    return out


def _metric_cells(printed: dict[str, str]) -> dict[str, str]:
    """The eight metric columns of a published row; "-" where the paper gives nothing."""
    return {column: printed.get(column, MISSING) for column in COLUMNS.values()}


# --- the four layouts -----------------------------------------------------------------------------------------


def _comparison_table(rows: pd.DataFrame, scores: pd.DataFrame, runs: pd.DataFrame, datasets: list[str]) -> pd.DataFrame:
    """MCBAM-GAN Tables 5 and 6: methods as rows, the six metrics, Para (M) and Time (S) as columns."""
    published = _published_rows(rows)
    # The paper calls its own model "OURS"; next to this study's rows that would mislead.
    table = [{"source": "published", "Method": "OURS (MCBAM-GAN)" if label == "OURS" else label,
              **_metric_cells(printed)} for (_, label, _), printed in published.items()]
    paper_order = [method for _, _, method in published]
    for dataset in datasets:
        for method in _study_methods(scores, dataset, paper_order):
            table.append({"source": _study_source(dataset, datasets), "Method": method,
                          **_study_cells(scores, runs, dataset, method)})
    return pd.DataFrame(table)


def _design_cells(kind: str, variant: str) -> dict[str, str]:
    """The columns that describe an ablation variant: its depth (Table 2) or its ticked modules (Tables 3, 4)."""
    if kind == "depth":
        return {"Depth": variant.removeprefix("depth-")}
    ticked = set(variant.split("+"))
    return {title: TICK if module in ticked else CROSS for module, title in MODULES.items()}


def _ablation_table(kind: str, rows: pd.DataFrame, ablation_scores: pd.DataFrame, runs: pd.DataFrame,
                    datasets: list[str]) -> pd.DataFrame:
    """MCBAM-GAN Tables 2 to 4: one row per variant; this study's only for the variants it actually ran."""
    published = _published_rows(rows)
    table = [{"source": "published", "Data": PAPER_NAMES[dataset], **_design_cells(kind, variant),
              **_metric_cells(printed)} for (dataset, _, variant), printed in published.items()]
    for dataset in datasets:
        ran = set(_study_methods(ablation_scores, dataset))
        # The variants of the paper's rows for this paper dataset, once each, in the printed order.
        wanted = dict.fromkeys(v for d, _, v in published if d == get_dataset(dataset).paper)
        for variant in (v for v in wanted if v in ran):
            table.append({"source": "this study", "Data": dataset, **_design_cells(kind, variant),
                          **_study_cells(ablation_scores, runs, dataset, variant)})
    return pd.DataFrame(table)


def _review_stats_table(rows: pd.DataFrame, scores: pd.DataFrame, datasets: list[str]) -> pd.DataFrame:
    """The review's Tables 6 and 7: (metric, statistic) as rows; a published and a this-study column per method."""
    table = pd.DataFrame([{"Metric": title, "Statistic": stat_title}
                          for title in REVIEW_METRICS.values() for stat_title in REVIEW_STATISTICS.values()])
    printed_names = dict(zip(rows["method"], rows["row"]))  # slug -> name as printed, in the printed order
    study = {dataset: _study_methods(scores, dataset, list(printed_names)) for dataset in datasets}
    for method in dict.fromkeys(list(printed_names) + [m for methods in study.values() for m in methods]):
        name = printed_names.get(method, method)
        if method in printed_names:
            table[f"{name} (published)"] = _published_stats(rows[rows["method"] == method])
        for dataset in (d for d in datasets if method in study[d]):
            table[f"{name} ({_study_source(dataset, datasets)})"] = _study_stats(scores, dataset, method)
    return table


def _published_stats(rows: pd.DataFrame) -> list[str]:
    """A published column of Tables 6 and 7; a ``single`` value (STFDiff's merged cell) fills Min, Max and Avg."""
    printed = {(r.metric, r.statistic): r.value_text for r in rows.itertuples()}
    return [printed.get((metric, stat), printed.get((metric, "single"), MISSING))
            for metric in REVIEW_METRICS for stat in REVIEW_STATISTICS]


def _study_stats(scores: pd.DataFrame, dataset: str, method: str) -> list[str]:
    """Min, Max and Avg over the test pairs of each overall metric of a method."""
    overall = _overall(scores, dataset)
    values = overall[overall["method"] == method].groupby("metric")["value"]
    stats = values.agg(["min", "max", "mean"]).rename(columns={"mean": "avg"})
    return [_fmt(stats.at[metric, stat] if metric in stats.index else None, metric)
            for metric in REVIEW_METRICS for stat in REVIEW_STATISTICS]


def _review_parameters_table(rows: pd.DataFrame, scores: pd.DataFrame, runs: pd.DataFrame,
                             datasets: list[str]) -> pd.DataFrame:
    """The review's Table 8: published and this study's learnable parameters per method."""
    published = {r.method: (r.row, f"{int(r.value):,}") for r in rows.itertuples()}  # the paper prints 39,665,893
    study = list(dict.fromkeys(m for d in datasets for m in _study_methods(scores, d, list(published))))
    table = []
    for method in dict.fromkeys(list(published) + study):
        name, printed = published.get(method, (method, MISSING))
        ours = _study_parameters(runs, datasets, method) if method in study else MISSING
        table.append({"Method": name, "Parameters (published)": printed, "Parameters (this study)": ours})
    return pd.DataFrame(table)


def _study_parameters(runs: pd.DataFrame, datasets: list[str], method: str) -> str:
    """A method's parameter count; if it differs between datasets (e.g. band count), each distinct one."""
    counts = [int(run["parameters"]) for d in datasets if (run := _run(runs, d, method)) is not None]
    return " / ".join(f"{count:,}" for count in dict.fromkeys(counts)) or MISSING


# --- output ---------------------------------------------------------------------------------------------------


def _provenance(spec: TableSpec, label: str | None) -> list[str]:
    """The lines that say where the published and this study's numbers come from."""
    lines = [f"Published values: {PAPERS[spec.source]}, Table {spec.number}, transcribed in "
             "`published_results.csv` (its `note` column flags OCR quirks and inconsistencies)."]
    if label:
        lines.append(f"This study: {label}.")
    else:
        wanted = " or ".join(PAPER_NAMES[d] for d in spec.paper_datasets) or "any"
        lines.append(f"This study has no {wanted}-like dataset: published values only.")
    return lines + list(spec.notes)


def to_markdown(table: pd.DataFrame, spec: TableSpec, label: str | None) -> str:
    """The table in Markdown, titled with the paper, table number and caption, with its provenance."""
    body = table.to_markdown(index=False, disable_numparse=True)  # keep every printed digit as it is
    notes = "\n".join(f"- {line}" for line in _provenance(spec, label))
    return f"### {PAPERS[spec.source]}, Table {spec.number}: {spec.caption}\n\n{body}\n\n{notes}\n"


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "`": ""}


def _latex_escape(text: str) -> str:
    """Escape what LaTeX treats specially in running text (and drop Markdown's code backticks)."""
    return re.sub(r"[\\&%$#_{}~^`]", lambda match: LATEX_SPECIAL[match.group()], text)


def to_latex(table: pd.DataFrame, spec: TableSpec, label: str | None) -> str:
    """The table as a LaTeX ``table`` (booktabs rules, amssymb's \\checkmark), provenance underneath."""
    styler = table.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis="columns")
    caption = _latex_escape(f"{PAPERS[spec.source]}, Table {spec.number}: {spec.caption}")
    latex = styler.to_latex(caption=caption, hrules=True, position_float="centering")
    latex = latex.replace(TICK, r"\checkmark").replace(CROSS, r"$\times$")
    notes = "\n".join(r"\par\footnotesize " + _latex_escape(line) for line in _provenance(spec, label))
    return latex.replace(r"\end{table}", f"{notes}\n\\end{{table}}")


def markdown(table: pd.DataFrame, *, title: str, label: str, digits: int = 4) -> str:
    """A titled Markdown table with its provenance label underneath."""
    body = table.reset_index().to_markdown(index=False, floatfmt=f".{digits}f")
    return f"### {title}\n\n{body}\n\n_{label}._\n"


def write_paper_tables(scores: pd.DataFrame, ablation_scores: pd.DataFrame, runs: pd.DataFrame,
                       datasets: Sequence[str], profile: str, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``<source>-<table>.md`` and ``.tex`` of every paper table into ``out_dir``; return the paths."""
    published = load_published()
    paths = []
    for spec in PAPER_TABLES.values():
        matching = matching_datasets(spec, datasets)
        table = build_table(spec.id, scores, ablation_scores, runs, matching, published=published)
        label = "; ".join(get_dataset(dataset).label(profile) for dataset in matching) or None
        stem = Path(out_dir) / f"{spec.source}-{spec.table}"
        paths.append(write_text(stem.with_name(stem.name + ".md"), to_markdown(table, spec, label)))
        paths.append(write_text(stem.with_name(stem.name + ".tex"), to_latex(table, spec, label)))
    return paths


def with_spread(means: pd.DataFrame, spread: pd.DataFrame | None, digits: int = 4) -> pd.DataFrame:
    """Cells ``mean ± sd`` (just the mean where there is no spread: one run)."""
    def cell(mean: float, sd: float) -> str:
        if pd.isna(mean):
            return MISSING
        return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if pd.notna(sd) else "")

    spread = spread.reindex(index=means.index, columns=means.columns) if spread is not None else None
    return pd.DataFrame({c: [cell(m, spread[c].iloc[i] if spread is not None else float("nan"))
                             for i, m in enumerate(means[c])] for c in means.columns}, index=means.index)


def _interval(row, digits: int = 4) -> str:
    mark = " *" if row["significant"] else ""
    return f"{row['difference']:+.{digits}f} [{row['low']:+.{digits}f}, {row['high']:+.{digits}f}]{mark}"


def significance_markdown(differences: pd.DataFrame, ranking: pd.DataFrame, *, dataset: str, label: str,
                          level: float, resamples: int) -> str:
    """The bootstrap comparisons of one dataset: differences against the references, between deep models,
    and the ranking, each over all and over changed pixels."""
    pct = f"{level:.0%}"
    parts = [f"### Which differences are real, {dataset}\n\nRMSE difference (method − other; negative: the method "
             f"is better) with its {pct} paired bootstrap interval ({resamples} resamples of test pairs, seeds and "
             f"spatial blocks); * marks an interval that excludes 0. Rank: 1 + the number of methods significantly "
             f"better; methods that no interval separates share a rank.\n"]
    for region, rows in differences.groupby("region", sort=True):
        ranks = ranking[ranking["region"] == region].set_index("method")
        references = rows[rows["comparison"] != "between deep models"]
        wide = references.assign(cell=references.apply(_interval, axis=1)).pivot(
            index="method", columns="comparison", values="cell")
        wide.insert(0, "RMSE", ranks["rmse"].reindex(wide.index).map(lambda v: f"{v:.4f}"))
        wide.insert(0, "rank", ranks["rank"].reindex(wide.index))
        wide = wide.sort_values(["rank", "RMSE"]).fillna(MISSING)
        parts.append(f"#### {region} pixels\n\n{wide.reset_index().to_markdown(index=False)}\n")
        deep = rows[rows["comparison"] == "between deep models"]
        if not deep.empty:
            cells = deep.assign(cell=deep.apply(_interval, axis=1))[["method", "against", "cell"]]
            parts.append(f"Between the deep models ({region} pixels):\n\n"
                         f"{cells.rename(columns={'cell': f'difference [{pct} CI]'}).to_markdown(index=False)}\n")
    return "\n".join(parts) + f"\n_{label}._\n"
