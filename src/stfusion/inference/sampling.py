"""Predictors over trained deep models: tiled inference, and sampling for stochastic models.

``deep_predictor`` turns a generator into the ``predict(fine_ref, coarse_ref, coarse_target, *, valid,
ratio)`` every method has, so trained models and baselines go through the same prediction code. Gaps
in the fine reference are filled from the coarse reference first (:mod:`stfusion.data.gaps`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stfusion.data.gaps import fill_reference_gaps
from stfusion.inference.tiling import predict_scene
from stfusion.methods.models.base import FusionModel


def deep_predictor(model: FusionModel, *, tile: int, device: str | None = None, samples: int = 0,
                   seed: int = 0):
    """A ``predict(fine_ref, coarse_ref, coarse_target, *, valid, ratio)`` over tiled inference.

    Stochastic models (``model.traits.sampling``, STFDiff) get one noise field per scene and sample, drawn from
    ``seed`` and cut into tiles like the inputs, so tiles agree and reruns repeat. With ``samples`` >= 2
    the prediction is the mean of that many samples, and their per-pixel standard deviation comes back
    as ``"uncertainty"`` (accumulated sample by sample, so memory does not grow with ``samples``).
    """

    def predict(fine_ref: np.ndarray, coarse_ref: np.ndarray, coarse_target: np.ndarray, *, valid=None,
                ratio=None):
        fine_ref = fill_reference_gaps(fine_ref, coarse_ref)
        if not model.traits.stochastic:
            return predict_scene(model, fine_ref, coarse_ref, coarse_target, tile=tile, device=device)
        return sample_scene(model, fine_ref, coarse_ref, coarse_target, tile=tile, device=device,
                            samples=samples, seed=seed)

    return predict


def sample_scene(model: FusionModel, fine_ref: np.ndarray, coarse_ref: np.ndarray, coarse_target: np.ndarray,
                 *, tile: int, device: str | None = None, samples: int = 0, seed: int = 0):
    """One sample (``samples`` < 2), or ``{"prediction": mean, "uncertainty": std}`` over ``samples``."""
    shape = (model.traits.sampling.noise_channels, *fine_ref.shape[1:])
    mean = m2 = None
    for k in range(max(1, samples)):
        noise = np.random.default_rng([seed, k]).standard_normal(shape, dtype=np.float32)
        draw = predict_scene(model, fine_ref, coarse_ref, coarse_target, tile=tile, device=device,
                             extra_inputs={"noise": noise}).astype(np.float64)
        if mean is None:
            mean, m2 = draw, np.zeros_like(draw)
            continue
        delta = draw - mean  # Welford's running mean and sum of squared deviations
        mean += delta / (k + 1)
        m2 += delta * (draw - mean)
    if samples < 2:
        return mean.astype(np.float32)
    return {"prediction": mean.astype(np.float32), "uncertainty": np.sqrt(m2 / (samples - 1)).astype(np.float32)}


def sampling_record(model: FusionModel, samples: int) -> dict[str, Any]:
    """What a stochastic model's results depend on: its DDIM steps, eta and number of samples."""
    sampling = model.traits.sampling
    if sampling is None:
        return {}
    return {"sampling": {"steps": sampling.steps, "eta": sampling.eta, "samples": max(1, samples)}}
