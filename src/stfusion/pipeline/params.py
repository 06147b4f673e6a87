"""params.yaml: loading and validation.

Every stage validates the whole file first, so a typo stops the pipeline at once with an error
that names the parameter (``datasets[1]``, ``download.synthetic.cia-sim.height``, ...) and what
was expected, before anything is written.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from stfusion.data.datasets import dataset_names, get_dataset, use_sites
from stfusion.errors import ConfigError
from stfusion.errors import require as _require
from stfusion.evaluation.robustness import check_levels
from stfusion.methods.models import AUTOENCODER, MODELS, autoencoder_class, check_keywords, construct, get_model_spec
from stfusion.methods.registry import get_method
from stfusion.paths import code_root, find_root
from stfusion.train.config import TIERS, tier_settings, train_config, variant_settings

TOP_LEVEL = ("profile", "seed", "seeds", "datasets", "methods", "download", "preprocess", "ablation", "train", "models",
             "evaluate", "robustness", "figures")


def load_params(path: str | os.PathLike | None = None, *, build_models: bool = True) -> dict[str, Any]:
    """Read and validate params.yaml (the project's own unless ``path`` is given).

    ``build_models=False`` checks every setting but builds no architecture: the stage runner's choice,
    because building every model at both tiers takes seconds at each of the study's ~40 stage runs,
    and each stage builds the model it trains anyway (with errors naming the same parameter)."""
    path = Path(path) if path else find_root() / "params.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: parameter file not found")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    validate_params(params, source=str(path), build_models=build_models)
    return params


def _check_list(params: dict, key: str, check) -> None:
    value = params.get(key)
    _require(isinstance(value, list) and value, key, "a non-empty list", value)
    _require(len(set(value)) == len(value), key, "no duplicates", value)
    for i, item in enumerate(value):
        check(item, key=f"{key}[{i}]")


def validate_params(params: Any, *, source: str = "params.yaml", build_models: bool = True) -> None:
    """Raise ConfigError naming the first invalid parameter (``build_models``: also build every
    architecture and discriminator the study trains, at both tiers)."""
    _require(isinstance(params, dict), source, "a mapping of parameters", type(params).__name__)
    unknown = sorted(set(params) - set(TOP_LEVEL))
    _require(not unknown, f"{source}: {unknown[0] if unknown else ''}", f"one of {list(TOP_LEVEL)}", unknown)
    for key in TOP_LEVEL:
        _require(key in params, key, "this parameter to be set", None)
    _require(isinstance(params["profile"], str), "profile", "a name such as 'default'", params["profile"])
    _require(isinstance(params["seed"], int) and not isinstance(params["seed"], bool), "seed", "an integer", params["seed"])
    _check_list(params, "seeds", _check_seed)
    _require(params["seed"] in params["seeds"], "seeds", f"a list that includes seed ({params['seed']}), the run "
             "the ablation's full-model rows and the figures use", params["seeds"])
    _check_download(params["download"])  # first: it registers the sites that datasets may name
    _check_list(params, "datasets", _check_dataset)
    _check_methods(params["methods"])
    _check_preprocess(params["preprocess"])
    _check_ablation(params["ablation"], study_methods(params))
    _check_train(params["train"])
    _check_models(params["models"], trained_methods(params), build=build_models)
    _check_variant_settings(params, build=build_models)
    _check_micro_batch(params)
    _check_patches(params)
    _check_evaluate(params["evaluate"])
    _check_robustness(params["robustness"])
    _check_figures(params["figures"], params["datasets"])


def _check_seed(value: Any, *, key: str) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= 0, key, "an integer >= 0", value)


def _check_download(section: Any) -> None:
    from stfusion.data.synthetic import synthetic_config  # rasterio: only once scene settings are checked

    _require(isinstance(section, dict), "download", "a mapping", section)
    raw_dir = section.get("raw_dir")
    _require(raw_dir is None or isinstance(raw_dir, str), "download.raw_dir", "null or a folder path", raw_dir)
    _check_sites(section.get("sites") or {})
    scenes = section.get("synthetic", {})
    _require(isinstance(scenes, dict), "download.synthetic", "a mapping of dataset to scene settings", scenes)
    for name, overrides in scenes.items():
        synthetic = dataset_names("synthetic")
        _require(name in synthetic, f"download.synthetic.{name}", f"one of {list(synthetic)}", name)
        _require(isinstance(overrides, dict), f"download.synthetic.{name}", "a mapping", overrides)
        synthetic_config(name, overrides)


def _check_sites(sites: Any) -> None:
    """Users' own sites: {name: folder with a site.yaml}; a relative folder is taken from the project root."""
    from stfusion.data.site import load_site  # rasterio: only when sites are given

    _require(isinstance(sites, dict), "download.sites", "a mapping of site name to its folder", sites)
    folders = {}
    for name, folder in sites.items():
        key = f"download.sites.{name}"
        _require(isinstance(name, str) and re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) is not None, key,
                 "a name of lower-case letters, digits, '-' and '_' (it names folders and DVC stages)", name)
        _require(isinstance(folder, str), key, "the path of a folder holding a site.yaml", folder)
        path = Path(folder) if Path(folder).is_absolute() else code_root() / folder  # a profile's too
        _require(path.is_dir(), key, "an existing folder (relative paths start at the project root)", folder)
        load_site(path)
        folders[name] = str(path.resolve())
    use_sites(folders)


