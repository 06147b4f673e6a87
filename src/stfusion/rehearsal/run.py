"""``stfusion rehearse``: every stage of the full reproduction on this machine, against a mock portal.

The rehearsal profile (profiles/rehearsal.yaml: the full profile with each paper-tier model cut to a few
steps) is written to studies/rehearsal/ like any profile. Mock CIA and LGC at their real sizes are
written once to studies/rehearsal/portal/ and served on 127.0.0.1 (the first zip of each collection is
cut halfway through its first transfer, so the download must resume). Then each stage runs alone,
``dvc repro --single-item`` in pipeline order, and its wall time and peak memory go to
studies/rehearsal/rehearsal.csv as it finishes. DVC skips what is up to date, so a rerun resumes.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from stfusion.data.real import PORTAL_URL_VARIABLE, get_spec
from stfusion.errors import StfusionError
from stfusion.io import write_text
from stfusion.paths import code_root
from stfusion.pipeline.params import load_params
from stfusion.pipeline.profiles import write_study
from stfusion.rehearsal.portal import PortalServer, write_collection

PROFILE = "rehearsal"
COLUMNS = ("stage", "status", "wall_s", "peak_rss_gib", "peak_tree_rss_gib")
MEMORY_LIMIT_GIB = 16.0
"""No stage may need more on the 24 GB machine the rehearsal is sized for (issue #20)."""


@dataclass(frozen=True)
class Measurement:
    stage: str
    status: str  # "ran" | "failed"
    wall_s: float
    peak_rss_gib: float  # the largest single process (the kernel, usually), from the kernel's own count
    peak_tree_rss_gib: float  # the stage's processes together, sampled every 0.2 s (at least the largest)

    def row(self) -> list[str]:
        return [self.stage, self.status, f"{self.wall_s:.1f}", f"{self.peak_rss_gib:.2f}", f"{self.peak_tree_rss_gib:.2f}"]


def portal_collections(study: Path, datasets: list[str], *, seed: int = 0) -> dict[str, Path]:
    """DAP id -> folder of each dataset's mock collection, written the first time (minutes at full size)."""
    collections = {}
    for dataset in datasets:
        spec = get_spec(dataset)
        folder = study / "portal" / dataset
        if not folder.is_dir():
            write_collection(spec, folder, seed=seed)
        collections[spec.dap_id] = folder
    return collections


def first_zips(collections: dict[str, Path]) -> dict[str, int]:
    """Listed name -> half its size, for the first zip of every collection: the transfers to cut."""
    cuts = {}
    for folder in collections.values():
        archive = min(folder.glob("*.zip"))
        cuts[archive.name] = archive.stat().st_size // 2
    return cuts


def stage_names(study: Path) -> list[str]:
    """The study's stages in dvc.yaml's order, which runs each after the stages it depends on."""
    listed = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=study, capture_output=True, text=True)
    if listed.returncode != 0:
        raise StfusionError(f"{study}: dvc stage list failed: {listed.stderr.strip()}")
    return listed.stdout.split()


def up_to_date(study: Path, stage: str) -> bool:
    """Whether DVC would skip ``stage`` (its last measurement stays in the table)."""
    status = subprocess.run(["dvc", "status", "--json", stage], cwd=study, capture_output=True, text=True)
    return status.returncode == 0 and json.loads(status.stdout or "{}") == {}


def _tree_rss(process: psutil.Process) -> int:
    """The RSS of ``process``'s descendants together (the launcher itself left out)."""
    try:
        members = process.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


LAUNCHER = ("import json, resource, signal, subprocess, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
            "code = subprocess.call(sys.argv[2:], preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)); "
            "usage = resource.getrusage(resource.RUSAGE_CHILDREN); "
            "open(sys.argv[1], 'w').write(json.dumps([code, usage.ru_maxrss])); sys.exit(code)")
