"""Where a completed study's time went, from the executed notebooks' papermill timestamps.

    python benchmarks/study_time.py [--notebooks reports/notebooks]

Per lane (the notebooks of one dataset; evaluate, figures and report form their own lane) it prints
the seconds inside notebooks by stage, the seconds between one notebook's end and the next one's
start (the stage overhead: DVC's checks and lock file, the stage runner's start-up and the kernel's
launch; with lanes side by side it also includes waits for the other lane's DVC lock), and the wall
time from the first notebook's start to the last one's end. Medians and ratios are for comparing
runs; one study is one sample of a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import datetime
from pathlib import Path

import pandas as pd


def notebook_times(folder: Path) -> pd.DataFrame:
    """One row per executed notebook: stage, lane, start, end and seconds."""
    rows = []
    for path in folder.glob("*.ipynb"):
        meta = json.loads(path.read_text())["metadata"].get("papermill", {})
        if not meta.get("start_time") or not meta.get("end_time"):
            continue
        stage = path.stem.split("-")[0]
        dataset = next((d for d in ("cia-sim", "lgc-sim", "cia", "lgc") if f"-{d}" in path.stem), None)
        rows.append({"notebook": path.stem, "stage": stage, "lane": dataset or "after the lanes",
                     "start": datetime.fromisoformat(meta["start_time"]),
                     "end": datetime.fromisoformat(meta["end_time"]), "seconds": float(meta["duration"])})
    if not rows:
        raise SystemExit(f"{folder}: no executed notebooks with papermill timestamps; run the study first")
    return pd.DataFrame(rows).sort_values("start", ignore_index=True)


def lane_summary(times: pd.DataFrame) -> pd.DataFrame:
    out = []
    for lane, group in times.groupby("lane", sort=False):
        gaps = (group["start"].iloc[1:].to_numpy() - group["end"].iloc[:-1].to_numpy()) / pd.Timedelta(seconds=1)
        row = {"lane": lane, "notebooks": len(group),
               "wall s": (group["end"].max() - group["start"].min()).total_seconds(),
               "in notebooks s": group["seconds"].sum(), "between notebooks s": float(gaps.sum()),
               "median gap s": statistics.median(gaps) if len(gaps) else float("nan")}
        row.update({f"{stage} s": seconds for stage, seconds in group.groupby("stage")["seconds"].sum().items()})
        out.append(row)
    return pd.DataFrame(out).fillna(0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", default="reports/notebooks", type=Path)
    args = parser.parse_args()
    times = notebook_times(args.notebooks)
    total = (times["end"].max() - times["start"].min()).total_seconds()
    print(f"{len(times)} notebooks, first start to last end: {total:.0f} s ({total / 60:.1f} min)")
    print(lane_summary(times).set_index("lane").T.to_string(float_format=lambda v: f"{v:.0f}"))


if __name__ == "__main__":
    main()
