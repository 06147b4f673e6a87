"""The deep fusion models, one file per model, and their registry.

Every generator is a :class:`~stfusion.methods.models.base.FusionModel`: the same call
``model(fine_ref, coarse_ref, coarse_target) -> fine_target`` on float reflectance tensors, and
``traits`` that declare what tiled inference and sampling need. Models are kept apart from their
training (:mod:`stfusion.train`), the way diffusers keeps models apart from schedulers.

``build_model(name, **arch)`` builds a generator from the ``arch`` mapping of a tier in
params.yaml; unknown names and invalid hyper-parameters are ConfigErrors naming the parameter.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stfusion.errors import ConfigError

if TYPE_CHECKING:  # the registry itself needs no torch: each model's module imports it
    import torch


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    description: str
    generator: str  # "module:Class" under stfusion.methods.models, imported on first use
    discriminator: str | None = None
    feature_encoder: bool = False  # the loss uses the pipeline's feature autoencoder
    references: str = "pairs"  # "pairs": the split's training pairs; "random": any other training date;
    # "any": any training date, the target itself included (stfusion.train.datamodule)
    diffusion: bool = False  # trained as a denoiser (stfusion.train.tasks.DiffusionTask), predicts by sampling

    def generator_class(self) -> type[torch.nn.Module]:
        return _load(self.generator)

    def discriminator_class(self) -> type[torch.nn.Module] | None:
        return _load(self.discriminator) if self.discriminator else None


AUTOENCODER = "autoencoder"
"""Name of the feature autoencoder in params.yaml ``models`` (trained by its own stage)."""
AUTOENCODER_CLASS = "autoencoder:FeatureAutoencoder"

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("dcstfn", "cnn", "DCSTFN (Tan et al. 2018): two-branch CNN, features F1 - C1 + C2, MSE loss",
                  "dcstfn:DCSTFN"),
        ModelSpec("edcstfn", "cnn", "EDCSTFN (Tan et al. 2019): fine and residual encoders, compound loss "
                  "MSE + feature + 0.85 (1 - MS-SSIM)", "edcstfn:EDCSTFN", feature_encoder=True),
        ModelSpec("gan-stfm", "gan", "GAN-STFM (Tan et al. 2022): switchable-norm generator on C2 and any "
                  "fine reference, multi-scale conditional discriminator, LSGAN", "gan_stfm:GANSTFM",
                  discriminator="gan_stfm:MultiScaleDiscriminator", feature_encoder=True, references="random"),
        ModelSpec("mcbam-gan", "gan", "MCBAM-GAN (Liu et al. 2023): U-Net generator on C2 and any fine reference "
                  "with CBAM, AFF fusion and multi-scale reconstruction; GAN-STFM's discriminator, LSGAN",
                  "mcbam_gan:MCBAMGAN", discriminator="gan_stfm:MultiScaleDiscriminator", feature_encoder=True,
                  references="any"),
        ModelSpec("swinstfm", "transformer", "SwinSTFM (Chen et al. 2022): Swin Transformer encoders for C1/C2 and "
                  "F1, window cross-attention decoder applying the coarse change, Charbonnier + (1 - MS-SSIM)",
                  "swinstfm:SwinSTFM"),
        ModelSpec("stfdiff", "diffusion", "STFDiff (Huang et al. 2024): conditional diffusion, dual-stream U-Net "
                  "predicting x0 from C1, C2, F1; cosine schedule T = 100, L1, EMA; DDIM sampling",
                  "stfdiff:STFDiff", diffusion=True),
    )
}


def _load(target: str) -> type[torch.nn.Module]:
    module, cls = target.split(":")
    return getattr(importlib.import_module(f"stfusion.methods.models.{module}"), cls)


def autoencoder_class() -> type[torch.nn.Module]:
    """The feature autoencoder's class (imported on first use, like the generators)."""
    return _load(AUTOENCODER_CLASS)


def get_model_spec(name: str, *, key: str = "model") -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"{key}: unknown model {name!r}; known models are {sorted(MODELS)}") from None


def check_keywords(cls: type[torch.nn.Module], arch: dict, *, key: str) -> None:
    """Raise ConfigError naming ``key`` if ``arch`` has a keyword ``cls`` does not take."""
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(arch) - accepted)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: not a hyper-parameter of {cls.__name__}; "
                          f"expected some of {sorted(accepted)}")


def construct(cls: type[torch.nn.Module], arch: dict, *, key: str) -> torch.nn.Module:
    """``cls(**arch)``, with unknown or invalid keyword arguments reported against ``key``."""
    check_keywords(cls, arch, key=key)
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()})
    except ConfigError as err:
        raise ConfigError(f"{key}: {err}") from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{key}: invalid hyper-parameters for {cls.__name__} ({err})") from None


def build_model(name: str, arch: dict | None = None, *, key: str | None = None) -> torch.nn.Module:
    """The generator of model ``name`` with architecture ``arch`` (paper-tier defaults)."""
    spec = get_model_spec(name)
    return construct(spec.generator_class(), dict(arch or {}), key=key or f"models.{name}.arch")


def arch_for_data(name: str, arch: dict | None, ratio: int | None, *, bands: int | None = None,
                  key: str | None = None) -> dict:
    """``arch`` with what the data decides filled in, for the generators that take it: the band count and the
    coarse/fine pixel-size ``ratio`` (MCBAM-GAN's coarse-corrected skip); None = unknown, left out. A value
    already in ``arch`` must agree with the data's."""
    arch = dict(arch or {})
    generator = get_model_spec(name).generator_class() if name != AUTOENCODER else autoencoder_class()
    return _filled(generator, arch, {"ratio": ratio, "bands": bands}, key or f"models.{name}.arch")


_FROM_DATA = {"ratio": "the data's coarse pixels are {} fine pixels wide", "bands": "the data has {} bands"}


def _filled(cls: type, arch: dict, values: dict[str, int | None], key: str) -> dict:
    taken = inspect.signature(cls).parameters
    for name, value in values.items():
        if value is None or name not in taken:
            continue
        if name in arch and arch[name] != value:
            raise ConfigError(f"{key}.{name}: {arch[name]!r}, but {_FROM_DATA[name].format(value)}; leave {name} "
                              "out to take it from the data")
        arch[name] = int(value)
    return arch


def discriminator_for_data(name: str, settings: dict | None, bands: int, *, key: str | None = None) -> dict:
    """The discriminator's keyword arguments with the data's band count, when it takes one."""
    return _filled(get_model_spec(name).discriminator_class(), dict(settings or {}), {"bands": bands},
                   key or f"models.{name}.discriminator")


def build_autoencoder(arch: dict | None = None, *, key: str = f"models.{AUTOENCODER}.arch") -> torch.nn.Module:
    return construct(autoencoder_class(), dict(arch or {}), key=key)


def count_parameters(module: torch.nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