"""Runs a command and reports its exit code and the peak RSS (KiB) of its largest process. A small
process of its own starts it: a child forked from this one would count this one's memory as its own.
Ctrl-C reaches the command (its default handler restored), which stops and says so in one line; the
launcher ignores it and reports (it printed a traceback before)."""


def measure(command: list[str], cwd: Path, env: dict[str, str], stage: str) -> Measurement:
    """Run ``command``; its wall time, the peak RSS of its largest process and of its process tree (sampled)."""
    with tempfile.TemporaryDirectory(prefix="stfusion-rehearse-") as scratch:
        report = Path(scratch) / "usage.json"
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(report), *command], cwd=cwd, env=env)
        process, peak = psutil.Process(child.pid), 0
        while child.poll() is None:
            peak = max(peak, _tree_rss(process))
            time.sleep(0.2)
        wall = time.perf_counter() - start
        code, largest = json.loads(report.read_text()) if report.is_file() else (child.returncode, 0)
    gib = 1024 ** 3
    return Measurement(stage, "ran" if code == 0 else "failed", wall, largest * 1024 / gib,
                       max(peak, largest * 1024) / gib)


def append_row(table: Path, measurement: Measurement) -> None:
    rows = list(csv.reader(table.open())) if table.is_file() else [list(COLUMNS)]
    write_text(table, "".join(",".join(row) + "\n" for row in [*rows, measurement.row()]))


def latest_rows(table: Path) -> list[dict[str, str]]:
    """The table's latest row of every stage, in the order the stages first ran."""
    return list({r["stage"]: r for r in csv.DictReader(table.open())}.values())


def markdown(table: Path) -> str:
    rows = latest_rows(table)
    lines = ["| stage | status | wall s | peak RSS GiB (largest process) | peak RSS GiB (all its processes) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['status']} | {r['wall_s']} | {r['peak_rss_gib']} | {r['peak_tree_rss_gib']} |"
              for r in rows]
    total = sum(float(r["wall_s"]) for r in rows)
    return "\n".join(lines + [f"\n{len(rows)} stages, {total / 60:.1f} min in all."])


def rehearse(stages: list[str] | None = None) -> Path:
    """Run the rehearsal (``stages``: only these, by DVC name, e.g. ``download@cia``); return its table."""
    study = write_study(code_root(), PROFILE)
    params = load_params(study / "params.yaml", build_models=False)
    collections = portal_collections(study, params["datasets"])
    table = study / "rehearsal.csv"
    failed = None
    with PortalServer(collections, interrupt=first_zips(collections)) as portal:
        env = {**os.environ, PORTAL_URL_VARIABLE: portal.base_url}
        for stage in stages or stage_names(study):
            if up_to_date(study, stage):
                print(f"rehearse: {stage} is up to date", flush=True)
                continue
            print(f"rehearse: {stage}", flush=True)
            result = measure(["dvc", "--wait-for-lock", "repro", "--single-item", stage], study, env, stage)
            append_row(table, result)
            print(f"rehearse: {stage} {result.status} in {result.wall_s:.0f} s, peak RSS {result.peak_tree_rss_gib:.2f} GiB",
                  flush=True)
            if result.status == "failed":
                failed = stage
                break
    # DVC's autostage has put the rehearsal's lock file in git's index: it is scratch, not the project's.
    subprocess.run(["git", "reset", "-q", "--", "dvc.lock"], cwd=study, capture_output=True)
    resumed = [path for path, byte_range in portal.log if byte_range]
    print(f"rehearse: {len(resumed)} transfer(s) resumed with a range request", flush=True)
    print(markdown(table), flush=True)
    over = [r["stage"] for r in latest_rows(table) if float(r["peak_tree_rss_gib"]) > MEMORY_LIMIT_GIB]
    problems = ([f"failed at {failed}"] if failed else []) + ([f"over {MEMORY_LIMIT_GIB} GiB: {', '.join(over)}"] if over else [])
    if problems:
        raise StfusionError(f"rehearse: {'; '.join(problems)} (the table is {table})")
    return table
