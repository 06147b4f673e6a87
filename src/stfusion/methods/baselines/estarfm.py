"""ESTARFM (Zhu et al. 2010, doi:10.1016/j.rse.2010.05.032) as the official ESTARFM_FAST IDL code computes it:
vectorised in torch (CUDA), fused in a Numba kernel on the CPU (kernels.estarfm_rows).

Two fine/coarse pairs, one before and one after the target date, and the target's coarse image. For each fine
pixel: the ``similar`` most similar pixels of its window on both fine images (thresholds from each band's
deviation), weighted by their fine/coarse spectral correlation and distance; per band a conversion coefficient
regressed over them (fine on coarse, both dates); each pair's prediction from its coarse change; the two
mixed by temporal weights from the coarse change of the window. docs/methods/estarfm.md lists the rules and
the deviations from the IDL code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from stfusion.errors import InputError
from stfusion.methods.baselines import check_window, fill_holes, kernels

__all__ = ["EstarfmParams", "estarfm", "predict_estarfm"]

TILE = {"cpu": 128, "cuda": 256}
"""Tile side in fine pixels. A tile holds a key for every window offset of each of its pixels (51 x 51 x
side^2 int64: 340 MB at 128 px), which bounds memory whatever the scene size; the window's halo makes
small tiles slow (a 64 px tile took 2.8 times as long per pixel as a 128 px one on 2 cores)."""


@dataclass(frozen=True)
class EstarfmParams:
    """The IDL code's parameters, for reflectance in [0, 1]."""

    half_window: int = 25  # w: a (2w + 1)^2 window, 51 x 51 fine pixels
    classes: int = 4  # num_class: the similarity threshold is 2 std / classes
    similar: int = 20  # num_similar_pixel: the most similar candidates kept
    min_similar: int = 6  # more than 5 similar pixels, else the centre pixel's coarse change alone
    data_range: tuple[float, float] = (0.0, 1.0)  # DN_min, DN_max: a prediction outside is revised
    min_coarse_change: float = 0.02  # DN_max x 0.02: smaller coarse changes give no conversion coefficient
    significance: float = 0.05  # the regression's F-test level
    max_coefficient: float = 5.0  # a coefficient must lie in (0, 5]

    def __post_init__(self) -> None:
        for name in ("half_window", "classes", "similar", "min_similar"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"params.{name}: expected an integer >= 1, got {value!r}")
        if self.half_window > 31:
            raise InputError(f"params.half_window: at most 31 (a 63 x 63 window), got {self.half_window}")
        if not 0 < self.significance < 1:
            raise InputError(f"params.significance: expected a level in (0, 1), got {self.significance!r}")


@lru_cache(maxsize=64)
def f_critical(level: float, df: int) -> float:
    """The F(1, df) value whose upper tail is ``level``: a slope is significant when its F reaches it."""
    from scipy.stats import f

    return float(f.isf(level, 1, df))


def _critical_values(params: EstarfmParams) -> np.ndarray:
    """F(1, df) critical values by df, 0 to 2 x similar - 2: inf at df 0, where two samples fit any line."""
    return np.array([f_critical(params.significance, df) if df > 0 else math.inf
                     for df in range(2 * params.similar - 1)])


def _checked(fine_refs, coarse_refs, coarse_target, valid) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    fine, coarse, target = (np.asarray(a, dtype=np.float64) for a in (fine_refs, coarse_refs, coarse_target))
    if fine.ndim != 4 or fine.shape[0] != 2:
        raise InputError(f"fine_refs: ESTARFM takes two pairs, (2, band, y, x), got shape {fine.shape}")
    if coarse.shape != fine.shape:
        raise InputError(f"coarse_refs: shape {coarse.shape} differs from fine_refs {fine.shape}")
    if target.shape != fine.shape[1:]:
        raise InputError(f"coarse_target: expected shape {fine.shape[1:]}, got {target.shape}")
    ok = np.isfinite(fine).all(axis=(0, 1)) & np.isfinite(coarse).all(axis=(0, 1)) & np.isfinite(target).all(axis=0)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != ok.shape:
            raise InputError(f"valid: expected shape {ok.shape}, got {valid.shape}")
        ok &= valid
    if not ok.any():
        raise InputError("valid: no pixel is valid in all five images")
    return fine, coarse, target, ok


def _thresholds(fine: np.ndarray, ok: np.ndarray, params: EstarfmParams) -> np.ndarray:
    """(pair, band) similarity thresholds: 2 x the band's deviation over valid pixels / classes."""
    return np.array([[fine[p, b][ok].std(ddof=1) * 2.0 / params.classes for b in range(fine.shape[1])]
                     for p in range(2)])


