"""The base class of every fusion generator and the traits it declares for inference and training.

A generator is called ``model(fine_ref, coarse_ref, coarse_target) -> fine_target`` on float reflectance
tensors (N, band, H, W), the coarse images on the fine grid. What the code around it must know (how
far a pixel's inputs reach, how tiles must be aligned, whether it samples) is one frozen
:class:`ModelTraits`, set once in ``__init__``: wrappers pass it on whole, so nothing is lost or probed.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from stfusion.errors import ConfigError

__all__ = ["FusionModel", "ModelTraits", "Sampling"]


@dataclass(frozen=True)
class Sampling:
    """How a stochastic generator samples: DDIM ``steps`` and ``eta``, and the ``noise_channels`` one
    sample draws (its starting noise and, for ``eta > 0``, one image per step)."""

    steps: int
    eta: float
    noise_channels: int


@dataclass(frozen=True)
class ModelTraits:
    """What tiled inference, sampling and training need to know about a generator.

    ``receptive_field``: an output pixel depends on no input further than this many pixels;
    ``alignment``: tiles must start on multiples of it (pooling grids); ``input_statistics``: the output
    also depends on statistics of the whole input (normalisation layers), so tiles are blended;
    ``uses_coarse_ref``: False when C1 is ignored; ``ratio``: the coarse/fine pixel-size ratio the
    generator was built for (None: any); ``reconstruction_scales``: images it returns with
    ``all_scales=True``; ``sampling``: None for deterministic generators.
    See :mod:`stfusion.inference.tiling` for the contract on the first three.
    """

    receptive_field: int
    alignment: int = 1
    input_statistics: bool = False
    uses_coarse_ref: bool = True
    ratio: int | None = None
    reconstruction_scales: int = 1
    sampling: Sampling | None = None

    def __post_init__(self):
        for name in ("receptive_field", "alignment", "reconstruction_scales"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "receptive_field" else 1):
                raise ConfigError(f"model traits: {name} must be an integer >= "
                                  f"{0 if name == 'receptive_field' else 1}, got {value!r}")

    @property
    def stochastic(self) -> bool:
        return self.sampling is not None


class FusionModel(nn.Module):
    """Base of every generator: subclasses set ``self.traits`` in ``__init__`` and define ``forward``."""

    traits: ModelTraits
