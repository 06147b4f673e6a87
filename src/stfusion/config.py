"""params.yaml: loading and validation.

Every stage validates the whole file first, so a typo stops the pipeline at once with an error
that names the parameter (``datasets[1]``, ``download.synthetic.cia-sim.height``, ...) and what
was expected, before anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from stfusion.errors import ConfigError
from stfusion.paths import find_root

SYNTHETIC_DATASETS = ("cia-sim", "lgc-sim")
REAL_DATASETS = ("cia", "lgc")
KNOWN_DATASETS = SYNTHETIC_DATASETS + REAL_DATASETS
TOP_LEVEL = ("profile", "seed", "datasets", "methods", "download", "preprocess", "ablation", "evaluate", "figures")


def load_params(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read and validate params.yaml (the project's own unless ``path`` is given)."""
    path = Path(path) if path else find_root() / "params.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: parameter file not found")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    validate_params(params, source=str(path))
    return params


def check_dataset(name: Any, *, key: str = "dataset") -> str:
    if name not in KNOWN_DATASETS:
        raise ConfigError(f"{key}: unknown dataset {name!r}; known datasets are {list(KNOWN_DATASETS)}")
    return name


def _require(condition: bool, key: str, expected: str, value: Any) -> None:
    if not condition:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")


def _check_list(params: dict, key: str, check) -> None:
    value = params.get(key)
    _require(isinstance(value, list) and value, key, "a non-empty list", value)
    _require(len(set(value)) == len(value), key, "no duplicates", value)
    for i, item in enumerate(value):
        check(item, key=f"{key}[{i}]")


def validate_params(params: Any, *, source: str = "params.yaml") -> None:
    """Raise ConfigError naming the first invalid parameter."""
    from stfusion.methods import get_method

    _require(isinstance(params, dict), source, "a mapping of parameters", type(params).__name__)
    unknown = sorted(set(params) - set(TOP_LEVEL))
    _require(not unknown, f"{source}: {unknown[0] if unknown else ''}", f"one of {list(TOP_LEVEL)}", unknown)
    for key in TOP_LEVEL:
        _require(key in params, key, "this parameter to be set", None)
    _require(isinstance(params["profile"], str), "profile", "a name such as 'default'", params["profile"])
    _require(isinstance(params["seed"], int) and not isinstance(params["seed"], bool), "seed", "an integer", params["seed"])
    _check_list(params, "datasets", check_dataset)
    _check_list(params, "methods", lambda name, key: get_method(name, key=key))
    _check_download(params["download"])
    _check_preprocess(params["preprocess"])
    _check_ablation(params["ablation"])
    for key in ("evaluate", "figures"):
        _require(isinstance(params[key], dict), key, "a mapping", params[key])


def _check_download(section: Any) -> None:
    from stfusion.data.synthetic import synthetic_config

    _require(isinstance(section, dict), "download", "a mapping", section)
    raw_dir = section.get("raw_dir")
    _require(raw_dir is None or isinstance(raw_dir, str), "download.raw_dir", "null or a folder path", raw_dir)
    scenes = section.get("synthetic", {})
    _require(isinstance(scenes, dict), "download.synthetic", "a mapping of dataset to scene settings", scenes)
    for name, overrides in scenes.items():
        _require(name in SYNTHETIC_DATASETS, f"download.synthetic.{name}", f"one of {list(SYNTHETIC_DATASETS)}", name)
        _require(isinstance(overrides, dict), f"download.synthetic.{name}", "a mapping", overrides)
        synthetic_config(name, overrides)


def _check_preprocess(section: Any) -> None:
    _require(isinstance(section, dict), "preprocess", "a mapping", section)
    splits = section.get("splits", {})
    _require(isinstance(splits, dict), "preprocess.splits", "a mapping of dataset to split settings", splits)
    for name, spec in splits.items():
        key = f"preprocess.splits.{name}"
        check_dataset(name, key=key)
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


def _check_ablation(section: Any) -> None:
    from stfusion.methods import get_method

    _require(isinstance(section, dict), "ablation", "a mapping", section)
    variants = section.get("variants")
    _require(isinstance(variants, list) and variants, "ablation.variants", "a non-empty list", variants)
    names = []
    for i, variant in enumerate(variants):
        key = f"ablation.variants[{i}]"
        _require(isinstance(variant, dict) and {"name", "method"} <= set(variant), key, "a mapping with 'name' and 'method'", variant)
        get_method(variant["method"], key=f"{key}.method")
        names.append(variant["name"])
    _require(len(set(names)) == len(names), "ablation.variants", "unique variant names", names)
