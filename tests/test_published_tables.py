"""Published results (the transcribed CSV) and the papers' tables rebuilt next to this study's."""

from __future__ import annotations

import importlib.resources

import pandas as pd
import pytest

from stfusion.errors import InputError
from stfusion.reporting.published import load_published
from stfusion.reporting.tables import PAPER_TABLES, build_table, to_latex, to_markdown, write_paper_tables

COLUMNS = ["dataset", "method", "family", "reference_date", "target_date", "band", "region", "metric", "value"]
PAIRS = [("2001-11-25", "2001-12-04"), ("2002-01-12", "2002-02-13")]
METRICS = ["rmse", "ssim", "cc", "sam", "ergas", "psnr"]


@pytest.fixture(scope="module")
def published() -> pd.DataFrame:
    return load_published()


def _value(published, source, table, dataset, row, metric, statistic="value"):
    match = published[(published["source"] == source) & (published["table"] == table) & (published["dataset"] == dataset)
                      & (published["row"] == row) & (published["metric"] == metric) & (published["statistic"] == statistic)]
    assert len(match) == 1, (source, table, dataset, row, metric, statistic)
    return match.iloc[0]


@pytest.mark.parametrize(("key", "printed"), [
    (("mcbam-gan", "table5", "cia", "OURS", "psnr"), "34.0120"),
    (("mcbam-gan", "table5", "cia", "STARFM [25]", "seconds"), "808.56"),
    (("mcbam-gan", "table6", "lgc", "GAN-STFM [18]", "parameters_millions"), "16.26"),
    (("mcbam-gan", "table6", "lgc", "OURS", "ssim"), "0.9640"),
    (("mcbam-gan", "table2", "lgc", "Depth 3", "parameters_millions"), "14.8749"),
    (("mcbam-gan", "table2", "cia", "Depth 1", "seconds"), "11.7240"),
    (("mcbam-gan", "table3", "cia", "multi-scale+aff", "ergas"), "1.0978"),
    (("mcbam-gan", "table4", "lgc", "cbam", "ergas"), "0.9483"),
    (("mcbam-gan", "table4", "lgc", "multi-scale+cbam+aff+multi-loss", "parameters_millions"), "14.8856"),
    (("review", "table7", "lgc", "GANSTFM", "sam", "max"), "0.1769"),
    (("review", "table6", "cia", "EDCSTFN", "ergas", "min"), "1.0677"),
    (("review", "table6", "cia", "SwinSTFM", "cc", "avg"), "0.8809"),
    (("review", "table7", "lgc", "STFDiff", "ssim", "single"), "0.9429"),
    (("review", "table8", "", "SwinSTFM", "parameters"), "39665893"),
])
def test_transcribed_values(published, key, printed):
    row = _value(published, *key)
    assert row["value_text"] == printed
    assert row["value"] == float(printed)


def test_row_counts_and_slugs(published):
    counts = published.groupby(["source", "table"]).size().to_dict()
    # 6 rows x 8 columns; Tables 5 and 6 leave out STARFM's and FSDAF's Para (M) ("-");
    # the review's 5 metrics x (3 methods x 3 statistics + STFDiff's single value); 4 models.
    assert counts == {("mcbam-gan", "table2"): 48, ("mcbam-gan", "table3"): 48, ("mcbam-gan", "table4"): 48,
                      ("mcbam-gan", "table5"): 46, ("mcbam-gan", "table6"): 46,
                      ("review", "table6"): 50, ("review", "table7"): 50, ("review", "table8"): 4}
    table3 = published[(published["source"] == "mcbam-gan") & (published["table"] == "table3")]
    assert list(dict.fromkeys(table3["method"])) == [
        "multi-scale", "cbam", "multi-scale+cbam", "multi-scale+aff", "multi-scale+cbam+aff",
        "multi-scale+cbam+aff+multi-loss"]
    assert set(published.loc[published["table"] == "table5", "method"]) == {
        "starfm", "fsdaf", "dcstfn", "edcstfn", "gan-stfm", "mcbam-gan"}
    # The full model's row in Table 3 repeats Table 2's CIA depth 3, value for value.
    full = table3[table3["method"] == "multi-scale+cbam+aff+multi-loss"].set_index("metric")["value_text"]
    depth3 = published[(published["table"] == "table2") & (published["dataset"] == "cia") & (published["row"] == "Depth 3")]
    assert full.to_dict() == depth3.set_index("metric")["value_text"].to_dict()