def _check_preprocess(section: Any) -> None:
    _require(isinstance(section, dict), "preprocess", "a mapping", section)
    splits = section.get("splits", {})
    _require(isinstance(splits, dict), "preprocess.splits", "a mapping of dataset to split settings", splits)
    for name, spec in splits.items():
        key = f"preprocess.splits.{name}"
        _check_dataset(name, key=key)
        _require(isinstance(spec, dict), key, "a mapping", spec)
        unknown = sorted(set(spec) - {"test_targets", "val_targets", "n_test", "n_val"})
        _require(not unknown, f"{key}.{unknown[0] if unknown else ''}", "test_targets, val_targets, n_test or n_val", unknown)
        for count in ("n_test", "n_val"):
            value = spec.get(count, 1)
            _require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, f"{key}.{count}", "an integer >= 1", value)
        for dates in ("test_targets", "val_targets"):
            value = spec.get(dates)
            _require(value is None or (isinstance(value, list) and all(isinstance(d, str) for d in value)),
                     f"{key}.{dates}", "null or a list of 'YYYY-MM-DD' strings", value)


ABLATION_KEYS = ("model", "variants", "settings", "full_model_rows")


def _check_ablation(section: Any, methods: list[str]) -> None:
    """The ablation's model, the variants to run and each variant's settings (checked with the models)."""
    _require(isinstance(section, dict), "ablation", "a mapping", section)
    _check_keys(section, "ablation", ABLATION_KEYS)
    model = section.get("model")
    method = get_method(model, key="ablation.model")
    _require(method.trainable, "ablation.model", "a deep model (one that trains)", model)
    settings = section.get("settings")
    _require(isinstance(settings, dict) and all(isinstance(v, dict) for v in settings.values()),
             "ablation.settings", "a mapping of variant name to its setting overrides", settings)
    variants = section.get("variants")
    _require(isinstance(variants, list), "ablation.variants", "a list of variant names (may be empty)", variants)
    _require(len(set(variants)) == len(variants), "ablation.variants", "unique variant names", variants)
    for i, name in enumerate(variants):
        _require(name in settings, f"ablation.variants[{i}]", f"a variant defined in ablation.settings {sorted(settings)}", name)
    rows = section.get("full_model_rows", [])
    _require(isinstance(rows, list) and all(isinstance(r, str) for r in rows), "ablation.full_model_rows",
             "a list of table rows that the full model fills", rows)
    _require(not rows or model in methods, "ablation.full_model_rows",
             f"{model!r} in 'methods' (its train-stage run is the full model)", methods)
    _require(not set(rows) & set(variants), "ablation.full_model_rows", "names that are not also variants", rows)


METHOD_GROUPS = {"baselines": False, "models": True}  # group -> whether its methods train


def _check_methods(section: Any) -> None:
    """``methods.baselines`` (no training: the predict stage) and ``methods.models`` (the train stage)."""
    _require(isinstance(section, dict), "methods", "a mapping {baselines: [...], models: [...]}", section)
    _check_keys(section, "methods", tuple(METHOD_GROUPS))
    for group, trains in METHOD_GROUPS.items():
        key = f"methods.{group}"
        names = section.get(group)
        _require(isinstance(names, list), key, "a list of method names (may be empty)", names)
        _require(len(set(names)) == len(names), key, "no duplicates", names)
        for i, name in enumerate(names):
            method = get_method(name, key=f"{key}[{i}]")
            _require(method.trainable == trains, f"{key}[{i}]",
                     "a deep model (one that trains)" if trains else "a method that needs no training", name)
    _require(any(section.values()), "methods", "at least one method", section)


def study_methods(params: dict) -> list[str]:
    """Every method of the study, baselines first: the rows of its tables."""
    return [*params["methods"]["baselines"], *params["methods"]["models"]]


