"""End-to-end: `stfusion study --profile smoke` (what `make study` runs, `dvc repro` with the datasets
side by side, for the smoke profile in studies/smoke/) of the whole pipeline, in a copy of the repository.

The copy holds what git would commit (tracked and untracked-but-not-ignored files), so the test
sees exactly what a fresh clone sees.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from stfusion.paths import find_root

pytestmark = pytest.mark.e2e
ROOT = find_root()
DATASETS = ("cia-sim", "lgc-sim")
BASELINES = ("persistence", "temporal-difference", "starfm", "fsdaf", "estarfm")
ONE_PAIR = tuple(m for m in BASELINES if m != "estarfm")  # the robustness sweep degrades one reference pair
DEEP = ("dcstfn", "edcstfn", "gan-stfm", "mcbam-gan", "swinstfm", "stfdiff")
METHODS = BASELINES + DEEP
VARIANTS = ("depth-1", "cbam")  # profiles/smoke.yaml: two of the MCBAM-GAN ablation's variants
SEEDS = (42, 43)  # profiles/smoke.yaml seeds
ENSEMBLES = tuple(f"{m}-ensemble" for m in DEEP)
FIGURES = ("boxplots", "change", "scatter", "scene", "crop", "training", "ablation", "uncertainty", "differences")


def _run(args, cwd, env):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    repo = tmp_path_factory.mktemp("study")
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONDONTWRITEBYTECODE": "1", "STFUSION_ROOT": str(repo), "MPLBACKEND": "Agg",
           "PYTHONPATH": str(repo / "src"),  # the copy's code, as a fresh clone runs it
           "GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.invalid",
           "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@example.invalid"}
    _run(["git", "init", "-q"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "smoke"], repo, env)
    start = time.perf_counter()
    log = _run(["stfusion", "study", "--profile", "smoke"], repo, env)  # the datasets side by side
    return repo / "studies" / "smoke", env, log, time.perf_counter() - start


def test_repro_writes_every_report(smoke_study):
    study, _, log, seconds = smoke_study
    print(f"smoke stfusion study: {seconds:.1f} s")
    assert "[cia-sim] Running stage 'train@cia-sim-" in log and "[lgc-sim] Running stage 'train@lgc-sim-" in log
    for dataset in DATASETS:
        for kind in FIGURES:
            assert (study / "reports" / "figures" / "png" / f"{kind}_{dataset}.png").stat().st_size > 10_000, kind
            assert (study / "reports" / "figures" / "pdf" / f"{kind}_{dataset}.pdf").is_file(), kind
        assert (study / "reports" / "tables" / f"metrics_{dataset}.md").is_file()
        assert (study / "reports" / "tables" / f"ablation_{dataset}.md").is_file()
        robustness = pd.read_csv(study / "reports" / "robustness" / dataset / "robustness.csv")
        assert set(robustness["method"]) == set(ONE_PAIR) | set(DEEP)
        assert (study / "reports" / "robustness" / dataset / "robustness.png").stat().st_size > 10_000
        for stage in ("download", "preprocess", "robustness"):
            assert (study / "reports" / "notebooks" / f"{stage}-{dataset}.ipynb").is_file()
        assert (study / "reports" / "notebooks" / f"ablation-{dataset}.ipynb").is_file()  # every variant, one run
        for variant in VARIANTS:
            run = json.loads((study / "data" / "ablation" / dataset / variant / "run.json").read_text())
            assert run["variant"] == variant and run["method"] == "mcbam-gan" and run["parameters"] > 0
            assert run["device"] == "cpu" and run["train_seconds"] > 0
        for method in BASELINES:
            assert (study / "reports" / "notebooks" / f"predict-{dataset}-{method}.ipynb").is_file()
        for method, seed in ((m, s) for m in DEEP for s in SEEDS):
            assert (study / "reports" / "notebooks" / f"train-{dataset}-{method}-seed-{seed}.ipynb").is_file()
    assert (study / "reports" / "tables" / "scores.csv").is_file()
    assert len(list((study / "reports" / "tables" / "paper").glob("*.tex"))) == 8
    report = (study / "reports" / "README.md").read_text()
    assert "## Headline" in report and "significance" not in report.split("## Headline")[0] and "figures/png/scene_cia-sim.png" in report
    assert "smoke profile" in report and "robustness/cia-sim/robustness.png" in report
    # Tables 2-4: this study's rows for the variants run and for the full model (train stage)
    table2 = (study / "reports" / "tables" / "paper" / "mcbam-gan-table2.md").read_text()
    assert "this study" in table2
    ablation = pd.read_csv(study / "reports" / "tables" / "ablation_scores.csv")
    assert set(ablation["method"]) == {*VARIANTS, "depth-3", "multi-scale+cbam+aff+multi-loss"}
    assert not list((study / "data").rglob("*.tmp")) and not list((study / "reports").rglob("*.tmp"))


def test_metrics_show_both_predictors_and_coarse_change_helps(smoke_study):
    study, env, _, _ = smoke_study
    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], study, env))
    metrics = {Path(path).stem: values["data"] for path, values in shown[""]["data"].items()
               if not path.startswith("..")}  # the project's default study shows its own metrics too
    assert set(metrics) == set(DATASETS)
    for dataset, values in metrics.items():
        assert set(values) == set(METHODS + ENSEMBLES)
        for method in ("temporal-difference", "starfm", "fsdaf"):  # the coarse change must help on the synthetic scenes
            assert values[method]["rmse"] < values["persistence"]["rmse"], (dataset, method)
        # the headline only (no changed-pixel RMSE where a tiny smoke scene has no changed pixel)
        assert {"rmse", "ssim", "sam"} <= set(values["dcstfn"]) <= {"rmse", "ssim", "sam", "rmse_changed"}


def test_every_deep_model_is_scored_per_seed_and_as_an_ensemble_and_compared(smoke_study):
    study = smoke_study[0]
    tables = study / "reports" / "tables"
    scores = pd.read_csv(tables / "scores.csv")
    deep = scores[scores["method"].isin(DEEP)]
    assert set(deep["seed"]) == set(SEEDS) and scores[scores["method"].isin(BASELINES + ENSEMBLES)]["seed"].isna().all()
    differences = pd.read_csv(tables / "differences.csv")
    reference = differences[differences["comparison"] == "vs temporal-difference"]
    assert set(reference["method"]) == set(METHODS + ENSEMBLES) - {"temporal-difference"}
    assert (reference["low"] <= reference["difference"]).all() and (reference["difference"] <= reference["high"]).all()
    assert set(pd.read_csv(tables / "ranking.csv")["method"]) == set(METHODS + ENSEMBLES)
    coverage = pd.read_csv(tables / "coverage.csv")
    assert set(ENSEMBLES) | {"stfdiff"} <= set(coverage["method"])
    assert coverage["coverage_90"].dropna().between(0, 1).all() and coverage["coverage_90"].notna().any()
    for dataset in DATASETS:
        assert list((study / "data" / "ensembles" / dataset / "dcstfn-ensemble").glob("*_std.tif"))
    report = (study / "reports" / "README.md").read_text()
    assert "temporal-difference" in report.split("## Headline")[1].split("##")[0]


def test_second_repro_reruns_nothing_quickly(smoke_study):
    study, env, _, _ = smoke_study
    start = time.perf_counter()
    log = _run(["dvc", "repro"], study, env)  # a plain repro finds everything `stfusion study` made up to date
    seconds = time.perf_counter() - start
    assert "Running stage" not in log
    assert seconds < 10, f"a no-op dvc repro took {seconds:.1f} s"
    assert "up to date" in _run(["dvc", "status", "dvc.yaml"], study, env)


def test_plots_show_renders_the_figures(smoke_study):
    study, env, _, _ = smoke_study
    log = _run(["dvc", "plots", "show", "-o", "plots-html"], study, env)
    assert "failed" not in log.lower()
    # from a profile's folder DVC shows the project's default study too (workspace_.._.._reports_...)
    ours = [p for p in (study / "plots-html" / "static").glob("*.png") if p.name.startswith("workspace_reports_")]
    assert len(ours) == len(DATASETS) * len(FIGURES)


def test_deep_models_leave_weights_history_and_curves(smoke_study):
    study = smoke_study[0]
    for dataset in DATASETS:
        assert (study / "data" / "autoencoders" / dataset / "autoencoder.pt").is_file()
        for method, seed in ((m, s) for m in DEEP for s in SEEDS):
            folder = study / "data" / "predictions" / dataset / method / f"seed-{seed}"
            assert {"model.pt", "history.csv", "run.json"} <= {p.name for p in folder.iterdir()}
            assert json.loads((folder / "run.json").read_text())["seed"] == seed
            run = json.loads((folder / "run.json").read_text())
            assert run["parameters"] > 0 and run["train_seconds"] > 0 and run["best_epoch"] is not None
            assert run["cpu_threads"] == 1  # profiles/smoke.yaml train.threads
            assert (study / "reports" / "tables" / "training" / f"{dataset}_{method}.csv").is_file()
        assert not (study / "data" / "checkpoints" / dataset).exists() or not any((study / "data" / "checkpoints" / dataset).iterdir())


def test_stfdiff_records_sampling_and_writes_uncertainty(smoke_study):
    study = smoke_study[0]
    runs = pd.read_csv(study / "reports" / "tables" / "runs.csv")
    stfdiff = runs[runs["method"] == "stfdiff"]
    assert len(stfdiff) == len(DATASETS) * len(SEEDS)
    assert (stfdiff[["sampling_steps", "sampling_eta", "sampling_samples"]].to_numpy() == [2, 0.0, 2]).all()
    deciles = pd.read_csv(study / "reports" / "tables" / "uncertainty.csv")
    assert set(deciles["dataset"]) == set(DATASETS) and set(deciles["method"]) == {"stfdiff", *ENSEMBLES}
    assert (deciles["std_mean"] > 0).all() and (deciles["decile"].between(1, 10)).all()
    for dataset in DATASETS:
        assert list((study / "data" / "predictions" / dataset / "stfdiff" / "seed-42").glob("*_std.tif"))
        assert (study / "reports" / "figures" / "png" / f"uncertainty_{dataset}.png").stat().st_size > 10_000


def test_dag_shows_every_stage(smoke_study):
    study, env, _, _ = smoke_study
    dag = _run(["dvc", "dag", "--md"], study, env)
    for stage in ("download@cia-sim", "preprocess@lgc-sim", "predict@cia-sim-persistence", "train@lgc-sim-dcstfn-43", "ablation@lgc-sim",
                  "sources", "evaluate", "figures", "report", "robustness@cia-sim"):
        assert stage in dag


def _stale_after(study, env, path: str, edit) -> set[str]:
    """The stages `dvc status` finds out of date after ``edit`` changes ``path`` (the sources stage rerun
    first, as `dvc repro` would); ``path`` is restored and the sources rewritten afterwards."""
    target = study.parents[1] / path  # the project root: the study is studies/smoke/
    original = target.read_text()
    try:
        target.write_text(edit(original))
        _run(["dvc", "repro", "sources"], study, env)
        return set(json.loads(_run(["dvc", "status", "--json", "dvc.yaml"], study, env)))
    finally:
        target.write_text(original)
        _run(["dvc", "repro", "sources"], study, env)


def _lr(model: str):
    """An edit of params.yaml: another learning rate for ``model`` at the quick tier."""
    def edit(text: str) -> str:
        import yaml

        params = yaml.safe_load(text)
        params["models"][model]["quick"]["lr"] *= 2
        return yaml.safe_dump(params, sort_keys=False)
    return edit


def _comment(text: str) -> str:
    return text + "\n# an edit\n"


def _seeds(text: str) -> str:
    """An edit of params.yaml: one more training seed."""
    import yaml

    params = yaml.safe_load(text)
    params["seeds"] = [*params["seeds"], 7]
    return yaml.safe_dump(params, sort_keys=False)


def _train(model: str) -> set[str]:
    return {f"train@{d}-{model}-{s}" for d in DATASETS for s in SEEDS}


ROBUSTNESS = {f"robustness@{d}" for d in DATASETS}  # runs every method, and draws with the methods' styles


@pytest.mark.parametrize("path, edit, expected", [
    ("src/stfusion/reporting/plots.py", _comment, {"figures", "report"}),
    ("src/stfusion/reporting/styles.py", _comment, {"figures", "report"} | ROBUSTNESS),
    ("src/stfusion/reporting/report.py", _comment, {"report"}),
    ("src/stfusion/methods/models/dcstfn.py", _comment, _train("dcstfn") | ROBUSTNESS),
    ("src/stfusion/methods/baselines/starfm.py", _comment, {f"predict@{d}-starfm" for d in DATASETS} | ROBUSTNESS),
    ("src/stfusion/methods/models/mcbam_gan.py", _comment,
     _train("mcbam-gan") | {f"ablation@{d}" for d in DATASETS} | ROBUSTNESS),
    # a parameter edit: the check stage (every parameter) and the stages that use it
    ("studies/smoke/params.yaml", _lr("swinstfm"), {"check"} | _train("swinstfm")),
    ("studies/smoke/params.yaml", _lr("mcbam-gan"),
     {"check"} | _train("mcbam-gan") | {f"ablation@{d}" for d in DATASETS}),
    # a new seed: its own train stages (new) and what reads every run; no other seed's stage
    ("studies/smoke/params.yaml", _seeds, {"check"} | {f"train@{d}-{m}-7" for d in DATASETS for m in DEEP}
     | {"evaluate", "report"}),
])
def test_an_edit_reruns_only_the_stages_that_use_it(smoke_study, path, edit, expected):
    study, env, _, _ = smoke_study
    assert _stale_after(study, env, path, edit) == expected
    assert "up to date" in _run(["dvc", "status", "dvc.yaml"], study, env)


def _without(section: str):
    def edit(params: dict) -> None:
        del params[section]
    return edit


def _set(value, *keys: str):
    def edit(params: dict) -> None:
        target = params
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return edit


@pytest.mark.parametrize("edit, message", [
    (_without("evaluate"), "evaluate: expected this parameter to be set"),
    (_set(-1.0, "models", "dcstfn", "quick", "lr"), "models.dcstfn"),
    (_set("x", "seed"), "seed: expected an integer"),
    (_set(4096, "models", "swinstfm", "quick", "patch_size"), "models.swinstfm.quick.patch_size"),
])
def test_a_bad_params_yaml_stops_at_the_check_stage_and_deletes_nothing(smoke_study, edit, message):
    """DVC removes a stage's outputs before its command runs: the check stage runs first and refuses, so every
    output is still there byte for byte (the check's own small output comes back with the next repro)."""
    import yaml

    study, env, _, _ = smoke_study
    snapshot = lambda: {p: p.read_bytes() for p in sorted(study.rglob("*"))  # noqa: E731
                        if p.is_file() and ".dvc" not in p.relative_to(study).parts[:1]}
    before = snapshot()
    params_path = study / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    edit(params)
    try:
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        result = subprocess.run(["dvc", "repro"], cwd=study, env=env, capture_output=True, text=True)
        output = result.stdout + result.stderr
        assert result.returncode != 0 and message in output
        assert "Running stage 'check'" in output and "Running stage 'train" not in output
    finally:
        params_path.write_text(original)
    _run(["dvc", "repro"], study, env)  # the check again, and nothing else: every other stage is up to date
    assert snapshot() == before


def test_the_profile_study_leaves_the_default_study_alone(smoke_study):
    study = smoke_study[0]
    project = study.parents[1]
    assert (project / "params.yaml").read_text() == (ROOT / "params.yaml").read_text()
    assert (project / "dvc.lock").read_text() == (ROOT / "dvc.lock").read_text()
    assert not list((project / "reports" / "notebooks").glob("*.ipynb"))  # no stage of the default study ran
    assert "profile: smoke" in (study / "params.yaml").read_text() and (study / "dvc.lock").is_file()


@pytest.fixture(scope="module")
def pulled(smoke_study, tmp_path_factory):
    """The smoke study pushed to a temporary remote and pulled into a fresh clone: what a reader of the study does
    instead of retraining (docs/sharing.md)."""
    study, env, _, trained = smoke_study
    project, remote, where = study.parents[1], tmp_path_factory.mktemp("remote"), tmp_path_factory.mktemp("reader")
    _run(["git", "add", "-A"], project, env)  # the results, committed as `make full` users commit theirs
    _run(["git", "commit", "-qm", "smoke study results"], project, env)
    start = time.perf_counter()
    _run(["stfusion", "push", "--profile", "smoke", "--remote", str(remote)], project, env)
    pushed = time.perf_counter() - start
    clone = where / "clone"
    _run(["git", "clone", "-q", str(project), str(clone)], where, env)
    reader = {**env, "STFUSION_ROOT": str(clone), "PYTHONPATH": str(clone / "src"), "STFUSION_REMOTE": str(remote)}
    start = time.perf_counter()
    _run(["stfusion", "pull", "--profile", "smoke"], clone, reader)
    seconds = {"trained": trained, "pushed": pushed, "pulled": time.perf_counter() - start}
    print(f"smoke study: trained in {trained:.0f} s, pushed in {pushed:.1f} s, pulled in {seconds['pulled']:.1f} s")
    return clone / "studies" / "smoke", reader, remote, seconds


def test_a_clone_pulls_the_study_instead_of_retraining(smoke_study, pulled):
    study, reader, _, seconds = pulled
    assert "up to date" in _run(["dvc", "status", "dvc.yaml"], study, reader)
    assert "Running stage" not in _run(["dvc", "repro"], study, reader)
    for path in ("reports/README.md", "reports/tables/scores.csv", "data/models/cia-sim/dcstfn/seed-42.safetensors"):
        assert (study / path).read_bytes() == (smoke_study[0] / path).read_bytes(), path
    assert seconds["pulled"] < seconds["trained"] / 5


def _fuse_with(weights: Path, raw: Path, out: Path, env: dict) -> str:
    dates = sorted(p.stem for p in (raw / "fine").glob("*.tif"))
    return _run(["stfusion", "fuse", "--weights", str(weights), "--fine-ref", str(raw / "fine" / f"{dates[0]}.tif"),
                 "--coarse-ref", str(raw / "coarse" / f"{dates[0]}.tif"), "--coarse-target",
                 str(raw / "coarse" / f"{dates[1]}.tif"), "--out", str(out)], out.parent, env)


def test_pulled_weights_fuse_and_carry_their_card(pulled, tmp_path):
    study, reader, _, _ = pulled
    weights = study / "data" / "models" / "cia-sim" / "swinstfm" / "seed-43.safetensors"
    card = _run(["stfusion", "info", "weights", str(weights)], study, reader)
    for text in ("swinstfm, quick tier", "cia-sim: 6 bands", "seed 43", "test ", "rmse", "commit "):
        assert text in card, text
    assert "wrote" in _fuse_with(weights, study / "data" / "raw" / "cia-sim", tmp_path / "p.tif", reader)


def test_another_repository_gets_one_model_with_dvc_get_and_import(pulled, tmp_path):
    """A user's own project takes one trained model from the study's repository (here a local clone) without
    cloning it or pulling anything else."""
    study, reader, remote, _ = pulled
    source = study.parents[1]
    path = "studies/smoke/data/models/lgc-sim/mcbam-gan/seed-42.safetensors"
    user = tmp_path / "user"
    user.mkdir()
    _run(["dvc", "get", str(source), path, "-o", "mcbam-gan.safetensors", "--remote-config", f"url={remote}"],
         user, reader)
    assert (user / "mcbam-gan.safetensors").read_bytes() == (study.parents[1] / path).read_bytes()
    _run(["git", "init", "-q"], user, reader)
    _run(["dvc", "init", "-q"], user, reader)
    _run(["dvc", "import", str(source), path, "-o", "imported.safetensors", "--remote-config", f"url={remote}"],
         user, reader)
    assert (user / "imported.safetensors.dvc").is_file()
    assert "wrote" in _fuse_with(user / "imported.safetensors", study / "data" / "raw" / "lgc-sim", user / "p.tif",
                                 reader)
