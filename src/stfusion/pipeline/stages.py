"""Run a pipeline stage: execute its notebook with papermill, parameters from params.yaml.

DVC calls ``stfusion stage NAME [--dataset D] [--method M] [--seed S]``. The stage's notebook is kept as a
jupytext ``py:percent`` file in ``notebooks/`` (the text form is the DVC dependency, so running the
notebook in JupyterLab cannot make a stage look changed). Here it is converted to ``.ipynb`` in
memory and executed by papermill's Python API, which passes parameters as Python literals, so
booleans, lists and mappings arrive with their types intact (papermill's ``-p`` would turn YAML's
``false`` into the truthy string "false").

The executed copy is written atomically to
``reports/notebooks/<stage>[-<dataset>][-<method>][-seed-<seed>].ipynb``.
A failed run leaves nothing there; its partly executed notebook goes to ``scratch/failed/`` for
debugging.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jupytext
import nbformat
import papermill
import zmq
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import DeadKernelError
from traitlets import default

from stfusion.data.datasets import get_dataset
from stfusion.methods.models import AUTOENCODER
from stfusion.methods.registry import get_method
from stfusion.pipeline.params import load_params, study_methods
from stfusion.errors import ConfigError, StfusionError
from stfusion.io import atomic_path
from stfusion.paths import code_root, find_root
from stfusion.pipeline.kernel import RUNNER_VARIABLE
from stfusion.train.config import variant_settings

ParamBuilder = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Stage:
    notebook: str
    needs_dataset: bool
    needs_method: bool
    parameters: ParamBuilder  # (params, dataset, method) -> notebook parameters
    trains: bool = False  # its kernel runs on train.threads CPU threads
    needs_seed: bool = False  # one run per seed of params.yaml ``seeds`` (--seed)
    methods: str | None = None  # the group of params.yaml ``methods`` its --method must belong to


def _download(p: dict, dataset: str | None, method: str | None) -> dict[str, Any]:
    return {"dataset": dataset, "raw_dir": p["download"].get("raw_dir"),
            "scene": p["download"].get("synthetic", {}).get(dataset, {})}


def _preprocess(p: dict, dataset: str | None, method: str | None) -> dict[str, Any]:
    return {"dataset": dataset, "splits": p["preprocess"].get("splits", {}).get(dataset, {})}


def _tier_settings(p: dict, name: str) -> dict[str, Any] | None:
    """The settings of ``name`` at the study's tier (None for methods that do not train)."""
    return p["models"].get(name, {}).get(p["train"]["tier"])


def _autoencoder(p: dict, dataset: str | None, method: str | None) -> dict[str, Any]:
    return {"dataset": dataset, "seed": p["seed"], "tier": p["train"]["tier"],
            "settings": _tier_settings(p, AUTOENCODER), "train": p["train"]}


def _predict(p: dict, dataset: str | None, method: str | None) -> dict[str, Any]:
    return {"dataset": dataset, "method": method}


def _train(p: dict, dataset: str | None, method: str | None) -> dict[str, Any]:
    return {"dataset": dataset, "method": method, "tier": p["train"]["tier"],
            "settings": _tier_settings(p, method), "train": p["train"]}


def _ablation(p: dict, dataset: str | None, method: str | None) -> dict[str, Any]:
    tier = p["train"]["tier"]
    variants = p["ablation"]["variants"]
    return {"dataset": dataset, "model": p["ablation"]["model"], "variants": variants, "seed": p["seed"],
            "tier": tier, "settings": {v: variant_settings(p, v, tier) for v in variants}, "train": p["train"]}


def _evaluate(p: dict, dataset: str | None, method: str | None) -> dict[str, Any]:
    ablation = p["ablation"]
    return {"datasets": p["datasets"], "methods": study_methods(p), "models": p["methods"]["models"],
            "seed": p["seed"], "seeds": p["seeds"], "variants": ablation["variants"],
            "ablation_model": ablation["model"], "full_model_rows": ablation.get("full_model_rows", []),
            "profile": p["profile"], "settings": p["evaluate"]}


def _figures(p: dict, dataset: str | None, method: str | None) -> dict[str, Any]:
    return {"datasets": p["datasets"], "methods": study_methods(p), "profile": p["profile"], "seed": p["seed"],
            **p["figures"]}


def _report(p: dict, dataset: str | None, method: str | None) -> dict[str, Any]:
    shown = ("profile", "seed", "seeds", "datasets", "methods", "evaluate", "robustness", "figures")  # what the report quotes
    return {"datasets": p["datasets"], "methods": study_methods(p), "profile": p["profile"],
            "params": {key: p[key] for key in shown}}


def _robustness(p: dict, dataset: str | None, method: str | None) -> dict[str, Any]:
    return {"dataset": dataset, "methods": study_methods(p), "seed": p["seed"], "levels": p["robustness"]["levels"],
            "profile": p["profile"], "dpi": p["figures"]["dpi"]}


STAGES: dict[str, Stage] = {
    "download": Stage("01_download.py", True, False, _download),
    "preprocess": Stage("02_preprocess.py", True, False, _preprocess),
    "autoencoder": Stage("03_autoencoder.py", True, False, _autoencoder, trains=True),
    "predict": Stage("04_predict.py", True, True, _predict, methods="baselines"),
    "train": Stage("05_train.py", True, True, _train, trains=True, methods="models", needs_seed=True),
    "ablation": Stage("06_ablation.py", True, False, _ablation, trains=True),
    "evaluate": Stage("07_evaluate.py", False, False, _evaluate),
    "figures": Stage("08_figures.py", False, False, _figures),
    "report": Stage("09_report.py", False, False, _report),
    "robustness": Stage("10_robustness.py", True, False, _robustness, trains=True),
}