def trained_methods(params: dict) -> list[str]:
    """The deep models the study trains (methods and the ablation's model), plus the feature autoencoder
    when one of them needs it."""
    ablation = params["ablation"]
    names = [*params["methods"]["models"], *([ablation["model"]] if ablation["variants"] else [])]
    trained = list(dict.fromkeys(name for name in names if get_method(name).trainable))
    if any(MODELS[name].feature_encoder for name in trained):
        trained.append(AUTOENCODER)
    return trained


def _check_train(section: Any) -> None:
    _require(isinstance(section, dict), "train", "a mapping", section)
    _check_keys(section, "train", ("tier", "accelerator", "devices", "strategy", "num_workers", "threads",
                                   "micro_batch"))
    _require(section.get("tier") in TIERS, "train.tier", f"one of {list(TIERS)}", section.get("tier"))
    accelerator = section.get("accelerator", "auto")
    _require(accelerator in ("auto", "cpu", "gpu", "cuda"), "train.accelerator", "auto, cpu or gpu", accelerator)
    devices = section.get("devices", 1)
    _require(devices == "auto" or (isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1),
             "train.devices", "an integer >= 1 or 'auto'", devices)
    _require(isinstance(section.get("strategy", "auto"), str), "train.strategy", "a Lightning strategy name such as 'ddp'",
             section.get("strategy"))
    threads = section.get("threads")
    _require(threads is None or (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1),
             "train.threads", "null (torch's default) or an integer >= 1", threads)
    micro = section.get("micro_batch")
    _require(micro is None or (isinstance(micro, int) and not isinstance(micro, bool) and micro >= 1),
             "train.micro_batch", "null (whole batches) or an integer >= 1 that divides the batches", micro)
    workers = section.get("num_workers", 0)
    _require(isinstance(workers, int) and not isinstance(workers, bool) and workers >= 0, "train.num_workers",
             "an integer >= 0", workers)


def _check_models(section: Any, trained: list[str], *, build: bool = True) -> None:
    """Both tiers of every model the study trains: settings valid and the architecture buildable."""
    _require(isinstance(section, dict), "models", "a mapping of model name to its tiers", section)
    for name in section:
        if name != AUTOENCODER:
            get_model_spec(name, key=f"models.{name}")
    for name in trained:
        for tier in TIERS:
            _check_tier(name, tier_settings(section, name, tier), key=f"models.{name}.{tier}", build=build)


def _check_variant_settings(params: dict, *, build: bool = True) -> None:
    """Every variant defined under ablation.settings, merged over its model's tiers, valid and buildable."""
    model = params["ablation"]["model"]
    for variant in params["ablation"]["settings"]:
        for tier in TIERS:
            key = f"ablation.settings.{variant} (over models.{model}.{tier})"
            _check_tier(model, train_config(variant_settings(params, variant, tier), key=key), key=key, build=build)


def _check_micro_batch(params: dict) -> None:
    """train.micro_batch divides every batch the study trains at its tier, so no stage stops on it later."""
    micro, tier = params["train"].get("micro_batch"), params["train"]["tier"]
    if not micro:
        return
    batches = {f"models.{name}.{tier}": tier_settings(params["models"], name, tier).batch_size
               for name in trained_methods(params)}
    for variant in params["ablation"]["variants"]:
        batches[f"ablation.settings.{variant}"] = variant_settings(params, variant, tier)["batch_size"]
    for key, batch in batches.items():
        _require(micro >= batch or batch % micro == 0, "train.micro_batch",
                 f"a divisor of {key}.batch_size ({batch}) or null", micro)


def _scene_sides(params: dict, name: str) -> tuple[int, int] | None:
    """(height, width) of dataset ``name``'s scenes in fine pixels, or None for a site (read from its files)."""
    dataset = get_dataset(name)
    if dataset.kind == "synthetic":
        from stfusion.data.synthetic import synthetic_config

        config = synthetic_config(name, (params["download"].get("synthetic") or {}).get(name, {}))
        return config["height"], config["width"]
    if dataset.kind == "real":
        from stfusion.data.real import get_spec

        return tuple(get_spec(name).shape[1:])
    return None


def _check_patches(params: dict) -> None:
    """Every training patch at the tier in use fits in every dataset's scene: found here, not after the
    stages before training have run."""
    tier = params["train"]["tier"]
    patches = {f"models.{name}.{tier}.patch_size": tier_settings(params["models"], name, tier).patch_size
               for name in trained_methods(params)}
    for variant in params["ablation"]["variants"]:
        patches[f"ablation.settings.{variant}.patch_size"] = variant_settings(params, variant, tier)["patch_size"]
    for dataset in params["datasets"]:
        if (sides := _scene_sides(params, dataset)) is None:
            continue
        for key, patch in patches.items():
            _require(patch <= min(sides), key, f"at most the smaller side of {dataset}'s scenes ({min(sides)} px)",
                     patch)