def _broken_copy(tmp_path, edit) -> str:
    text = importlib.resources.files("stfusion").joinpath("resources/published_results.csv").read_text(encoding="utf-8")
    path = tmp_path / "published_results.csv"
    path.write_text(edit(text), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.replace("mcbam-gan,table5,cia,OURS,mcbam-gan,psnr,value,34.0120",
                         "mcbam-gan,table5,cia,OURS,mcbam-gan,psnr,value,n/a"), r"line \d+: column 'value' is not a number"),
    (lambda t: t.replace("value,34.0120", "value,inf", 1), r"line \d+: column 'value' is not finite"),
    (lambda t: t.replace(",psnr,", ",pnsr,", 1), r"line 2: column 'metric' has unknown value 'pnsr'"),
    (lambda t: t.replace(",table2,", ",table9,", 1), r"line 2: column 'table' has unknown value 'table9'"),
    (lambda t: t.replace("statistic,", "stat,", 1), r"missing column\(s\) \['statistic'\]"),
    (lambda t: t + t.splitlines()[1] + "\n", r"line 342 duplicates an earlier row"),
])
def test_validation_names_file_and_problem(tmp_path, edit, message):
    path = _broken_copy(tmp_path, edit)
    with pytest.raises(InputError, match=message) as error:
        load_published(path)
    assert path in str(error.value)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_published(tmp_path / "nothing.csv")


# --- the paper tables from a small fabricated study ---------------------------------------------------------------

def _scores(methods: dict[str, float], dataset: str = "cia-sim") -> pd.DataFrame:
    """Two test pairs; a method's overall value of every metric is ``base`` on the first pair, 3 x base on the second."""
    rows = []
    for method, base in methods.items():
        for factor, (ref, target) in zip((1, 3), PAIRS):
            rows += [[dataset, method, "x", ref, target, "all", "all", metric, base * factor] for metric in METRICS]
            # Per-band and per-region rows must not leak into the overall numbers.
            rows += [[dataset, method, "x", ref, target, "red", "all", "rmse", 99.0],
                     [dataset, method, "x", ref, target, "all", "changed", "rmse", 99.0]]
    return pd.DataFrame(rows, columns=COLUMNS)


@pytest.fixture
def study():
    scores = _scores({"edcstfn": 0.02, "persistence": 0.05})
    ablation = _scores({"depth-3": 0.01, "multi-scale+cbam": 0.03, "not-in-paper": 0.04})
    runs = pd.DataFrame(
        [["cia-sim", "edcstfn", "cnn", 280_000, 10.0, 1.234], ["cia-sim", "persistence", "reference", 0, 0.0, 0.5],
         ["cia-sim", "depth-3", "gan", 14_875_000, 5.0, 2.5], ["cia-sim", "multi-scale+cbam", "gan", 14_904_100, 5.0, 2.0]],
        columns=["dataset", "method", "family", "parameters", "train_seconds", "predict_seconds_median"])
    return scores, ablation, runs


def test_comparison_table_means_and_rows(study, published):
    table = build_table("mcbam-gan-table5", *study, ["cia-sim"], published=published)
    ours = table[table["source"] == "this study"].set_index("Method")
    assert list(ours.index) == ["edcstfn", "persistence"]  # the paper's methods first, then the study's own
    assert ours.at["edcstfn", "RMSE"] == "0.0400"  # mean of 0.02 and 0.06
    assert ours.at["persistence", "PSNR"] == "0.1000"
    assert ours.at["edcstfn", "Para (M)"] == "0.2800" and ours.at["persistence", "Para (M)"] == "-"
    assert ours.at["edcstfn", "Time (S)"] == "1.23"
    theirs = table[table["source"] == "published"].set_index("Method")
    # Published-only methods keep their row; printed digits survive; "-" where the paper gives nothing.
    assert theirs.at["GANSTFM [18]", "Para (M)"] == "16.26"
    assert theirs.at["STARFM [25]", "Para (M)"] == "-"
    assert theirs.at["OURS (MCBAM-GAN)", "PSNR"] == "34.0120"
    assert "persistence" not in theirs.index