def stage_parameters(name: str, params: dict[str, Any], *, dataset: str | None = None,
                     method: str | None = None, seed: int | None = None, workspace: str = ".") -> dict[str, Any]:
    """The notebook parameters of stage ``name``, drawn from validated ``params``."""
    if name not in STAGES:
        raise ConfigError(f"stage: unknown stage {name!r}; stages are {list(STAGES)}")
    stage = STAGES[name]
    if stage.needs_dataset:
        if dataset not in params["datasets"]:
            get_dataset(dataset, key="--dataset")
            raise ConfigError(f"--dataset: {dataset!r} is not in params.yaml 'datasets' {params['datasets']}")
    if stage.needs_method:
        get_method(method, key="--method")
        group = params["methods"][stage.methods]
        if method not in group:
            raise ConfigError(f"--method: {method!r} is not in params.yaml 'methods.{stage.methods}' {group}")
    parameters = {**stage.parameters(params, dataset, method), "workspace": workspace}
    if stage.needs_seed:
        if seed not in params["seeds"]:
            raise ConfigError(f"--seed: expected one of params.yaml 'seeds' {params['seeds']}, got {seed!r}")
        parameters["seed"] = seed
    elif seed is not None:
        raise ConfigError(f"--seed: stage {name} runs once, not once per seed")
    return parameters


def executed_name(name: str, dataset: str | None, method: str | None, seed: int | None = None) -> str:
    parts = (name, dataset, method, None if seed is None else f"seed-{seed}")
    return "-".join(part for part in parts if part) + ".ipynb"


def load_notebook(path: Path) -> nbformat.NotebookNode:
    """Read a py:percent notebook and give it the ``python3`` kernel papermill will start."""
    notebook = jupytext.read(path)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebook


def write_template(source: Path, template: Path) -> set[str]:
    """Write ``source`` as an executable .ipynb at ``template``; return the names its parameters cell declares."""
    nbformat.write(load_notebook(source), template)
    return set(papermill.inspect_notebook(str(template)))


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
QUIET_TQDM = "ignore:IProgress not found"  # by message: the kernel reads it before tqdm can be imported


@contextmanager
def kernel_environment(threads: int | None):
    """Start kernels inside the block with ``threads`` CPU threads (torch reads OMP_NUM_THREADS at import;
    None leaves them alone) and without tqdm.auto's "IProgress not found" warning: a stage's kernel has no
    widgets, and the warning came before every stage's output, errors included (the text bars still print)."""
    saved = {name: os.environ.get(name) for name in (*THREAD_VARIABLES, "PYTHONWARNINGS")}
    if threads is not None:
        os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [saved["PYTHONWARNINGS"], QUIET_TQDM]))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class EncryptedKernelManager(AsyncKernelManager):
    """A kernel manager that gives the kernel CurveZMQ keys when its kernelspec supports them (ipykernel's
    does): the notebook's code and outputs do not cross local TCP in plain text, and ipykernel no longer
    warns before every stage's output that they do."""

    @default("transport_encryption")
    def _transport_encryption_default(self) -> str:
        return "auto" if zmq.has("curve") else "disabled"  # jupyter_client refuses "auto" from a libzmq without CurveZMQ


def execute(template: Path, executed: Path, parameters: dict[str, Any], cwd: Path) -> None:
    """papermill on ``template``, in a kernel that dies with this process (:mod:`stfusion.pipeline.kernel`)."""
    os.environ[RUNNER_VARIABLE] = str(os.getpid())
    papermill.execute_notebook(str(template), str(executed), parameters=parameters, kernel_name="python3",
                               cwd=str(cwd), progress_bar=False, log_output=True,
                               extra_arguments=["--IPKernelApp.extensions=stfusion.pipeline.kernel"],
                               kernel_manager_class=EncryptedKernelManager)


def run_stage(name: str, *, dataset: str | None = None, method: str | None = None, seed: int | None = None,
              params_path: str | os.PathLike | None = None, workspace: str = ".") -> Path:
    """Execute stage ``name`` and return the path of its executed notebook."""
    root = find_root()
    params = load_params(params_path, build_models=False)  # the stage builds the model it trains
    parameters = stage_parameters(name, params, dataset=dataset, method=method, seed=seed, workspace=workspace)
    source = code_root() / "notebooks" / STAGES[name].notebook
    output = root / "reports" / "notebooks" / executed_name(name, dataset, method, seed)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="stfusion-stage-") as tmpdir:
        template = Path(tmpdir) / output.name
        declared = write_template(source, template)
        missing = sorted(set(parameters) - declared)
        if missing:
            raise ConfigError(f"{source}: the parameters cell does not declare {missing}")
        executed = Path(tmpdir) / f"executed-{output.name}"
        threads = params["train"].get("threads") if STAGES[name].trains else None
        try:
            with kernel_environment(threads):
                execute(template, executed, parameters, root)
        except DeadKernelError:
            raise StfusionError(f"stage {name} failed: its Python kernel died, most likely killed for lack of memory; "
                                "nothing was written (docs/full-reproduction.md: train.micro_batch, tile)") from None
        except papermill.PapermillExecutionError as err:
            failed = root / "scratch" / "failed" / output.name
            failed.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(executed, failed)
            raise StfusionError(f"stage {name} failed: {err.ename}: {err.evalue}\n"
                                f"(the partly executed notebook is {failed})") from None
        with atomic_path(output) as tmp:
            shutil.copyfile(executed, tmp)
    return output