def _check_tier(name: str, config, *, key: str, build: bool = True) -> None:
    """One model's tier: the architecture (and discriminator) take these keywords and, with ``build``,
    build; MS-SSIM fits in the patches."""
    from stfusion.train.losses import min_patch_for_ms_ssim  # torch: only once a model is checked

    if name == AUTOENCODER:
        parts = [(autoencoder_class(), config.arch, f"{key}.arch")]
    else:
        spec = get_model_spec(name)
        parts = [(spec.generator_class(), config.arch, f"{key}.arch")]
        if spec.discriminator:
            parts.append((spec.discriminator_class(), config.discriminator, f"{key}.discriminator"))
    for cls, arch, part_key in parts:  # construct checks the keywords first, then builds
        (construct if build else check_keywords)(cls, dict(arch), key=part_key)
    if config.msssim_weight:
        smallest = min_patch_for_ms_ssim(config.msssim_scales)
        _require(config.patch_size >= smallest, f"{key}.patch_size",
                 f"at least {smallest} px for msssim_scales {config.msssim_scales}", config.patch_size)


def _check_keys(section: dict, key: str, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(section) - set(allowed))
    _require(not unknown, f"{key}.{unknown[0] if unknown else ''}", f"one of {list(allowed)}", unknown)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_evaluate(section: Any) -> None:
    _require(isinstance(section, dict), "evaluate", "a mapping", section)
    _check_keys(section, "evaluate", ("change_threshold", "bootstrap"))
    threshold = section.get("change_threshold", 0.05)
    _require(_is_number(threshold) and threshold > 0, "evaluate.change_threshold",
             "a positive reflectance difference such as 0.05", threshold)
    bootstrap = section.get("bootstrap", {})
    _require(isinstance(bootstrap, dict), "evaluate.bootstrap", "a mapping", bootstrap)
    _check_keys(bootstrap, "evaluate.bootstrap", ("resamples", "level", "block"))
    for key, low in (("resamples", 100), ("block", 1)):
        value = bootstrap.get(key, low)
        _require(isinstance(value, int) and not isinstance(value, bool) and value >= low, f"evaluate.bootstrap.{key}",
                 f"an integer >= {low}", value)
    level = bootstrap.get("level", 0.95)
    _require(_is_number(level) and 0.5 <= level < 1, "evaluate.bootstrap.level", "a confidence level in [0.5, 1)", level)


def _check_robustness(section: Any) -> None:
    _require(isinstance(section, dict), "robustness", "a mapping", section)
    _check_keys(section, "robustness", ("levels",))
    check_levels(section.get("levels"), key="robustness.levels")


def _check_figures(section: Any, datasets: list[str]) -> None:
    _require(isinstance(section, dict), "figures", "a mapping", section)
    _check_keys(section, "figures", ("dpi", "difference_band", "crop", "pairs"))
    dpi = section.get("dpi", 150)
    _require(isinstance(dpi, int) and not isinstance(dpi, bool) and 50 <= dpi <= 600, "figures.dpi", "an integer in 50..600", dpi)
    band = section.get("difference_band", "nir")
    for name in datasets:
        bands = _dataset_bands(name)
        _require(band in bands, "figures.difference_band", f"one of the bands of {name}, {list(bands)}", band)
    for name, region in (section.get("crop") or {}).items():
        key = f"figures.crop.{name}"
        _check_dataset(name, key=key)
        fields = ("row", "col", "height", "width")
        _require(isinstance(region, dict) and set(region) == set(fields)
                 and all(isinstance(region[f], int) and region[f] >= 0 for f in fields) and region["height"] > 0
                 and region["width"] > 0, key, "a mapping {row, col, height, width} of pixel counts", region)
    for name, pair in (section.get("pairs") or {}).items():
        key = f"figures.pairs.{name}"
        _check_dataset(name, key=key)
        _require(isinstance(pair, list) and len(pair) == 2 and all(isinstance(d, str) for d in pair), key,
                 "a test pair ['YYYY-MM-DD', 'YYYY-MM-DD'] (reference, target)", pair)


def _dataset_bands(name: str) -> tuple[str, ...]:
    dataset = get_dataset(name)
    if dataset.kind == "site":
        from stfusion.data.site import load_site

        return load_site(dataset.folder).bands
    return dataset.bands


def _check_dataset(name: Any, *, key: str = "dataset") -> str:
    return get_dataset(name, key=key).name
