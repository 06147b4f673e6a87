"""The published results of the two papers the study reproduces, as one validated table.

``resources/published_results.csv`` holds every number of the MCBAM-GAN paper's Tables 2 to 6
(Liu et al. 2023, Remote Sens. 15, 1583) and of the review's Tables 6 to 8 (Lian et al. 2025,
Sensors 25, 1093), one row per number, transcribed as printed. The review's Min/Max/Avg summarise
the values it collected from the literature, not test pairs; STFDiff's merged cell is one
``single`` value. The ``note`` column records OCR quirks and inconsistencies between tables.
"""

from __future__ import annotations

import importlib.resources
import math
import os
from pathlib import Path

import pandas as pd

from stfusion.errors import InputError

RESOURCE = "published_results.csv"
COLUMNS = ["source", "table", "dataset", "row", "method", "metric", "statistic", "value", "note"]
KEY = ["source", "table", "dataset", "row", "metric", "statistic"]
TABLES = {
    "mcbam-gan": {"table2", "table3", "table4", "table5", "table6"},
    "review": {"table6", "table7", "table8"},
}
DATASETS = {"cia", "lgc", ""}  # "" for tables that are not about one dataset (review Table 8)
METRICS = {"psnr", "sam", "ssim", "ergas", "cc", "rmse", "parameters_millions", "seconds", "parameters"}
STATISTICS = {"value", "min", "max", "avg", "single"}


def load_published(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The validated published results: the CSV's columns, ``value`` as float, ``value_text`` as printed.

    ``path`` defaults to the copy shipped in the package. Raises InputError naming the file, the
    line and the column at fault.
    """
    if path is not None:
        return _read(Path(path))
    with importlib.resources.as_file(importlib.resources.files("stfusion") / "resources" / RESOURCE) as packaged:
        return _read(packaged)


def _read(path: Path) -> pd.DataFrame:
    """Read every cell as text (so values keep their printed digits and blanks stay blank), then validate."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: published results file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a readable CSV file ({error})") from None
    missing = [column for column in COLUMNS if column not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; expected {COLUMNS}")
    table = table[COLUMNS].copy()
    for index, row in table.iterrows():
        _check_row(path, index + 2, row)  # +2: header line, and CSV lines count from 1
    _check_duplicates(path, table)
    table["value_text"] = table["value"]
    table["value"] = table["value"].astype(float)
    return table


def _check_row(path: Path, line: int, row: pd.Series) -> None:
    """One row: known source, table, dataset, metric and statistic; a finite number as value."""
    where = f"{path}: line {line}"
    known = {
        "source": set(TABLES), "table": TABLES.get(row["source"], set()), "dataset": DATASETS,
        "metric": METRICS, "statistic": STATISTICS,
    }
    for column, allowed in known.items():
        if row[column] not in allowed:
            raise InputError(f"{where}: column {column!r} has unknown value {row[column]!r}; expected one of {sorted(allowed)}")
    for column in ("row", "method"):
        if not row[column].strip():
            raise InputError(f"{where}: column {column!r} is empty")
    try:
        value = float(row["value"])
    except ValueError:
        raise InputError(f"{where}: column 'value' is not a number: {row['value']!r}") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: column 'value' is not finite: {row['value']!r}")


def _check_duplicates(path: Path, table: pd.DataFrame) -> None:
    """Each published number appears once: a second copy would be silently averaged or picked."""
    duplicated = table.duplicated(KEY, keep="first")
    if duplicated.any():
        index = int(duplicated.idxmax())
        key = dict(zip(KEY, table.loc[index, KEY]))
        raise InputError(f"{path}: line {index + 2} duplicates an earlier row with the same {KEY}: {key}")