def test_ablation_tables_leave_out_variants_not_run(study, published):
    depth = build_table("mcbam-gan-table2", *study, ["cia-sim"], published=published)
    ours = depth[depth["source"] == "this study"]
    assert list(ours["Depth"]) == ["3"] and list(ours["Data"]) == ["cia-sim"]  # no depth-1/2 faked
    assert ours.iloc[0]["SSIM"] == "0.0200" and ours.iloc[0]["Para (M)"] == "14.8750"
    assert len(depth[depth["source"] == "published"]) == 6
    modules = build_table("mcbam-gan-table3", *study, ["cia-sim"], published=published)
    ours = modules[modules["source"] == "this study"]
    assert len(ours) == 1  # multi-scale+cbam only; "not-in-paper" is no row of the paper
    assert ours.iloc[0][["Multi-Scale", "CBAM", "AFF-Fusion", "Multi-Loss"]].tolist() == ["✓", "✓", "×", "×"]
    full = modules[modules["source"] == "published"].iloc[-1]
    assert full[["Multi-Scale", "CBAM", "AFF-Fusion", "Multi-Loss"]].tolist() == ["✓"] * 4
    # Table 4 is about LGC: a CIA-like study adds nothing to it.
    assert set(build_table("mcbam-gan-table4", *study, ["cia-sim"], published=published)["source"]) == {"published"}


def test_review_statistics_table(study, published):
    table = build_table("review-table6", *study, ["cia-sim"], published=published).set_index(["Metric", "Statistic"])
    assert table.at[("RMSE", "Min"), "EDCSTFN (this study)"] == "0.0200"
    assert table.at[("RMSE", "Max"), "EDCSTFN (this study)"] == "0.0600"
    assert table.at[("RMSE", "Avg"), "EDCSTFN (this study)"] == "0.0400"
    assert table.at[("CC", "Max"), "EDCSTFN (published)"] == "0.8580"
    # The study-only method has only a this-study column; published-only methods only a published one.
    assert "persistence (this study)" in table.columns and "persistence (published)" not in table.columns
    assert "SwinSTFM (published)" in table.columns and "SwinSTFM (this study)" not in table.columns
    # STFDiff's merged cell: one value in its Min, Max and Avg rows.
    assert set(table.loc["SAM", "STFDiff (published)"]) == {"0.0734"}


def test_review_parameters_table(study, published):
    table = build_table("review-table8", *study, ["cia-sim"], published=published).set_index("Method")
    assert table.at["SwinSTFM", "Parameters (published)"] == "39,665,893"
    assert table.at["SwinSTFM", "Parameters (this study)"] == "-"
    assert table.at["EDCSTFN", "Parameters (this study)"] == "280,000"
    assert table.at["persistence", "Parameters (published)"] == "-"
    assert "depth-3" not in table.index  # ablation variants are no methods of the study


def test_markdown_latex_and_files(study, tmp_path):
    spec = PAPER_TABLES["mcbam-gan-table5"]
    table = build_table(spec.id, *study, ["cia-sim"])
    label = "synthetic cia-sim, default profile: not comparable to the published numbers"
    markdown = to_markdown(table, spec, label)
    assert "Table 5" in markdown and "10.3390/rs15061583" in markdown and label in markdown
    assert "published_results.csv" in markdown and "| 34.0120 " in markdown
    assert "\\begin{tabular}" in to_latex(table, spec, label)
    paths = write_paper_tables(*study, ["cia-sim"], "default", tmp_path / "tables")
    assert sorted(p.name for p in paths) == sorted(f"{s.source}-{s.table}.{ext}" for s in PAPER_TABLES.values()
                                                   for ext in ("md", "tex"))
    assert all(p.is_file() for p in paths)
    assert label in (tmp_path / "tables" / "mcbam-gan-table5.md").read_text()
    # No LGC-like dataset in this study: Table 6 is the published part only, and says so.
    lgc = (tmp_path / "tables" / "mcbam-gan-table6.md").read_text()
    assert "no LGC-like dataset" in lgc and "this study |" not in lgc
    assert "\\checkmark" in (tmp_path / "tables" / "mcbam-gan-table3.tex").read_text()


def test_study_without_runs_writes_the_published_tables(tmp_path):
    empty = pd.DataFrame()
    paths = write_paper_tables(empty, empty, empty, [], "default", tmp_path)
    assert len(paths) == 2 * len(PAPER_TABLES)
    assert "published values only" in (tmp_path / "review-table8.md").read_text()
