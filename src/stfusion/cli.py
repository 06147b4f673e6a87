"""The ``stfusion`` command line.

- ``stfusion stage NAME [--dataset D] [--method M] [--seed S]``: run one pipeline stage (what DVC calls).
- ``stfusion study [--lanes N]``: the whole pipeline, the datasets' chains side by side (``make study``).
- ``stfusion info datasets|methods|stages``: what the study knows.
- ``stfusion info models [--json]``: every deep model with its family, both tiers and their
  parameter counts (generator, and discriminator for GANs), built from params.yaml.
- ``stfusion info weights PATH [--json]``: the card of a weights file (model, data, training, scores, code).
- ``stfusion push|pull [--profile P] [--remote R]``: share a study's outputs through a DVC remote.
- ``stfusion acquire DATASET [--raw-dir DIR]``: make a dataset's raw files available.
- ``stfusion fuse --method M --fine-ref F1 --coarse-ref C1 --coarse-target C2 --out P.tif``: fuse
  your own images with a method that needs no training, or with a trained deep model
  (``--weights model.pt`` instead of ``--method``).
- ``stfusion evaluate --pred P --truth T [--mask M] [--ratio N] [--reflectance-scale S] [--json]``: score any
  two rasters (GeoTIFF, ENVI, anything GDAL reads) with the study's metrics.

Errors the user can fix print one clear message (no traceback; ``--debug`` shows it) and exit with status 2;
Ctrl-C prints one line and exits with status 130 (outputs are written atomically, so earlier ones stay whole).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from stfusion.errors import ConfigError, StfusionError


def _info(args: argparse.Namespace) -> None:
    from stfusion.data.datasets import dataset_names, get_dataset
    from stfusion.methods.registry import METHODS
    from stfusion.pipeline.stages import STAGES

    if args.what == "datasets":
        from stfusion.pipeline.params import load_params

        load_params(args.params, build_models=False)  # registers the sites of download.sites
        for d in map(get_dataset, dataset_names()):
            stands = f"stands for {d.paper.upper()}" if d.paper else "your own site"
            print(f"{d.name:22s} {d.kind:10s} {stands}; {d.acquisition}")
    elif args.what == "methods":
        # A deep model's size is its generator's at the tier params.yaml selects (the registry knows none).
        selected = [r for r in model_table(args.params) if r["selected"] and not r["variant"]]
        sizes = {r["model"]: r["parameters"] for r in selected}
        for m in METHODS.values():
            print(f"{m.name:22s} {m.family:12s} {sizes.get(m.name, m.parameters):>10,d} parameters  {m.description}")
        if selected:
            print(f"(deep models: the generator at the {selected[0]['tier']} tier that train.tier selects; "
                  "both tiers: stfusion info models)")
    elif args.what == "models":
        _info_models(args.json, args.params)
    elif args.what == "weights":
        _info_weights(args.path, args.json)
    else:
        for name, stage in STAGES.items():
            print(f"{name:12s} notebooks/{stage.notebook}")


def model_table(params_path: str | None = None) -> list[dict]:
    """One row per model (and ablation variant, ``variant`` set) and tier: family, parameter counts."""
    from stfusion.pipeline.params import load_params
    from stfusion.methods.models import AUTOENCODER, MODELS
    from stfusion.train.config import TIERS, tier_settings, train_config, variant_settings

    params = load_params(params_path)
    selected = params["train"]["tier"]
    rows = []
    for name in [*MODELS, AUTOENCODER]:
        if name in params["models"]:
            rows += [_model_row(name, None, tier, tier_settings(params["models"], name, tier), selected)
                     for tier in TIERS]
    ablation = params["ablation"]
    if ablation["model"] in params["models"]:
        for variant in ablation["settings"]:
            rows += [_model_row(ablation["model"], variant, tier, train_config(
                variant_settings(params, variant, tier), key=f"ablation.settings.{variant}"), selected)
                for tier in TIERS]
    return rows


def _model_row(name: str, variant: str | None, tier: str, config, selected: str) -> dict:
    from stfusion.methods.models import AUTOENCODER, MODELS, build_autoencoder, build_model, construct, count_parameters

    if name == AUTOENCODER:
        model, family, discriminator = build_autoencoder(config.arch), "feature encoder", 0
    else:
        spec = MODELS[name]
        model, family = build_model(name, config.arch), spec.family
        discriminator = (count_parameters(construct(spec.discriminator_class(), dict(config.discriminator),
                                                    key=f"models.{name}.{tier}.discriminator"))
                         if spec.discriminator else 0)
    return {"model": name, "variant": variant, "family": family, "tier": tier, "parameters": count_parameters(model),
            "discriminator_parameters": discriminator, "arch": config.arch, "selected": tier == selected}


def _info_models(as_json: bool, params_path: str | None) -> None:
    import json

    rows = model_table(params_path)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'model':34s} {'family':16s} {'tier':6s} {'generator':>11s} {'discriminator':>14s}")
    for r in rows:
        mark = " *" if r["selected"] else ""
        label = r["model"] if r["variant"] is None else f"{r['model']} [{r['variant']}]"
        print(f"{label:34s} {r['family']:16s} {r['tier']:6s} {r['parameters']:>11,d} "
              f"{format(r['discriminator_parameters'], ',d') if r['discriminator_parameters'] else '':>14s}{mark}")
    print("* = the tier params.yaml's train.tier selects")


def _info_weights(path: str | None, as_json: bool) -> None:
    import json

    from stfusion.inference.weights import read_card
    from stfusion.reporting.exports import card_text

    if path is None:
        raise ConfigError("info weights: give the weights file, e.g. stfusion info weights "
                          "data/models/cia-sim/swinstfm/seed-42.safetensors")
    card = read_card(path)
    print(json.dumps(card, indent=2, sort_keys=True) if as_json else card_text(card, path))


def _push(args: argparse.Namespace) -> None:
    from stfusion.pipeline.remote import push

    done = push(args.profile, args.remote)
    print(f"pushed {done['files']} file(s) of {done['folder']} to {done['remote']} in {done['seconds']:.1f} s "
          "(files already there are skipped)")


def _pull(args: argparse.Namespace) -> None:
    from stfusion.pipeline.remote import pull

    done = pull(args.profile, args.remote)
    print(f"pulled {done['files']} file(s) into {done['folder']} from {done['remote']} in {done['seconds']:.1f} s")
    if done["stale"]:
        print(f"{len(done['stale'])} stage(s) differ from dvc.lock all the same (the code or parameters changed since "
              f"the study ran; `dvc status` says how), such as {done['stale'][0]}: `dvc repro` would rerun them")
    else:
        print("every stage is up to date: `dvc repro` reruns nothing")


def _stage(args: argparse.Namespace) -> None:
    # jsonschema (under the runner's nbformat) imports rfc3987-syntax, when installed, for its "iri"
    # string format, which builds a parser at import: 2.1 s of the 3.1 s the runner took to import
    # (python -X importtime), at every stage. Notebook validation never checks that format.
    sys.modules.setdefault("rfc3987_syntax", None)
    from stfusion.pipeline.stages import run_stage

    path = run_stage(args.name, dataset=args.dataset, method=args.method, seed=args.seed, params_path=args.params)
    print(f"executed notebook: {path}")


def _study(args: argparse.Namespace) -> None:
    from stfusion.pipeline.study import run_study

    run_study(args.lanes, args.profile)


def _rehearse(args: argparse.Namespace) -> None:
    from stfusion.rehearsal.run import rehearse

    rehearse(args.stages or None)


def _gpu_check(args: argparse.Namespace) -> None:
    from stfusion.rehearsal.gpu import gpu_check

    gpu_check(Path(args.out), models=args.models or None)


def _sources(args: argparse.Namespace) -> None:
    from stfusion.paths import find_root
    from stfusion.pipeline.sources import write_sources

    paths = write_sources(find_root() / "data" / "sources")
    print(f"sources: the code of {len(paths)} stages and methods in {paths[0].parent}")


def _check(args: argparse.Namespace) -> None:
    from stfusion.pipeline.check import check_study

    print(f"check: every parameter is valid; wrote {check_study(args.params)}")


def _acquire(args: argparse.Namespace) -> None:
    from stfusion.data.sources import acquire
    from stfusion.paths import Workspace
    from stfusion.pipeline.params import load_params

    load_params(args.params, build_models=False)  # registers the sites of download.sites
    manifest = acquire(args.dataset, Workspace.resolve(".").raw(args.dataset), raw_dir=args.raw_dir)
    print(f"{manifest.dataset}: {len(manifest.dates)} dates, manifest {manifest.path}")


def _example_site(args: argparse.Namespace) -> None:
    from stfusion.data.example_site import write_example_site

    folder = write_example_site(args.folder)
    print(f"wrote the example site to {folder}; add it to params.yaml as download: sites: "
          f"{{example: {args.folder}}} and datasets: [example] (docs/sites.md)")


def _evaluate(args: argparse.Namespace) -> None:
    import json
    import math

    from stfusion.evaluation.scores import format_scores, score_files

    result = score_files(args.pred, args.truth, args.mask, ratio=args.ratio, reflectance_scale=args.reflectance_scale)
    if args.json:
        # JSON has no NaN or infinity: an undefined score (or the PSNR of a perfect match) is null.
        for values in result["scores"].values():
            values.update({k: (v if math.isfinite(v) else None) for k, v in values.items()})
        print(json.dumps(result, indent=2))
    else:
        print(format_scores(result))


def _fuse(args: argparse.Namespace) -> None:
    import warnings

    from stfusion.data.units_check import outside_summary
    from stfusion.inference.fuse import NoGeoreferenceWarning, fuse_files

    if args.site is not None:
        return _fuse_series(args)
    for option in ("fine_ref", "coarse_target", "out"):
        if getattr(args, option) is None:
            raise ConfigError(f"--{option.replace('_', '-')}: required (or fuse a whole site with --site and --out-dir)")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NoGeoreferenceWarning)
        result = fuse_files(args.method, args.fine_ref, args.coarse_ref, args.coarse_target, args.out,
                            ratio=args.ratio, window=args.window, reflectance_scale=args.reflectance_scale,
                            weights=args.weights,
                            tile=args.tile, samples=args.samples, seed=args.seed, device=args.device,
                            block=args.block, overwrite=args.overwrite)
    for warning in caught:  # one plain line each, like the errors
        print(f"stfusion: warning: {warning.message}", file=sys.stderr)
    std = f" and its samples' std to {result['std']}" if result["std"] else ""
    print(f"{result['method']}: wrote {result['out']}{std} ({result['bands']} bands, {result['pixels']} valid pixels)")
    if result["fallback"]:
        print(f"{result['method']}: {result['fallback']} of them found no similar pixel and hold the temporal-difference "
              "value F1 + (C2 - C1) (tag fallback_pixels)")
    if summary := outside_summary(result["outside"]):
        print(f"{result['method']}: {summary}")
    if result["removed"]:
        print(f"{result['method']}: removed {result['removed']}, the replaced prediction's std (this one has none)")


def _fuse_series(args: argparse.Namespace) -> None:
    from stfusion.inference.series import fuse_site

    single = [f"--{o.replace('_', '-')}" for o in ("fine_ref", "coarse_ref", "coarse_target", "out", "ratio",
                                                   "reflectance_scale") if getattr(args, o) is not None]
    if single:
        raise ConfigError(f"{single[0]}: not with --site (the site's files and site.yaml say it all)")
    if args.out_dir is None:
        raise ConfigError("--out-dir: required with --site (one file per target date goes there)")
    results = fuse_site(args.site, args.out_dir, method_name=args.method, weights=args.weights, targets=args.targets,
                        min_clear=args.min_clear, window=args.window, tile=args.tile, samples=args.samples,
                        seed=args.seed, device=args.device, block=args.block, overwrite=args.overwrite)
    for result in results:
        print(f"{result.target}: {result.status} {result.out} (from {' and '.join(result.references)})")


REFLECTANCE_SCALE_OPTION = {"type": float, "default": None, "metavar": "S",
                            "help": "stored units per unit reflectance: values are divided by it (default: 10000 "
                            "for integer files, 1 for float files)"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stfusion", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)
    stage = commands.add_parser("stage", help="run one pipeline stage (its notebook) with params.yaml")
    stage.add_argument("name")
    stage.add_argument("--dataset")
    stage.add_argument("--method")
    stage.add_argument("--seed", type=int, help="the training seed (train stage: one of params.yaml 'seeds')")
    stage.add_argument("--params", help="parameter file (default: params.yaml of the project)")
    stage.set_defaults(run=_stage)
    study = commands.add_parser("study", help="the whole pipeline (dvc repro), the datasets side by side")
    study.add_argument("--lanes", type=int, default=None,
                       help="datasets trained side by side (default: one lane per dataset, at most one per core)")
    study.add_argument("--profile", help="a profile of profiles/ (smoke, full), run in studies/<profile>/ "
                       "(default: the default study, params.yaml, here)")
    study.set_defaults(run=_study)
    rehearse = commands.add_parser("rehearse", help="rehearse the full reproduction on this machine: mock CIA and "
                                   "LGC at full size from a local portal, every stage with the models cut to a few "
                                   "steps, each stage's time and memory (studies/rehearsal/rehearsal.csv)")
    rehearse.add_argument("stages", nargs="*", help="only these stages, by DVC name (e.g. download@cia; default: all)")
    rehearse.set_defaults(run=_rehearse)
    gpu = commands.add_parser("gpu-check", help="check a GPU machine for the full reproduction in minutes: every "
                              "paper-tier model trains and predicts a CIA-size scene, baselines and metrics against "
                              "the CPU, a DDP run under torchrun; throughput, memory, estimated GPU hours")
    gpu.add_argument("--out", default="reports/gpu-check", help="folder of gpu-check.json (default: reports/gpu-check)")
    gpu.add_argument("--models", nargs="*", help="only these models (default: the autoencoder and every deep model)")
    gpu.set_defaults(run=_gpu_check)
    sources = commands.add_parser("sources", help="write data/sources/<unit>.json: the code each pipeline stage "
                                  "and method runs (the sources stage)")
    sources.set_defaults(run=_sources)
    check = commands.add_parser("check", help="check every parameter of params.yaml and write data/checked.json "
                                "(the check stage, before any stage's outputs are removed)")
    check.add_argument("--params", default=None, help="parameter file (default: the study's params.yaml)")
    check.set_defaults(run=_check)
    info = commands.add_parser("info", help="list datasets, methods, models or stages; print a weights file's card")
    info.add_argument("what", choices=["datasets", "methods", "models", "stages", "weights"])
    info.add_argument("path", nargs="?", help="weights: the file (.safetensors or model.pt)")
    info.add_argument("--json", action="store_true", help="models, weights: print JSON")
    info.add_argument("--params", help="models, datasets: parameter file (default: params.yaml of the project)")
    info.set_defaults(run=_info)
    for name, run, what in (("push", _push, "upload a study's outputs to a DVC remote (make push)"),
                            ("pull", _pull, "fetch a study's outputs from a DVC remote instead of retraining (make pull)")):
        share = commands.add_parser(name, help=what)
        share.add_argument("--profile", help="the profile's study (studies/<profile>/; default: the default study)")
        share.add_argument("--remote", help="a DVC remote's name or URL (default: $STFUSION_REMOTE, else DVC's default "
                           "remote, a local folder; docs/sharing.md)")
        share.set_defaults(run=run)
    acquire = commands.add_parser("acquire", help="generate, download or read (a site) one dataset into data/raw/")
    acquire.add_argument("dataset")
    acquire.add_argument("--raw-dir", help="folder holding real CIA/LGC files you downloaded yourself")
    acquire.add_argument("--params", help="parameter file whose download.sites names your sites (default: params.yaml)")
    acquire.set_defaults(run=_acquire)
    example = commands.add_parser("example-site", help="write a worked example of your own site into a new folder: "
                                  "Sentinel-2-like 10 m and Sentinel-3-like 300 m files in another CRS, with site.yaml")
    example.add_argument("folder")
    example.set_defaults(run=_example_site)
    fuse = commands.add_parser("fuse", help="fuse your own images with any method, trained models included",
                               description="Predict the fine image of a target date from a fine/coarse reference "
                               "pair and the target's coarse image (coarse images on the fine grid), with a method "
                               "that needs no training (--method) or a trained deep model (--weights); or, with "
                               "--site, every target date of a site's time series.")
    fuse.add_argument("--method", help="a method without training (see `stfusion info methods`); with --weights, "
                      "the model the file must hold")
    fuse.add_argument("--weights", help="a trained model: an exported .safetensors (data/models/<dataset>/<model>/"
                      "seed-<seed>.safetensors) or the train stage's model.pt")
    fuse.add_argument("--site", help="fuse a time series: a site folder with its site.yaml (docs/sites.md); every "
                      "target is predicted from its nearest reference pair into --out-dir/<date>.tif")
    fuse.add_argument("--out-dir", help="with --site: the folder of the predictions (a rerun skips those written)")
    fuse.add_argument("--targets", nargs="+", metavar="DATE", help="with --site: the dates to predict, YYYY-MM-DD "
                      "(default: the dates with a coarse file only)")
    fuse.add_argument("--min-clear", type=float, default=0.5, help="with --site: the share of a fine image that must "
                      "be clear for its date to be a reference pair (default 0.5)")
    fuse.add_argument("--fine-ref", nargs="+", metavar="FILE", help="fine image of the reference date (GeoTIFF, "
                      "ENVI, ...); two, the earlier first, for a method that takes two pairs (estarfm; starfm "
                      "takes either)")
    fuse.add_argument("--coarse-ref", nargs="+", metavar="FILE", help="coarse image(s) of the reference date(s), on the fine grid (not needed by "
                      "gan-stfm and mcbam-gan)")
    fuse.add_argument("--coarse-target", help="coarse image of the target date, on the fine grid")
    fuse.add_argument("--out", help="output Cloud-Optimised GeoTIFF (float32 reflectance, NaN = nodata)")
    fuse.add_argument("--ratio", type=int, help="coarse over fine pixel size, e.g. 20 for 500 m MODIS over 25 m "
                      "Landsat (FSDAF needs it; a trained model knows its own)")
    fuse.add_argument("--window", type=int, help="search window side in fine pixels (odd), for methods with one")
    fuse.add_argument("--reflectance-scale", **REFLECTANCE_SCALE_OPTION)
    fuse.add_argument("--tile", type=int, help="trained models: inference tile side in pixels (default: as evaluated)")
    fuse.add_argument("--samples", type=int, help="stochastic models (stfdiff): samples to average; 2 or more also "
                      "write <out>_std.tif (default: as in its study)")
    fuse.add_argument("--seed", type=int, default=0, help="stochastic models: seed of the noise (default 0)")
    fuse.add_argument("--block", type=int, help="a scene wider or taller than this many pixels is fused block by "
                      "block, read and written window by window (default 4096; memory holds one block)")
    fuse.add_argument("--overwrite", action="store_true", help="replace existing outputs (an input is never "
                      "replaced); with --site, predict again the targets already written")
    fuse.add_argument("--device", help="trained models: torch device, such as cpu or cuda (default: CUDA when present)")
    fuse.set_defaults(run=_fuse)
    evaluate = commands.add_parser("evaluate", help="score a predicted raster against an observed one",
                                   description="Score a predicted raster against an observed one (same grid and "
                                   "bands) with RMSE, MAE, bias, PSNR, SSIM, SAM, ERGAS, CC and UIQI.")
    evaluate.add_argument("--pred", required=True, help="predicted image (GeoTIFF, ENVI with .hdr, ...)")
    evaluate.add_argument("--truth", required=True, help="observed image on the same grid")
    evaluate.add_argument("--mask", help="single-band raster on the same grid, non-zero = evaluate this pixel")
    evaluate.add_argument("--ratio", type=int,
                          help="coarse over fine pixel size, e.g. 20 for 500 m over 25 m: ERGAS uses h/l = 1/ratio "
                          "(without it ERGAS is not computed)")
    evaluate.add_argument("--reflectance-scale", **REFLECTANCE_SCALE_OPTION)
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluate.set_defaults(run=_evaluate)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a batch system's time limit), handled as Ctrl-C: ``finally`` blocks remove partial outputs."""


def _terminate(signum, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        args.run(args)
    except StfusionError as err:
        if args.debug:
            raise
        print(f"stfusion: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        if args.debug:
            raise
        print(f"stfusion: {'terminated' if isinstance(stop, Terminated) else 'interrupted'}; what it was writing was "
              "not written, and earlier outputs are as they were", file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
