"""The stage runner: parameters reach the notebooks from params.yaml with their types intact."""

import subprocess
import sys

import jupytext
import nbformat
import pytest
from jupytext.config import load_jupytext_configuration_file

from stfusion.pipeline.params import load_params
from stfusion.errors import ConfigError, StfusionError
from stfusion.paths import find_root
from stfusion.pipeline.stages import STAGES, executed_name, stage_parameters, write_template

ROOT = find_root()


@pytest.mark.parametrize("name", list(STAGES))
def test_every_stage_parameter_is_declared_by_its_notebook(name, tmp_path):
    params = load_params(ROOT / "params.yaml")
    group = STAGES[name].methods
    method = params["methods"][group][0] if group else None
    seed = params["seeds"][0] if STAGES[name].needs_seed else None
    values = stage_parameters(name, params, dataset=params["datasets"][0], method=method, seed=seed)
    declared = write_template(ROOT / "notebooks" / STAGES[name].notebook, tmp_path / "template.ipynb")
    assert set(values) <= set(declared), f"{STAGES[name].notebook} lacks {set(values) - set(declared)}"


def test_ablation_stage_gets_every_variant_with_its_merged_settings():
    params = load_params(ROOT / "params.yaml")
    values = stage_parameters("ablation", params, dataset="cia-sim")
    base = params["models"]["mcbam-gan"][params["train"]["tier"]]
    assert values["model"] == "mcbam-gan" and values["variants"] == params["ablation"]["variants"]
    assert list(values["settings"]) == params["ablation"]["variants"]
    cbam = values["settings"]["cbam"]
    assert cbam["arch"] == {**base["arch"], "depth": 1, "aff": False}  # merged key by key
    assert cbam["feature_weight"] == 0.0 and cbam["epochs"] == base["epochs"]
    assert values["settings"]["depth-2"]["arch"] == {**base["arch"], "depth": 2}
    assert executed_name("ablation", "cia-sim", None) == "ablation-cia-sim.ipynb"


def test_the_stage_runner_checks_settings_without_building_models():
    """Building every model at both tiers takes seconds; the runner does it at none of its ~40 runs,
    yet a misspelt hyper-parameter is still caught before any notebook starts."""
    import copy

    from stfusion.pipeline.params import validate_params

    params = load_params(ROOT / "params.yaml")
    bad = copy.deepcopy(params)
    bad["models"]["swinstfm"]["paper"]["arch"]["depths"] = "deep"  # a bad value only building finds
    validate_params(bad, build_models=False)
    with pytest.raises(ConfigError, match=r"models.swinstfm.paper.arch"):
        validate_params(bad)
    bad["models"]["swinstfm"]["paper"]["arch"]["dept"] = [2, 2]  # a misspelt name: caught either way
    with pytest.raises(ConfigError, match=r"models.swinstfm.paper.arch.dept: not a hyper-parameter"):
        validate_params(bad, build_models=False)


def test_types_survive_from_params_to_notebook_source():
    """papermill renders parameters as Python literals: booleans, None, lists and dicts stay typed."""
    from papermill.translators import PythonTranslator

    params = load_params(ROOT / "params.yaml")
    values = stage_parameters("download", params, dataset="cia-sim")
    values.update(flag=False, items=[1, "a", None], nested={"x": [True]})
    namespace = {}
    exec(PythonTranslator.codify(values), namespace)
    assert namespace["flag"] is False and namespace["items"] == [1, "a", None]
    assert namespace["scene"] == params["download"]["synthetic"]["cia-sim"]
    assert namespace["raw_dir"] is None and namespace["nested"] == {"x": [True]}