def _window_means(images: np.ndarray, ok: np.ndarray, w: int) -> np.ndarray:
    """(image, band, y, x) mean over each pixel's window (clipped at the edges) of its valid pixels."""
    def box(a: np.ndarray) -> np.ndarray:  # sum over the (2w + 1)^2 window, by an integral image
        s = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(w + 1, w), (w + 1, w)]).cumsum(-2).cumsum(-1)
        return s[..., 2 * w + 1:, 2 * w + 1:] - s[..., :-2 * w - 1, 2 * w + 1:] - s[..., 2 * w + 1:, :-2 * w - 1] \
            + s[..., :-2 * w - 1, :-2 * w - 1]

    count = box(ok.astype(np.float64))
    return box(np.where(ok, images, 0.0)) / np.maximum(count, 1.0)


def _padded(image: torch.Tensor, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    """``image[..., y0:y1, x0:x1]``, NaN wherever the box leaves the image."""
    out = torch.full(image.shape[:-2] + (y1 - y0, x1 - x0), torch.nan, dtype=image.dtype, device=image.device)
    height, width = image.shape[-2:]
    ya, yb, xa, xb = max(y0, 0), min(y1, height), max(x0, 0), min(x1, width)
    out[..., ya - y0:yb - y0, xa - x0:xb - x0] = image[..., ya:yb, xa:xb]
    return out


def _select(slab: torch.Tensor, ok: torch.Tensor, th: torch.Tensor, h: int, wd: int, w: int, k: int):
    """The ``k`` most similar candidates of each tile pixel: (k, n) offset indices and whether each is one.

    ``slab``: (pair, band, h + 2w, wd + 2w) fine values; a candidate is valid and within every threshold
    (strictly) on both dates; its score is the sum of |difference| / threshold, in float32 as the IDL code
    computes (on values divided by the thresholds first, so one subtraction gives both). Ties go to the earlier offset in raster order, the order in which the IDL code lists a
    window's pixels (its own sort leaves ties unordered).
    """
    side = 2 * w + 1
    slab = slab.float() / th.float()[..., None, None]  # in threshold units: a candidate differs by < 1 everywhere
    centre = slab[..., w:w + h, None, w:w + wd]  # (pair, band, h, 1, wd)
    columns = slab.unfold(-1, wd, 1).contiguous()  # (pair, band, h + 2w, side, wd): every horizontal offset
    ok_columns = ok.unfold(-1, wd, 1)
    keys = torch.empty((side, h, side, wd), dtype=torch.int64, device=slab.device)
    index = torch.arange(side, device=slab.device)[None, :, None]
    diff = torch.empty(columns[:, :, :h].shape, dtype=slab.dtype, device=slab.device)  # reused: no allocation
    worst, score = (torch.empty((h, side, wd), dtype=slab.dtype, device=slab.device) for _ in range(2))
    for dy in range(side):  # one row of the window per step: (pair, band, h, side, wd) at once
        torch.sub(columns[:, :, dy:dy + h], centre, out=diff)
        diff.abs_()  # NaN (invalid) is never similar
        torch.amax(diff, dim=(0, 1), out=worst)
        torch.sum(diff, dim=(0, 1), out=score)
        score.masked_fill_(~((worst < 1) & ok_columns[dy:dy + h]), torch.inf)
        torch.bitwise_or(score.view(torch.int32).long() << 12, dy * side + index, out=keys[dy])  # (score, offset)
    keys = keys.permute(0, 2, 1, 3).reshape(side * side, h * wd)
    nearest = torch.topk(keys, min(k, side * side), dim=0, largest=False, sorted=True).values
    return nearest & ((1 << 12) - 1), nearest < _INFINITE_KEY


_INFINITE_KEY = torch.tensor(math.inf, dtype=torch.float32).view(torch.int32).item() << 12
"""A candidate's key is its float32 score's bits (non-negative floats order as their bits) and its offset's
index below them, in 12 bits: up to 4096 offsets, a half window of 31."""


def _gather(slab: torch.Tensor, order: torch.Tensor, h: int, wd: int, w: int) -> torch.Tensor:
    """(..., k, n) values of ``slab`` (..., h + 2w, wd + 2w) at each tile pixel's selected offsets."""
    side, width = 2 * w + 1, wd + 2 * w
    rows = torch.arange(h, device=slab.device).repeat_interleave(wd)
    cols = torch.arange(wd, device=slab.device).repeat(h)
    flat = (rows + order // side) * width + cols + order % side  # (k, n)
    values = slab.flatten(-2)
    return values[..., flat]


def _predict_tile(images: dict[str, torch.Tensor], ok: torch.Tensor, means: torch.Tensor, box: tuple[int, int, int, int],
                  th: torch.Tensor, params: EstarfmParams) -> torch.Tensor:
    """(band, y, x) prediction of the pixels in ``box`` = (y0, y1, x0, x1); NaN where a pixel is invalid."""
    w, (y0, y1, x0, x1) = params.half_window, box
    h, wd = y1 - y0, x1 - x0
    slab = {name: _padded(a, y0 - w, y1 + w, x0 - w, x1 + w) for name, a in images.items()}
    ok_slab = _padded(ok.to(torch.float64), y0 - w, y1 + w, x0 - w, x1 + w) == 1.0
    order, chosen = _select(slab["fine"], ok_slab, th, h, wd, w, params.similar)
    values = {name: torch.where(chosen, _gather(a, order, h, wd, w), 0.0) for name, a in slab.items()}  # (..., k, n)
    n_similar = chosen.sum(0)  # (n,)
    weight = _weights(values["fine"], values["coarse"], order, chosen, w)  # (k, n)
    coefficient = _coefficients(values["fine"], values["coarse"], chosen, n_similar, params)  # (band, n)
    m = means[..., y0:y1, x0:x1].flatten(-2)  # (image, band, n): windows' means of C1, C2, C0
    centre = slab["fine"][..., w:w + h, w:w + wd].flatten(-2)  # (pair, band, n)
    diff = m[2] - m[:2]  # (pair, band, n): the target's coarse image minus each pair's, over the window
    t = _temporal(diff.abs() + 0.01 ** 5)
    change = values["target"][None] - values["coarse"]  # (pair, band, k, n)
    pair_pred = centre + (weight * coefficient[:, None] * change).sum(-2)
    pred = (t * pair_pred).sum(0)
    revised = (t * (weight * values["fine"]).sum(-2)).sum(0)  # a prediction outside the data range
    low, high = params.data_range
    pred = torch.where((pred <= low) | (pred >= high), revised, pred)
    few = (_temporal((diff + 0.01 ** 5).abs()) * (centre + diff + 0.01 ** 5)).sum(0)  # too few similar pixels
    pred = torch.where(n_similar >= params.min_similar, pred, few)
    pred = torch.where(ok[y0:y1, x0:x1].flatten(), pred, torch.nan)
    return pred.view(-1, h, wd)


def _temporal(change: torch.Tensor) -> torch.Tensor:
    """(pair, ...) weights of the two pairs: the inverse of each pair's coarse change, normalised."""
    inverse = 1.0 / change
    return inverse / inverse.sum(0)


def _weights(fine: torch.Tensor, coarse: torch.Tensor, order: torch.Tensor, chosen: torch.Tensor, w: int) -> torch.Tensor:
    """(k, n) weights: 1 / ((1 - spectral correlation) x (1 + distance / w)), normalised over the similar pixels."""
    bands = fine.shape[1]
    x, y = fine.flatten(0, 1), coarse.flatten(0, 1)  # (2 bands, k, n): both dates' spectra of each candidate
    if bands == 1:
        s_d = 1.0 - 0.5 * ((x - y) / (x + y)).abs().sum(0)
    else:
        xm, ym = x - x.mean(0), y - y.mean(0)
        s_d = (xm * ym).sum(0) / (xm.square().sum(0).sqrt() * ym.square().sum(0).sqrt())
    s_d = torch.nan_to_num(s_d, nan=0.5)
    side = 2 * w + 1
    d_d = 1.0 + torch.sqrt(((order // side - w) ** 2 + (order % side - w) ** 2).to(fine.dtype)) / w
    inverse = torch.where(chosen, 1.0 / ((1.0 - s_d) * d_d + 1e-7), 0.0)
    return inverse / inverse.sum(0)


def _coefficients(fine: torch.Tensor, coarse: torch.Tensor, chosen: torch.Tensor, n_similar: torch.Tensor,
                  params: EstarfmParams) -> torch.Tensor:
    """(band, n) conversion coefficients: the slope of fine on coarse over both dates' similar pixels, where
    the coarse images changed enough and the slope is significant and in (0, max]; else 1."""
    mask = chosen[None, None].to(fine.dtype)  # (1, 1, k, n)
    count = 2.0 * n_similar.to(fine.dtype)  # samples: both dates
    mean_c = (coarse * mask).sum(-2) / n_similar  # (pair, band, n)
    change = (mean_c[0] - mean_c[1]).abs()
    x, y = coarse * mask, fine * mask
    mx, my = x.sum((0, 2)) / count, y.sum((0, 2)) / count  # (band, n)
    dx, dy = (x - mx[None, :, None]) * mask, (y - my[None, :, None]) * mask
    sxx, syy, sxy = dx.square().sum((0, 2)), dy.square().sum((0, 2)), (dx * dy).sum((0, 2))
    slope = sxy / sxx
    r2 = sxy.square() / (sxx * syy)
    f_value = r2 * (count - 2) / (1 - r2)  # F(1, 2n - 2) of the regression; r2 = 1 gives inf
    critical = torch.from_numpy(_critical_values(params)).to(fine.device, fine.dtype)
    significant = f_value >= critical[(count - 2).clamp(min=0).long()]
    use = (change >= params.min_coarse_change) & significant & (slope > 0) & (slope <= params.max_coefficient)
    return torch.where(use, slope, 1.0)


def predict_estarfm(fine_refs: np.ndarray, coarse_refs: np.ndarray, coarse_target: np.ndarray, *,
                    valid: np.ndarray | None = None, params: EstarfmParams | None = None,
                    device: torch.device | str | None = None, tile: int | None = None) -> np.ndarray:
    """ESTARFM prediction of the fine image at the target date.

    ``fine_refs``, ``coarse_refs``: the two pairs, (2, band, y, x) reflectance with the coarse images on the
    fine grid; ``coarse_target``: (band, y, x); ``valid``: (y, x), False = nodata (non-finite values are nodata
    too). ``device``: default CUDA when present. ``tile``: the side of the torch path's tiles (memory, not the
    result, depends on it; the CPU kernel goes row by row). Returns float32 (band, y, x), NaN where a pixel is
    not valid in all five.
    """
    params = EstarfmParams() if params is None else params
    fine, coarse, target, ok = _checked(fine_refs, coarse_refs, coarse_target, valid)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    th = _thresholds(fine, ok, params)
    means = _window_means(np.concatenate([coarse, target[None]]), ok, params.half_window)
    return PREDICT.get(device.type, _predict_tiles)(fine, coarse, target, ok, th, means, params, device, tile)


def _predict_tiles(fine, coarse, target, ok, th, means, params: EstarfmParams, device: torch.device,
                   tile: int | None) -> np.ndarray:
    """The torch path: tile by tile, each window offset for a whole tile at once (CUDA)."""
    side = TILE["cuda" if device.type == "cuda" else "cpu"] if tile is None else int(tile)
    th, means = torch.from_numpy(th).to(device), torch.from_numpy(means).to(device)
    images = {name: torch.from_numpy(np.where(ok, a, np.nan)).to(device)
              for name, a in (("fine", fine), ("coarse", coarse), ("target", target))}
    ok_t = torch.from_numpy(ok).to(device)
    # Tiles of equal size (at most ``side``): a thin last tile would cost a whole halo for a few pixels.
    rows, cols = (np.linspace(0, size, -(-size // side) + 1).round().astype(int).tolist() for size in ok.shape)
    out = np.empty(target.shape, np.float32)
    with torch.inference_mode():
        for y0, y1 in zip(rows[:-1], rows[1:]):
            for x0, x1 in zip(cols[:-1], cols[1:]):
                out[:, y0:y1, x0:x1] = _predict_tile(images, ok_t, means, (y0, y1, x0, x1), th, params).cpu().numpy()
    return out


def _predict_fused(fine, coarse, target, ok, th, means, params: EstarfmParams, device: torch.device,
                   tile: int | None) -> np.ndarray:
    """The CPU path: one pass per pixel row over the window (kernels.estarfm_rows; ``tile`` is not used).
    The same similar pixels as the torch path; the float32 outputs agree with it to a unit in the last place."""
    w = params.half_window
    pad = lambda a, value: np.pad(a, [(0, 0)] * (a.ndim - 2) + [(w, w), (w, w)], constant_values=value)  # noqa: E731
    images = [pad(np.where(ok, a, np.nan), np.nan) for a in (fine, coarse, target)]
    scaled = images[0].astype(np.float32) / th.astype(np.float32)[..., None, None]  # as _select, in float32
    return kernels.estarfm_rows(scaled, pad(ok, False), *images, means, _critical_values(params), w, params.similar,
                                params.min_similar, tuple(map(float, params.data_range)),
                                float(params.min_coarse_change), float(params.max_coefficient))


PREDICT = {"cpu": _predict_fused, "cuda": _predict_tiles}
"""The prediction per device type: the same similar pixels (benchmarks/bench_estarfm.py times both on the CPU)."""


def estarfm(fine_refs: np.ndarray, coarse_refs: np.ndarray, coarse_target: np.ndarray, *,
            valid: np.ndarray | None = None, ratio: int | None = None, window: int | None = None) -> np.ndarray:
    """The study's predictor signature for a two-pair method: the IDL code's defaults (51 x 51 window);
    ``window`` (odd, fine pixels) sets another. ``ratio`` is not used by ESTARFM."""
    params = EstarfmParams()
    if window is not None:
        params = EstarfmParams(half_window=check_window(window) // 2)
    pred = predict_estarfm(fine_refs, coarse_refs, coarse_target, valid=valid, params=params)
    return fill_holes("estarfm", pred, fine_refs, coarse_refs, coarse_target, valid)
