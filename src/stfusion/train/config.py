"""Training settings: one tier of one model in params.yaml ``models``, validated.

Each model has two tiers, ``paper`` (its paper's architecture and hyper-parameters, for the full
reproduction) and ``quick`` (fewer steps and, where needed, narrower layers, so the default study
fits its CPU budget). ``train.tier`` in params.yaml picks one for every model. A tier is a
mapping of the training keys below plus ``arch`` (the generator's keyword arguments) and, for
GANs, ``discriminator`` (the discriminator's).

An epoch is ``steps_per_epoch`` batches of random patches (``patch_size``) drawn from the
training pairs; the public code's epochs are passes over a fixed grid of patches, so paper-tier
``steps_per_epoch`` is set to about the number of batches in one such pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import yaml

from stfusion.errors import ConfigError
from stfusion.paths import find_root

TIERS = ("quick", "paper")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    steps_per_epoch: int
    batch_size: int
    patch_size: int
    lr: float
    weight_decay: float = 0.0
    lr_discriminator: float | None = None  # GANs; None = lr
    val_patches: int = 32  # fixed validation patches from the validation pairs, drawn once
    msssim_scales: int = 3
    msssim_weight: float = 1.0
    feature_weight: float = 1.0
    cosine_weight: float = 1.0
    adversarial_weight: float = 1e-3
    pixel_weight: float = 1.0  # weight of the pixel loss (MSE for the CNNs, smooth L1 for the autoencoder)
    pixel_loss: str = "mse"  # the CNNs' and SwinSTFM's pixel loss: mse | l1 | charbonnier
    gradient_clip: float = 0.0  # gradient-norm clipping (0: none); automatically optimised models only
    ema_decay: float = 0.0  # diffusion: decay of the EMA weights used for validation and prediction (0: no EMA)
    uncertainty_samples: int = 0  # diffusion: >= 2 draws N samples, predicts their mean and writes their std
    tile: int = 256  # inference tile side (pixels)
    schedule: str = "constant"  # learning rate: constant (the papers) or cosine (annealed to 0 over the run)
    standardize: bool = False  # per-band standardisation of inputs and output (stfusion.methods.models.standardize)
    arch: dict[str, Any] = field(default_factory=dict)
    discriminator: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_REQUIRED = ("epochs", "steps_per_epoch", "batch_size", "patch_size", "lr")
_INTS = ("epochs", "steps_per_epoch", "batch_size", "patch_size", "val_patches", "msssim_scales", "tile")
_FLOATS = ("lr", "weight_decay", "lr_discriminator", "msssim_weight", "feature_weight", "cosine_weight",
           "adversarial_weight", "pixel_weight", "gradient_clip", "ema_decay")
PIXEL_LOSSES = ("mse", "l1", "charbonnier")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def train_config(settings: Any, *, key: str) -> TrainConfig:
    """Validate one tier's mapping and return it as a TrainConfig; errors name ``key.<field>``."""
    if not isinstance(settings, dict):
        raise ConfigError(f"{key}: expected a mapping of training settings, got {settings!r}")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown setting; expected some of {sorted(known)}")
    missing = [name for name in _REQUIRED if name not in settings]
    if missing:
        raise ConfigError(f"{key}.{missing[0]}: required setting is missing")
    for name in _INTS:
        if name in settings:
            value = settings[name]
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ConfigError(f"{key}.{name}: expected an integer >= 1, got {value!r}")
    for name in _FLOATS:
        value = settings.get(name)
        if value is None and name == "lr_discriminator":
            continue
        if name in settings and not (_number(value) and value >= 0):
            raise ConfigError(f"{key}.{name}: expected a number >= 0, got {value!r}")
    for name in ("lr",):
        if settings[name] <= 0:
            raise ConfigError(f"{key}.{name}: expected a positive learning rate, got {settings[name]!r}")
    if settings.get("schedule", "constant") not in ("constant", "cosine"):
        raise ConfigError(f"{key}.schedule: expected 'constant' or 'cosine', got {settings['schedule']!r}")
    if settings.get("pixel_loss", "mse") not in PIXEL_LOSSES:
        raise ConfigError(f"{key}.pixel_loss: expected one of {list(PIXEL_LOSSES)}, got {settings['pixel_loss']!r}")
    if not settings.get("ema_decay", 0.0) < 1:
        raise ConfigError(f"{key}.ema_decay: expected a number in [0, 1), got {settings['ema_decay']!r}")
    samples = settings.get("uncertainty_samples", 0)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0 or samples == 1:
        raise ConfigError(f"{key}.uncertainty_samples: expected 0 (off) or an integer >= 2, got {samples!r}")
    if not isinstance(settings.get("standardize", False), bool):
        raise ConfigError(f"{key}.standardize: expected true or false, got {settings['standardize']!r}")
    for name in ("arch", "discriminator"):
        if not isinstance(settings.get(name, {}), dict):
            raise ConfigError(f"{key}.{name}: expected a mapping of keyword arguments, got {settings[name]!r}")
    return TrainConfig(**{k: float(v) if k in _FLOATS and v is not None else v for k, v in settings.items()})


def tier_settings(models: Any, name: str, tier: str, *, key: str = "models") -> TrainConfig:
    """The TrainConfig of model ``name`` at ``tier`` from params.yaml's ``models`` mapping."""
    if tier not in TIERS:
        raise ConfigError(f"train.tier: expected one of {list(TIERS)}, got {tier!r}")
    if not isinstance(models, dict) or name not in models:
        raise ConfigError(f"{key}.{name}: no settings for this model in params.yaml")
    entry = models[name]
    if not isinstance(entry, dict) or tier not in entry:
        raise ConfigError(f"{key}.{name}.{tier}: missing; every model needs both tiers {list(TIERS)}")
    return train_config(entry[tier], key=f"{key}.{name}.{tier}")


def project_settings() -> dict[str, Any]:
    """The ``models`` and ``ablation`` sections of the project's params.yaml, for notebooks opened by hand
    (DVC passes every setting; the stage runner has validated the whole file)."""
    path = find_root() / "params.yaml"
    try:
        params = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the parameters ({err})") from None
    return {key: params.get(key, {}) for key in ("models", "ablation")}


def resolve_settings(name: str, tier: str, settings: dict[str, Any] | None) -> TrainConfig:
    """A notebook's settings: the mapping DVC passed (``settings``), else read from params.yaml."""
    if settings is not None:
        return train_config(settings, key=f"models.{name}.{tier}")
    return tier_settings(project_settings()["models"], name, tier)


def merge_settings(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` over ``base``; the nested ``arch`` and ``discriminator`` mappings merge key by key."""
    merged = {**base, **overrides}
    for nested in ("arch", "discriminator"):
        if isinstance(overrides.get(nested), dict) and isinstance(base.get(nested, {}), dict):
            merged[nested] = {**base.get(nested, {}), **overrides[nested]}
    return merged


def variant_settings(params: dict[str, Any], variant: str, tier: str) -> dict[str, Any]:
    """An ablation variant's settings: its overrides (``ablation.settings``) over the ablation model's tier."""
    ablation = params["ablation"]
    model, settings = ablation["model"], ablation["settings"]
    if variant not in settings:
        raise ConfigError(f"ablation.settings: no variant {variant!r}; defined variants are {sorted(settings)}")
    base = params["models"].get(model, {}).get(tier)
    if not isinstance(base, dict):
        raise ConfigError(f"models.{model}.{tier}: missing; the ablation's variants are built on it")
    return merge_settings(base, settings[variant])