def test_unknown_names_are_refused():
    params = load_params(ROOT / "params.yaml")
    with pytest.raises(ConfigError, match="unknown stage"):
        stage_parameters("deploy", params)
    with pytest.raises(ConfigError, match="--dataset: unknown dataset 'nope'"):
        stage_parameters("download", params, dataset="nope")
    with pytest.raises(ConfigError, match="not in params.yaml 'datasets'"):
        stage_parameters("download", params, dataset="lgc")
    with pytest.raises(ConfigError, match="--method: unknown method"):
        stage_parameters("train", params, dataset="cia-sim", method="nope")
    with pytest.raises(ConfigError, match=r"--method: 'persistence' is not in params.yaml 'methods.models'"):
        stage_parameters("train", params, dataset="cia-sim", method="persistence")
    with pytest.raises(ConfigError, match=r"--method: 'dcstfn' is not in params.yaml 'methods.baselines'"):
        stage_parameters("predict", params, dataset="cia-sim", method="dcstfn")
    assert executed_name("predict", "cia-sim", "persistence") == "predict-cia-sim-persistence.ipynb"


def test_the_train_stage_runs_once_per_seed_of_seeds():
    params = load_params(ROOT / "params.yaml", build_models=False)
    seed = params["seeds"][-1]
    assert stage_parameters("train", params, dataset="cia-sim", method="dcstfn", seed=seed)["seed"] == seed
    for wrong in (None, max(params["seeds"]) + 1):
        with pytest.raises(ConfigError, match=r"--seed: expected one of params.yaml 'seeds'"):
            stage_parameters("train", params, dataset="cia-sim", method="dcstfn", seed=wrong)
    with pytest.raises(ConfigError, match="--seed: stage predict runs once"):
        stage_parameters("predict", params, dataset="cia-sim", method="persistence", seed=seed)
    assert executed_name("train", "cia-sim", "dcstfn", 43) == "train-cia-sim-dcstfn-seed-43.ipynb"


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.py")), ids=lambda p: p.name)
def test_papermill_reads_every_parameter_of_a_notebook_without_a_warning(path, caplog):
    """papermill warns "Unable to parse line" at every run for a line with two '=' (one in a comment)."""
    from papermill.translators import PythonTranslator

    cell = next(c for c in jupytext.read(path).cells if "parameters" in c.metadata.get("tags", []))
    names = [line.split("=")[0].strip() for line in cell.source.splitlines()
             if "=" in line.split("#")[0] and not line.startswith((" ", "#"))]
    with caplog.at_level("WARNING", logger="papermill"):
        found = [p.name for p in PythonTranslator.inspect(cell)]
    assert not caplog.records and found == names


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.py")), ids=lambda p: p.name)
def test_saving_a_notebook_in_jupyterlab_leaves_its_text_unchanged(path):
    """JupyterLab adds outputs, execution counts and kernel metadata; none of it reaches the .py
    that DVC hashes, so exploring a notebook never makes a stage look changed."""
    config = load_jupytext_configuration_file(str(ROOT / "jupytext.toml"))
    nb = jupytext.read(path)
    nb.metadata.update(kernelspec={"name": "python3", "display_name": "Python 3", "language": "python"},
                       language_info={"name": "python", "version": "3.11"})
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.execution_count = 7
            cell.outputs = [nbformat.v4.new_output("stream", text="output")]
            cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01"}
    assert jupytext.writes(nb, fmt="py:percent", config=config) == path.read_text()
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)


