"""Training on several devices: one ``torchrun`` process per device, then the study goes on in one.

``run_method`` and ``run_autoencoder`` with ``train.devices`` > 1 call :func:`train_distributed`. It
writes the run (model, settings, seed, where the datacube and splits are) to ``job.json`` beside the
checkpoints and starts ``torchrun --standalone --nproc_per_node N -m stfusion.train.distributed
job.json`` (for several nodes, the command in ``$STFUSION_TORCHRUN`` instead of the torchrun part).
Every process trains with Lightning's DDP (stfusion.train.datamodule: how a batch is shared out);
rank 0 alone writes the checkpoints; at the end the ranks compare their weights and rank 0 writes
``distributed.json``. The caller then resumes the finished run in its own process,
where no step is left: it loads the best weights and predicts, and only it writes the study's outputs.
A notebook's kernel never becomes a DDP process itself.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import xarray as xr

from stfusion.data.datacube import open_cube, save_cube
from stfusion.data.splits import Splits
from stfusion.errors import StfusionError
from stfusion.io import write_json
from stfusion.train.config import TrainConfig, train_config
from stfusion.train.fit import train_model


def _cube_path(cube: xr.Dataset, folder: Path) -> str:
    """The file the cube was read from, else a copy written into ``folder``."""
    source = cube.encoding.get("source")
    if source and Path(source).is_file():
        return str(source)
    return str(save_cube(cube, folder / "cube.nc"))


TORCHRUN_VARIABLE = "STFUSION_TORCHRUN"


def launcher(devices: int) -> list[str]:
    """The command that starts the processes: ``$STFUSION_TORCHRUN`` (several nodes: an srun + torchrun
    line, docs/full-reproduction.md), else torchrun with ``devices`` processes on this machine."""
    custom = os.environ.get(TORCHRUN_VARIABLE, "").strip()
    if custom:
        return shlex.split(custom)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={devices}"]


def train_distributed(name: str, cube: xr.Dataset, splits: Splits, config: TrainConfig, *, seed: int,
                      checkpoint_dir: str | os.PathLike, devices: int, feature_encoder_path=None,
                      accelerator: str = "auto", strategy: str = "auto", num_workers: int = 0,
                      micro_batch: int | None = None) -> dict[str, Any]:
    """Train ``name`` to the end in ``devices`` torchrun processes; return their ``distributed.json``."""
    folder = Path(checkpoint_dir)
    jobs = folder.parent / f"{folder.name}.job"
    jobs.mkdir(parents=True, exist_ok=True)
    splits.save(jobs / "splits.json")
    job = {"name": name, "config": config.to_dict(), "seed": seed, "checkpoint_dir": str(folder),
           "cube": _cube_path(cube, jobs), "splits": str(jobs / "splits.json"), "accelerator": accelerator,
           "strategy": strategy, "num_workers": num_workers, "micro_batch": micro_batch,
           "feature_encoder_path": str(feature_encoder_path) if feature_encoder_path else None}
    write_json(jobs / "job.json", job)
    command = [*launcher(devices), "-m", "stfusion.train.distributed", str(jobs / "job.json")]
    print(f"{name}: training in {devices} processes: {' '.join(command[1:])}", flush=True)
    if subprocess.run(command).returncode != 0:
        raise StfusionError(f"{name}: the distributed training failed (its output above says why); "
                            f"running the stage again resumes it from {folder}")
    report = json.loads((folder / "distributed.json").read_text())
    shutil.rmtree(jobs)
    if not report["ranks_agree"]:
        raise StfusionError(f"{name}: the {devices} processes ended with different weights {report['weights_digest']}")
    return report


def _weights_digest(model: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


def main(job_path: str) -> None:
    """One torchrun process: train the job; check that every rank ends with the same weights."""
    job = json.loads(Path(job_path).read_text())
    config = train_config(job["config"], key=f"models.{job['name']}")
    result = train_model(job["name"], open_cube(job["cube"]), Splits.load(job["splits"]),
                         config, seed=job["seed"], checkpoint_dir=job["checkpoint_dir"],
                         feature_encoder_path=job["feature_encoder_path"], accelerator=job["accelerator"],
                         strategy=job["strategy"], num_workers=job["num_workers"], micro_batch=job["micro_batch"],
                         progress=True)
    digest = torch.tensor([_weights_digest(result.model)], dtype=torch.float64)
    digests = [digest]
    if torch.distributed.is_initialized():  # a one-process launch may train without a process group
        digests = [torch.zeros_like(digest) for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather(digests, digest)
    if result.is_global_zero:
        values = [float(d) for d in digests]
        write_json(Path(job["checkpoint_dir"]) / "distributed.json",
                   {"world_size": len(values), "weights_digest": values, "ranks_agree": len(set(values)) == 1,
                    "train_seconds": result.record["train_seconds"], "device": result.record["device"]})


if __name__ == "__main__":
    main(sys.argv[1])
