"""``stfusion study``: the whole DVC pipeline, with the datasets' chains side by side.

``dvc repro`` runs one stage at a time. Each dataset's chain (download, preprocess, autoencoder,
predict, train, ablation, robustness) depends on nothing of the other datasets' but the ``sources`` and ``check`` stages, and a
CPU stage trains on ``train.threads`` threads (1 in the default study: the quick models gain nothing
from a second, see benchmarks/bench_ablation.py). So this runs ``dvc repro sources check``, then one
``dvc repro --single-item`` of each lane's chain, in order, per lane of datasets at the same time,
each lane pinned to its own share of the cores where the OS allows it, and then ``dvc repro`` for
what is left (evaluate, figures, report). DVC releases its repository lock while a stage command
runs, and ``--wait-for-lock`` makes a lane wait while the other writes ``dvc.lock``. Single items,
because DVC write-locks a stage's outputs even to skip it: two lanes walking up to ``sources`` would
lock each other out of ``data/sources``.

The results are those of a plain ``dvc repro``: every stage runs with the same parameters and
threads, and DVC records the same lock file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from stfusion.errors import ConfigError, StfusionError
from stfusion.data.datasets import get_dataset
from stfusion.paths import Workspace, code_root, find_root
from stfusion.pipeline.params import load_params
from stfusion.pipeline.profiles import DEFAULT, write_study
from stfusion.train.ablation import usable_cores

DVC = ("dvc", "--wait-for-lock", "repro")


def lanes_for(datasets: list[str], lanes: int | None = None) -> list[list[str]]:
    """Datasets dealt round-robin into ``lanes`` lanes (None: one per dataset, at most one per core)."""
    count = min(len(datasets), len(usable_cores())) if lanes is None else lanes
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"--lanes: expected an integer >= 1, got {lanes!r}")
    count = min(count, len(datasets))
    return [datasets[i::count] for i in range(count)]


CHAIN = ("download@{d}", "preprocess@{d}", "autoencoder@{d}", "predict@{d}-*", "train@{d}-*", "ablation@{d}",
         "robustness@{d}")
"""A dataset's chain in dvc.yaml, each stage after those it depends on."""


def lane_targets(datasets: list[str]) -> list[str]:
    """The stages of each dataset's chain, in the order they must run."""
    return [stage.format(d=d) for d in datasets for stage in CHAIN]


def _pin(cores: list[int]):
    if not hasattr(os, "sched_setaffinity") or not cores:
        return None
    return lambda: os.sched_setaffinity(0, cores)


def _relay(stream, prefix: str) -> None:
    for line in stream:
        sys.stdout.write(f"[{prefix}] {line}")
        sys.stdout.flush()


def run_lanes(lanes: list[list[str]], root: Path) -> None:
    """One ``dvc repro`` per lane, side by side; raise naming the lanes that failed."""
    cores = usable_cores()
    shares = [cores[i::len(lanes)] for i in range(len(lanes))] if len(cores) >= len(lanes) else [[]] * len(lanes)
    # Every lane starts before any relay thread does: preexec_fn is only safe without other threads.
    processes = [subprocess.Popen([*DVC, "--single-item", "--glob", *lane_targets(lane)], cwd=root, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, preexec_fn=_pin(share))
                 for lane, share in zip(lanes, shares)]
    relays = [threading.Thread(target=_relay, args=(process.stdout, "+".join(lane)), daemon=True)
              for lane, process in zip(lanes, processes)]
    for relay in relays:
        relay.start()
    failed = [lane for lane, process in zip(lanes, processes) if process.wait() != 0]
    for relay in relays:
        relay.join()
    if failed:
        raise StfusionError(f"study: dvc repro failed for {', '.join('+'.join(lane) for lane in failed)} "
                            "(its output above names the stage; run the same command again to resume)")


def reread_changed_sites(root: Path, datasets: list[str]) -> None:
    """DVC does not watch a site's folder (only its path in params.yaml): a site whose files changed since its
    download stage read them is read again (``dvc repro -f download@<site>``); what depends on it reruns only
    if its raw files changed."""
    from stfusion.data.site import stale_site  # rasterio: only when a site is read

    for name in datasets:
        dataset = get_dataset(name)
        if dataset.kind == "site" and stale_site(dataset.folder, Workspace(root).raw(name)):
            print(f"study: the files of site {name} ({dataset.folder}) changed since they were read: reading them again",
                  flush=True)
            if subprocess.run([*DVC, "--force", "--single-item", f"download@{name}"], cwd=root).returncode != 0:
                raise StfusionError(f"study: dvc repro download@{name} failed (its output above says why)")


def run_study(lanes: int | None = None, profile: str | None = None) -> None:
    """The pipeline of the study's params.yaml (``profile``: of that profile, in studies/<profile>/):
    the lanes side by side, then the rest."""
    root = find_root() if profile in (None, DEFAULT) else write_study(code_root(), profile)
    print(f"study: {root}", flush=True)
    datasets = load_params(root / "params.yaml", build_models=False)["datasets"]
    groups = lanes_for(datasets, lanes)
    print(f"study: {len(groups)} lane(s) side by side: {' | '.join(' '.join(g) for g in groups)}", flush=True)
    reread_changed_sites(root, datasets)
    if len(groups) > 1:
        # the stages every lane depends on run first, alone
        if subprocess.run([*DVC, "sources", "check"], cwd=root).returncode != 0:
            raise StfusionError("study: dvc repro sources check failed (its output above says why)")
        run_lanes(groups, root)
    if subprocess.run(list(DVC), cwd=root).returncode != 0:
        raise StfusionError("study: dvc repro failed (its output above names the stage)")