def test_cli_reports_errors_without_traceback(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text((ROOT / "params.yaml").read_text().replace("seed: 42", "seed: true"))
    result = subprocess.run([sys.executable, "-m", "stfusion.cli", "stage", "download", "--dataset", "cia-sim",
                             "--params", str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert "seed: expected an integer" in result.stderr and "Traceback" not in result.stderr


def test_the_committed_code_fingerprints_match_the_code(tmp_path):
    """data/sources/<unit>.json is what DVC compares to decide that a stage's code changed. Committed
    stale, dvc.lock no longer describes the code and a fresh clone's `dvc repro` reruns those stages:
    after editing src/ or notebooks/, run `stfusion sources` (or `dvc repro`) and commit both."""
    from stfusion.pipeline.sources import write_sources

    written = {path.name: path.read_text() for path in write_sources(tmp_path / "sources")}
    committed = {path.name: path.read_text() for path in (find_root() / "data" / "sources").glob("*.json")}
    stale = sorted(name for name in written.keys() | committed.keys() if written.get(name) != committed.get(name))
    assert not stale, f"data/sources is stale for {stale}: run `stfusion sources`, then `dvc repro`"


def test_a_dead_kernel_is_one_line_and_writes_nothing(monkeypatch, tmp_path):
    """A kernel killed for memory raises nbclient's DeadKernelError, with no partly executed notebook."""
    from nbclient.exceptions import DeadKernelError
    from stfusion.pipeline import stages

    def die(*args, **kwargs):
        raise DeadKernelError("Kernel died")

    monkeypatch.setattr(stages.papermill, "execute_notebook", die)
    output = ROOT / "reports" / "notebooks" / executed_name("download", "cia-sim", None, None)
    before = output.read_bytes() if output.exists() else None
    with pytest.raises(StfusionError, match=r"^stage download failed: its Python kernel died, most likely killed "
                                            r"for lack of memory; nothing was written"):
        stages.run_stage("download", dataset="cia-sim")
    assert (output.read_bytes() if output.exists() else None) == before


def test_every_stage_but_sources_waits_for_the_check_stage():
    """DVC removes a stage's outputs only when it runs the stage: with the check upstream of all, a bad
    params.yaml stops `dvc repro` before any of them (the repro itself: tests/test_pipeline_e2e.py)."""
    import yaml

    stages = yaml.safe_load((find_root() / "dvc.yaml").read_text())["stages"]
    assert stages["check"]["params"] == [{"params.yaml": None}]
    for name, stage in stages.items():
        deps = (stage.get("do") or stage)["deps"]
        assert ("data/checked.json" in deps) == (name not in ("sources", "check")), name


def test_the_check_writes_the_same_bytes_for_any_valid_params_and_nothing_for_bad_ones(tmp_path, capsys):
    import shutil

    from stfusion.cli import main

    shutil.copy(find_root() / "params.yaml", tmp_path / "params.yaml")
    assert main(["check", "--params", str(tmp_path / "params.yaml")]) == 0
    written = (tmp_path / "data" / "checked.json").read_bytes()
    assert written == (find_root() / "data" / "checked.json").read_bytes()
    (tmp_path / "data" / "checked.json").unlink()
    text = (tmp_path / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(text.replace("seed: 42", "seed: forty-two", 1))
    assert main(["check", "--params", str(tmp_path / "params.yaml")]) == 2
    assert "seed: expected an integer, got 'forty-two'" in capsys.readouterr().err
    assert not (tmp_path / "data" / "checked.json").exists()


def test_stage_kernels_do_not_warn_about_missing_widgets(monkeypatch):
    """tqdm.auto in a kernel without ipywidgets warns "IProgress not found" before every stage's output: the
    stage runner passes its kernels a filter for it (and the filter, as Python reads it, silences it)."""
    import os

    from stfusion.pipeline.stages import QUIET_TQDM, kernel_environment

    monkeypatch.setenv("PYTHONWARNINGS", "default")
    with kernel_environment(None):
        assert os.environ["PYTHONWARNINGS"] == f"default,{QUIET_TQDM}"
    assert os.environ["PYTHONWARNINGS"] == "default"  # restored
    code = "import warnings, tqdm; warnings.warn(tqdm.TqdmWarning('IProgress not found'))"
    for filters, expected in (("", "IProgress not found"), (QUIET_TQDM, "")):
        env = {**os.environ, "PYTHONWARNINGS": filters}
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert (expected in result.stderr) and (expected or not result.stderr), result.stderr


ENCRYPTED = """
import sys, nbformat
from pathlib import Path
from stfusion.pipeline.stages import execute
nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                       "language": "python"}})
nb.cells = [nbformat.v4.new_code_cell("from ipykernel.kernelapp import IPKernelApp\\n"
                                      "print('curve', IPKernelApp.instance().curve_secretkey is not None)")]
folder = Path(sys.argv[1])
nbformat.write(nb, folder / "t.ipynb")
execute(folder / "t.ipynb", folder / "out.ipynb", {}, folder)
"""


def test_stage_kernels_talk_over_encrypted_channels_without_warning(tmp_path):
    """ipykernel warned before every stage's output that it ran over TCP without encryption: the stage's kernel
    now gets CurveZMQ keys from its manager, so its channels are encrypted and the warning is gone."""
    result = subprocess.run([sys.executable, "-c", ENCRYPTED, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "without encryption" not in result.stderr, result.stderr
    outputs = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].outputs
    assert "".join(o.get("text", "") for o in outputs).strip() == "curve True"


def test_a_libzmq_without_curvezmq_runs_stages_unencrypted(monkeypatch):
    """jupyter_client refuses transport_encryption "auto" when libzmq lacks CurveZMQ: such a build must still
    run stages, over plain local TCP as before."""
    import zmq

    from stfusion.pipeline.stages import EncryptedKernelManager

    assert EncryptedKernelManager().transport_encryption == ("auto" if zmq.has("curve") else "disabled")
    has = zmq.has
    monkeypatch.setattr(zmq, "has", lambda capability: False if capability == "curve" else has(capability))
    assert EncryptedKernelManager().transport_encryption == "disabled"


CHILD = """
import sys, nbformat
from pathlib import Path
from stfusion.pipeline.stages import execute
nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                       "language": "python"}})
nb.cells = [nbformat.v4.new_code_cell("marker = ''", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("import os, pathlib, time\\nfrom stfusion.io import atomic_dir\\n"
                                      "with atomic_dir(pathlib.Path(marker).parent / 'out') as tmp:\\n"
                                      "    (tmp / 'part').write_text('half')\\n"
                                      "    pathlib.Path(marker).write_text(str(os.getpid()))\\n"
                                      "    time.sleep(60)")]
folder = Path(sys.argv[1])
nbformat.write(nb, folder / "t.ipynb")
if sys.argv[2] == "handled":  # as `stfusion stage` takes SIGTERM: its own cleanup runs, then one line
    import signal
    from stfusion.cli import _terminate
    signal.signal(signal.SIGTERM, _terminate)
try:
    execute(folder / "t.ipynb", folder / "out.ipynb", {"marker": str(folder / "pid")}, folder)
except KeyboardInterrupt:
    sys.exit(143)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's guard uses Linux's prctl")
@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM"])
def test_a_killed_stage_runner_takes_its_kernel_with_it_and_nothing_partial_stays(tmp_path, stop):
    """kill -9 or kill of `stfusion stage` interrupts its kernel at once: the cell's atomic output is removed,
    not left half-written, and the kernel is gone within the grace period, quietly."""
    import os
    import signal
    import time
    from pathlib import Path

    from stfusion.pipeline.kernel import GRACE

    stderr = (tmp_path / "stderr").open("w")  # the kernel's too: it inherits the runner's
    runner = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), "handled"], stderr=stderr)
    marker = tmp_path / "pid"
    deadline = time.monotonic() + 60
    while not (marker.is_file() and marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    kernel = int(marker.read_text())
    assert list(tmp_path.glob(".out.*.tmp"))
    os.kill(runner.pid, getattr(signal, stop))
    runner.wait()
    killed = time.monotonic()

    def running() -> bool:
        try:
            return Path(f"/proc/{kernel}/stat").read_text().split()[2] != "Z"
        except FileNotFoundError:
            return False

    while running() and time.monotonic() - killed < 10:
        time.sleep(0.01)
    assert time.monotonic() - killed < GRACE + 0.5
    assert not list(tmp_path.glob(".out.*.tmp")) and not (tmp_path / "out").exists()
    assert "Traceback" not in (tmp_path / "stderr").read_text()  # nor ipykernel's, replying to a runner that is gone
