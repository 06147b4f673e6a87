"""The registry of every method in the study, with its family and the colour figures give it.

Names are used unchanged everywhere: params.yaml, the CLI, file and folder names. A method's code
is named by its module path and imported on first use, so the code a pipeline stage runs (and so
depends on) is that method's module alone (:mod:`stfusion.pipeline.sources`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import importlib

import numpy as np

from stfusion.errors import ConfigError
from stfusion.methods.models import MODELS

FAMILY_COLOURS = {
    # One colour per family in every figure (colour-blind-safe Okabe-Ito palette).
    "reference": "#7f7f7f",
    "traditional": "#E69F00",
    "cnn": "#56B4E9",
    "gan": "#009E73",
    "transformer": "#CC79A7",
    "diffusion": "#D55E00",
}

Predictor = Callable[..., np.ndarray]
"""``predict(fine_ref, coarse_ref, coarse_target, *, valid, ratio)``: float reflectance (band, y, x)
arrays with the coarse images on the fine grid, the (y, x) mask of usable pixels, and the coarse
over fine pixel-size ratio; returns the predicted fine image (NaN where it has no prediction). A method
that takes two reference pairs gets (pair, band, y, x) ``fine_ref`` and ``coarse_ref``, the pair before
the target first."""


@dataclass(frozen=True)
class Method:
    name: str
    family: str
    description: str
    code: str | None = None  # baselines: "module:function" under stfusion.methods.baselines
    parameters: int = 0  # learnable parameters
    options: tuple[str, ...] = ()  # extra keyword arguments ``predict`` accepts, e.g. ("window",)
    trainable: bool = False  # a deep model of stfusion.methods.models: trained by stfusion.train, then predicts
    needs_ratio: bool = False  # its ``predict`` uses the coarse over fine pixel size
    pairs: tuple[int, ...] = (1,)  # how many reference pairs its ``predict`` takes: (1,), (1, 2) or (2,)
    predictor: Predictor | None = None  # a trained model's predictor (stfusion.inference.sampling)

    @property
    def colour(self) -> str:
        return FAMILY_COLOURS[self.family]

    @property
    def predict(self) -> Predictor | None:
        """The prediction function: a baseline's, or a trained model's; None for an untrained model."""
        if self.predictor is not None or self.code is None:
            return self.predictor
        module, function = self.code.split(":")
        return getattr(importlib.import_module(f"stfusion.methods.baselines.{module}"), function)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("persistence", "reference", "F2 = F1 (no change)", "reference:persistence"),
        Method("temporal-difference", "reference", "F2 = F1 + (C2 - C1)", "reference:temporal_difference"),
        Method("starfm", "traditional", "STARFM (Gao et al. 2006), rules of Gao's C code v1.2.1", "starfm:starfm",
               options=("window",), pairs=(1, 2)),
        Method("fsdaf", "traditional", "FSDAF (Zhu et al. 2016), steps of the official IDL code", "fsdaf:fsdaf",
               options=("window",), needs_ratio=True),
        Method("estarfm", "traditional", "ESTARFM (Zhu et al. 2010), two pairs, rules of the official IDL code",
               "estarfm:estarfm", options=("window",), pairs=(2,)),
        *(Method(spec.name, spec.family, spec.description, trainable=True) for spec in MODELS.values()),
    )
}


def get_method(name: str, *, key: str = "methods") -> Method:
    """Look a method up by name; unknown names give a ConfigError that lists the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"{key}: unknown method {name!r}; known methods are {sorted(METHODS)}") from None
