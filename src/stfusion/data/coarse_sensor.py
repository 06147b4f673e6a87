"""The synthetic coarse (MODIS-like) sensor: how a fine reflectance image becomes a coarse one.

One function, :func:`simulate_coarse`, applies the sensor's effects in the order light meets them:
band-wise gain and offset (cross-sensor calibration, atmosphere, view angle) -> geolocation shift ->
spatial response (the optics' Gaussian blur, and for a scanning sensor the triangle along the scan)
-> mean over each coarse pixel of a grid that need not start on a fine-pixel multiple of ``ratio``
-> noise -> nearest neighbour back to the fine grid, which is how the CIA and LGC MODIS files come.
Every effect is off at its default, and with every default the result is the sensor of the first
study versions bit for bit (``tests/test_coarse_sensor.py``). Which values are realistic, and where
they come from, is in docs/data.md.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from stfusion.data.coarse_pixel import block_mean

PSF_SHAPES = ("gaussian", "scan")
"""``gaussian``: the optics' blur alone. ``scan``: a detector swept along x (the scan direction of a
cross-track scanner) adds a box of one coarse pixel along x, so the response along the scan is a
triangle two coarse pixels wide at its base, and along the track one coarse pixel (the block)."""


def simulate_coarse(
    fine: np.ndarray, ratio: int, *, psf_sigma: float, gain, offset, shift=(0.0, 0.0), noise: float = 0.0,
    rng: np.random.Generator | None = None, psf: str = "gaussian", grid_offset=(0, 0),
) -> np.ndarray:
    """Coarse-sensor view of a (band, y, x) float reflectance image, returned on the fine grid (float32).

    ``gain``/``offset``: scalar or per band; ``shift``: (y, x) geolocation error in fine pixels;
    ``psf_sigma``: the optics' Gaussian sigma in coarse pixels; ``psf``: one of :data:`PSF_SHAPES`;
    ``grid_offset``: (y, x) whole fine pixels from the fine grid's origin to the first coarse pixel
    edge, each in [0, ratio); ``noise``: Gaussian sd at coarse resolution, drawn from ``rng``.
    """
    if fine.ndim != 3 or fine.shape[1] % ratio or fine.shape[2] % ratio:
        raise ValueError(f"fine image shape {fine.shape} is not (band, y, x) with y, x multiples of {ratio}")
    if psf not in PSF_SHAPES:
        raise ValueError(f"psf must be one of {PSF_SHAPES}, got {psf!r}")
    offset_y, offset_x = (int(v) for v in grid_offset)
    if not (0 <= offset_y < ratio and 0 <= offset_x < ratio):
        raise ValueError(f"grid_offset must be whole fine pixels in [0, {ratio}), got {tuple(grid_offset)}")
    bands = fine.shape[0]
    x = fine.astype(np.float32) * _per_band(gain, bands) + _per_band(offset, bands)
    if any(shift):
        x = ndimage.shift(x, (0.0, *shift), order=1, mode="reflect")
    if psf == "scan":
        x = ndimage.uniform_filter1d(x, ratio, axis=2, mode="reflect")
    if psf_sigma > 0:
        sigma = psf_sigma * ratio
        x = ndimage.gaussian_filter(x, sigma=(0.0, sigma, sigma), mode="reflect")
    return _sample_grid(x, ratio, (offset_y, offset_x), noise, rng)


def _sample_grid(x: np.ndarray, ratio: int, grid_offset: tuple[int, int], noise: float,
                 rng: np.random.Generator | None) -> np.ndarray:
    """Mean over each coarse pixel of a grid whose edges lie at ``grid_offset + k * ratio``, plus
    noise, then each fine pixel takes its coarse pixel's value. Pixels beyond the scene are mirrored."""
    height, width = x.shape[1:]
    pads = [(0, 0)] + [((ratio - o) % ratio, o) for o in grid_offset]  # whole blocks over the padded image
    padded = np.pad(x, pads, mode="reflect") if any(o for o in grid_offset) else x
    coarse = block_mean(padded, ratio)
    if noise > 0:
        coarse += (rng if rng is not None else np.random.default_rng(0)).normal(0.0, noise, coarse.shape)
    upsampled = np.repeat(np.repeat(coarse.astype(np.float32), ratio, axis=1), ratio, axis=2)
    top, left = pads[1][0], pads[2][0]
    return upsampled[:, top:top + height, left:left + width]


def date_calibration(rng: np.random.Generator, gain, offset, *, gain_sd: float, offset_sd: float,
                     bands: int) -> tuple[np.ndarray, np.ndarray]:
    """One date's band-wise gain and offset: the sensor's own, times ``1 + N(0, gain_sd)`` and plus
    ``N(0, offset_sd)`` per band (the atmospheric-correction and view-angle residuals of that date)."""
    gain = np.broadcast_to(np.asarray(gain, np.float64), (bands,))
    offset = np.broadcast_to(np.asarray(offset, np.float64), (bands,))
    return gain * (1.0 + rng.normal(0.0, gain_sd, bands)), offset + rng.normal(0.0, offset_sd, bands)


def geolocation_shift(rng: np.random.Generator, sd: float) -> tuple[float, float]:
    """One date's geolocation error, (y, x) in fine pixels: independent N(0, ``sd``) per axis."""
    dy, dx = rng.normal(0.0, sd, 2)
    return float(dy), float(dx)


def _per_band(value, bands: int) -> np.ndarray:
    array = np.asarray(value, dtype=np.float32).reshape(-1)
    if array.size not in (1, bands):
        raise ValueError(f"expected a scalar or {bands} per-band values, got {array.size}")
    return array.reshape(-1, 1, 1)
