"""FSDAF (Zhu et al. 2016, doi:10.1016/j.rse.2015.11.016): a vectorised torch re-implementation of Zhu's
official IDL code (version of 15/02/2019), in reflectance units.

``predict_fsdaf`` runs the seven steps, each a function of its own; docs/methods/fsdaf.md lists the steps,
defaults and every deviation.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields

import numpy as np
import torch
from scipy import ndimage
from scipy.optimize import lsq_linear

from stfusion.data.coarse_pixel import block_mean
from stfusion.errors import InputError
from stfusion.methods.baselines import check_window, fill_holes, kernels

_DN = 10000.0  # the official code's DN range (not the data's reflectance scale): its DN-sized constants are divided by it
_EPS_SIMILARITY = 1e-8 / _DN  # S_S / (F1 + 1e-8)
_EPS_WEIGHT = 1e-6 / _DN  # residual weights + 0.000001
_MAX_WEIGHT = 10.0  # cap of the normalised residual weights
_BIG = torch.iinfo(torch.int64).max  # key of a pixel that is not a candidate
_ID_BITS = 11  # offset index bits in a packed key: (2 w + 1)^2 <= 2048, so w <= 22


@dataclass(frozen=True)
class FsdafParams:
    """Parameters; the first six are the official defaults (DN range 0-10000 -> reflectance 0-1)."""

    half_window: int = 20  # w: 41 x 41 window for HI and similar pixels
    num_similar_pixel: int = 20
    min_class: int = 4
    max_class: int = 6
    num_pure: int = 100  # purest coarse pixels per class for the unmixing
    data_min: float = 0.0  # DN_min / 10000
    data_max: float = 1.0  # DN_max / 10000
    seed: int = 0  # k-means++ initialisation and subsample
    kmeans_iterations: int = 20  # ISODATA ITERATIONS of the official code
    kmeans_sample: int = 262_144  # pixels used to fit the centres (all pixels are then assigned)
    merge_distance: float = 0.05  # ISO_MERGE_DIST = 0.05 DN_max
    min_class_pixels: int = 200  # ISO_MIN_PIXELS
    tps_window: int = 8  # coarse pixels per side of the local TPS
    tile: int = 256  # fine pixels per side of a step-7 tile

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int) and (not isinstance(value, (int, np.integer)) or value < 0):
                raise InputError(f"params.{f.name}: expected a non-negative integer, got {value!r}")
        checks = [
            (1 <= self.half_window <= 22, "half_window", "an integer in [1, 22]"),
            (self.num_similar_pixel >= 1, "num_similar_pixel", "at least 1"),
            (1 <= self.min_class <= self.max_class, "min_class", "1 <= min_class <= max_class"),
            (self.num_pure >= 1, "num_pure", "at least 1"),
            (self.data_min < self.data_max, "data_min", "data_min < data_max"),
            (self.kmeans_sample >= 1, "kmeans_sample", "at least 1"),
            (self.merge_distance >= 0, "merge_distance", "a non-negative number"),
            (self.tps_window >= 2, "tps_window", "at least 2"),
            (self.tile >= 1, "tile", "at least 1"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise InputError(f"params.{name}: expected {expected}, got {getattr(self, name)!r}")


# ---------------------------------------------------------------------------------------------
# Entry points


def fsdaf(fine_ref: np.ndarray, coarse_ref: np.ndarray, coarse_target: np.ndarray, *,
          ratio: int, valid: np.ndarray | None = None, window: int | None = None) -> np.ndarray:
    """The study's predictor signature: default parameters; ``window`` (odd, fine pixels) sets the
    41 x 41 window of the homogeneity index and the similar-pixel filtering to another side."""
    params = FsdafParams()
    if window is not None:
        window = check_window(window)
        params = FsdafParams(half_window=window // 2)
    pred = predict_fsdaf(fine_ref, coarse_ref, coarse_target, valid=valid, ratio=ratio, params=params)
    return fill_holes("fsdaf", pred, fine_ref, coarse_ref, coarse_target, valid)


def predict_fsdaf(fine_ref, coarse_ref, coarse_target, *, ratio: int, valid=None,
                  params: FsdafParams | None = None, device=None, classes=None,
                  timings: dict | None = None) -> np.ndarray:
    """Predict the fine image at t2; float32 (band, y, x) reflectance, NaN where invalid.

    ``valid`` (y, x) marks usable pixels (non-finite pixels are always unusable); ``classes`` is an
    optional (y, x) class map of the fine t1 image (negative = unclassified) that replaces step 1;
    ``timings``, if given, receives the seconds spent in each step.
    """
    params = params or FsdafParams()
    dev = torch.device(device) if device is not None else _default_device()
    f1, c1, c2, ok = _checked(fine_ref, coarse_ref, coarse_target, valid, ratio)
    clock = _Clock(dev, timings)
    f1c = clip_outliers(f1, ok, params.data_min, params.data_max)
    if classes is None:
        cls, k = classify(f1c, ok, params, dev)
    else:
        cls, k = _recode(classes, ok)
    clock("1 classification")
    fractions = class_fractions(cls, k, ratio)
    clock("2 fractions")
    mc1, mc2 = (block_mean(a, ratio, ok) for a in (c1, c2))
    change = unmix(fractions, mc2 - mc1, params.num_pure, what="valid" if valid is not None else "fine_ref")
    clock("3 unmixing")
    t = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
    f1c_t, ok_t, cls_t = t(f1c), t(ok), t(cls)
    f2_tp = f1c_t + t(change.astype(np.float32))[:, cls_t.clamp(min=0)]  # (band, y, x)
    clock("4 temporal prediction")
    f2_sp = tps_interpolate(_fill_empty(mc2), ratio, params.tps_window, dev)
    clock("5 TPS")
    hi = homogeneity_index(cls_t, params.half_window)
    residual = distribute_residual(f1c_t, f2_tp, f2_sp, hi, t(c1), t(c2), ok_t, ratio,
                                   params.data_min, params.data_max)
    del f2_tp, f2_sp, hi
    clock("6 residual distribution")
    out = similar_pixel_filter(t(f1), residual, t(c1), t(c2), ok_t, k, params)
    clock("7 similar-pixel filtering")
    return out.cpu().numpy()


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class _Clock:
    """Records the time of each step into ``timings`` (synchronising CUDA first)."""

    def __init__(self, device: torch.device, timings: dict | None):
        self.device, self.timings, self.last = device, timings, time.perf_counter()

    def __call__(self, step: str) -> None:
        if self.timings is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.timings[step] = now - self.last
        self.last = now


def _checked(fine_ref, coarse_ref, coarse_target, valid, ratio):
    """float32 copies of the images and the mask of usable pixels; InputError on bad input."""
    images = {}
    for name, a in (("fine_ref", fine_ref), ("coarse_ref", coarse_ref), ("coarse_target", coarse_target)):
        a = np.asarray(a, dtype=np.float32)
        if a.ndim != 3 or 0 in a.shape:
            raise InputError(f"{name}: expected a non-empty (band, y, x) array, got shape {a.shape}")
        images[name] = a
    shape = images["fine_ref"].shape
    for name in ("coarse_ref", "coarse_target"):
        if images[name].shape != shape:
            raise InputError(f"{name}: shape {images[name].shape} (band, y, x) differs from fine_ref {shape}; "
                             "expected the same bands on the same (fine) grid")
    _, h, w = shape
    if isinstance(ratio, bool) or not isinstance(ratio, (int, np.integer)) or ratio < 1:
        raise InputError(f"ratio: expected a positive integer (coarse/fine pixel size), got {ratio!r}")
    if h % ratio or w % ratio:
        raise InputError(f"ratio: {ratio} does not divide the fine grid {h} x {w}; crop to whole coarse pixels")
    if h // ratio < 2 or w // ratio < 2:
        raise InputError(f"ratio: the {h} x {w} grid holds {h // ratio} x {w // ratio} coarse pixels; "
                         "FSDAF needs at least 2 x 2")
    ok = np.logical_and.reduce([np.isfinite(a).all(axis=0) for a in images.values()])
    if valid is not None:
        valid = np.asarray(valid)
        if valid.shape != (h, w):
            raise InputError(f"valid: shape {valid.shape} differs from the image grid {(h, w)}")
        ok &= valid.astype(bool)
    if not ok.any():
        raise InputError("valid: no usable pixel (all nodata, or not finite in fine_ref/coarse_ref/coarse_target)"
                         if valid is not None else "fine_ref: no pixel is finite in all of fine_ref, coarse_ref "
                         "and coarse_target (all nodata)")
    return images["fine_ref"], images["coarse_ref"], images["coarse_target"], ok


# ---------------------------------------------------------------------------------------------
# Step 1: outlier clip and classification


def clip_outliers(fine: np.ndarray, valid: np.ndarray, data_min: float, data_max: float) -> np.ndarray:
    """The official 0.01 % / 99.99 % clip per band, over the valid pixels (others left as they are)."""
    out = fine.copy()
    n = int(valid.sum())
    i_lo, i_hi = n // 10000, (9999 * n) // 10000  # Value_Locate(findgen(n+1)/n, [1e-4, 0.9999])
    for band in out:
        v = band[valid]
        p_lo, p_hi = np.partition(v, [i_lo, i_hi])[[i_lo, i_hi]]
        above = v[(v > p_lo) & (v >= data_min)]
        if above.size:
            v[(v <= p_lo) | (v < data_min)] = above.min()
        below = v[(v < p_hi) & (v <= data_max)]
        if below.size:
            v[(v >= p_hi) | (v > data_max)] = below.max()
        band[valid] = v
    return out


def classify(fine: np.ndarray, valid: np.ndarray, params: FsdafParams, device=None) -> tuple[np.ndarray, int]:
    """Deterministic k-means classes of the valid pixels: (class map with -1 where invalid, k)."""
    device = torch.device(device) if device is not None else _default_device()
    x = torch.as_tensor(np.ascontiguousarray(fine[:, valid].T), device=device)  # (n, band)
    gen = torch.Generator().manual_seed(params.seed)
    pick = torch.randperm(len(x), generator=gen)[: params.kmeans_sample].sort().values
    sample = x[pick.to(device)].cpu()
    for k in range(params.max_class, params.min_class - 1, -1):
        centres = _kmeans(sample, k, params.kmeans_iterations, torch.Generator().manual_seed(params.seed))
        labels = _nearest(x, centres.to(device))
        counts = torch.bincount(labels, minlength=k).cpu()
        gaps = torch.pdist(centres.double()) if k > 1 else torch.tensor([math.inf])
        if gaps.min() >= params.merge_distance and counts.min() >= params.min_class_pixels:
            break
    classes = np.full(valid.shape, -1, dtype=np.int64)
    classes[valid] = labels.cpu().numpy()
    return _recode(classes, valid)


def _kmeans(x: torch.Tensor, k: int, iterations: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding then Lloyd iterations (float64 sums) on the CPU: deterministic."""
    centres = x[torch.randint(len(x), (1,), generator=gen)]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        i = torch.multinomial(d2 / total, 1, generator=gen) if total > 0 else torch.randint(len(x), (1,), generator=gen)
        centres = torch.cat([centres, x[i]])
        d2 = torch.minimum(d2, ((x - x[i]) ** 2).sum(1))
    labels = None
    for _ in range(iterations):
        new = _nearest(x, centres)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        sums = torch.zeros(k, x.shape[1], dtype=torch.float64).index_add_(0, labels, x.double())
        counts = torch.bincount(labels, minlength=k)
        filled = counts > 0  # an empty cluster keeps its centre
        centres = centres.clone()
        centres[filled] = (sums[filled] / counts[filled, None]).float()
    return centres


def _nearest(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre (squared Euclidean distance; first one on ties)."""
    d = torch.stack([((x - c) ** 2).sum(1) for c in centres], 1)
    return d.argmin(1)


def _recode(classes, valid: np.ndarray) -> tuple[np.ndarray, int]:
    """Classes 0..k-1 in order of their labels, -1 where invalid or negative (as the code's recode)."""
    classes = np.asarray(classes)
    if classes.shape != valid.shape:
        raise InputError(f"classes: shape {classes.shape} differs from the image grid {valid.shape}")
    if not np.issubdtype(classes.dtype, np.integer):
        raise InputError(f"classes: expected integer class labels, got dtype {classes.dtype}")
    use = valid & (classes >= 0)
    labels, inverse = np.unique(classes[use], return_inverse=True)
    if labels.size == 0:
        raise InputError("classes: no valid pixel has a class (all negative)")
    out = np.full(valid.shape, -1, dtype=np.int64)
    out[use] = inverse
    return out, int(labels.size)


# ---------------------------------------------------------------------------------------------
# Steps 2-3: fractions and unmixing


def class_fractions(classes: np.ndarray, num_class: int, ratio: int) -> np.ndarray:
    """(class, Hc, Wc) fraction of each class in each coarse pixel; 0 where a coarse pixel has nodata."""
    h, w = classes.shape
    blocks = np.asarray(classes).reshape(h // ratio, ratio, w // ratio, ratio)
    counts = np.stack([(blocks == c).sum(axis=(1, 3)) for c in range(num_class)])
    fractions = counts / float(ratio * ratio)
    fractions[:, fractions.sum(0) <= 0.999] = 0.0
    return fractions


def unmix(fractions: np.ndarray, coarse_change: np.ndarray, num_pure: int, *, what: str = "fine_ref") -> np.ndarray:
    """(band, class) temporal change of each class by bounded least squares on the purest coarse pixels.

    ``coarse_change``: (band, Hc, Wc) change of the coarse block means, NaN where a coarse pixel has
    no valid fine pixel; ``what`` names the argument blamed when a class has no pure coarse pixel.
    """
    k = fractions.shape[0]
    f = fractions.reshape(k, -1)
    chosen = []
    for c in range(k):
        n = min(int((f[c] > 0.01).sum()), num_pure)
        if n == 0:
            raise InputError(f"{what}: too few pure coarse pixels: class {c} of {k} is in no coarse pixel whose "
                             "fine pixels are all valid (with fraction > 0.01), so its change cannot be unmixed")
        chosen.append(np.argsort(-f[c], kind="stable")[:n])
    result = np.empty((coarse_change.shape[0], k))
    for b, band in enumerate(coarse_change.reshape(len(coarse_change), -1)):
        finite = band[np.isfinite(band)]
        spread = finite.std(ddof=1) if finite.size > 1 else 0.0
        low, high = finite.min() - spread, finite.max() + spread
        rows, y = [], []
        for sel in chosen:
            dc = band[sel]
            ranked = np.sort(dc)
            q10, q90 = ranked[len(dc) // 10], ranked[(9 * len(dc)) // 10]  # Value_Locate, as in the code
            keep = sel[(dc >= q10) & (dc <= q90)]
            rows.append(f[:, keep].T)
            y.append(band[keep])
        if high > low:
            result[b] = lsq_linear(np.vstack(rows), np.concatenate(y), bounds=(low, high), method="bvls").x
        else:  # no spread of the coarse change: the bounds fix every class change
            result[b] = low
    return result


# ---------------------------------------------------------------------------------------------
# Step 5: thin-plate spline


def _fill_empty(blocks: np.ndarray) -> np.ndarray:
    """Coarse pixels without valid fine pixels (NaN) take the value of the nearest one with some."""
    empty = np.isnan(blocks[0])
    if not empty.any():
        return blocks
    idx = ndimage.distance_transform_edt(empty, return_distances=False, return_indices=True)
    return blocks[:, idx[0], idx[1]]


def _window_start(n_fine: int, ratio: int, m: int, n_coarse: int) -> np.ndarray:
    """First coarse index of the m nearest coarse centres (along one axis) of each fine pixel."""
    y = np.arange(n_fine)
    # floor((y - (ratio - 1)/2) / ratio - m/2 + 1), in integers; clamped to the grid
    return np.clip((2 * y + ratio + 1 - m * ratio) // (2 * ratio), 0, n_coarse - m)


def _tps_weights(my: int, mx: int, ry: np.ndarray, rx: np.ndarray, ratio: int) -> np.ndarray:
    """(len(ry), len(rx), my, mx) TPS interpolation weights of the centres of an my x mx window
    for fine pixels at offsets (ry, rx) from the window origin (coordinates in coarse pixels)."""
    half = (ratio - 1) / (2 * ratio)
    cy, cx = np.meshgrid(np.arange(my) + half, np.arange(mx) + half, indexing="ij")
    centres = np.c_[cy.ravel(), cx.ravel()]
    qy, qx = np.meshgrid(ry / ratio, rx / ratio, indexing="ij")
    queries = np.c_[qy.ravel(), qx.ravel()]

    def kernel(a, b):
        r = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
        return np.where(r > 0, r * r * np.log(np.where(r > 0, r, 1.0)), 0.0)

    n = len(centres)
    poly = np.c_[np.ones(n), centres]
    system = np.block([[kernel(centres, centres), poly], [poly.T, np.zeros((3, 3))]])
    rhs = np.c_[kernel(queries, centres), np.ones(len(queries)), queries].T
    weights = np.linalg.solve(system, rhs)[:n].T  # the system is symmetric
    return weights.reshape(len(ry), len(rx), my, mx)


def tps_interpolate(blocks: np.ndarray, ratio: int, window: int = 8, device=None) -> torch.Tensor:
    """(band, Hc, Wc) coarse values -> (band, Hc ratio, Wc ratio) float32 local thin-plate spline."""
    device = torch.device(device) if device is not None else _default_device()
    nb, hc, wc = blocks.shape
    my, mx = min(window, hc), min(window, wc)
    sy, sx = _window_start(hc * ratio, ratio, my, hc), _window_start(wc * ratio, ratio, mx, wc)
    ry, iy = np.unique(np.arange(hc * ratio) - sy * ratio, return_inverse=True)
    rx, ix = np.unique(np.arange(wc * ratio) - sx * ratio, return_inverse=True)
    weights = torch.as_tensor(_tps_weights(my, mx, ry, rx, ratio), dtype=torch.float32, device=device)
    values = torch.as_tensor(blocks, dtype=torch.float32, device=device)
    # values[b, row, x, c] = blocks[b, row, sx[x] + c]: the window columns of every fine column
    cols = torch.as_tensor(sx[:, None] + np.arange(mx), device=device)
    values = values[:, :, cols]  # (band, Hc, W, mx)
    ix_t = torch.as_tensor(ix, device=device)
    out = torch.empty(nb, hc * ratio, wc * ratio, device=device)
    for start in np.unique(sy):  # rows sharing a window: one batched product per group (bounded memory)
        rows = np.flatnonzero(sy == start)
        w_rows = weights[torch.as_tensor(iy[rows], device=device)][:, ix_t]  # (r, W, my, mx)
        out[:, rows[0]: rows[-1] + 1] = torch.einsum("rxac,baxc->brx", w_rows, values[:, start: start + my])
    return out


# ---------------------------------------------------------------------------------------------
# Step 6: homogeneity index and residual distribution


def _box_count(mask: torch.Tensor, w: int) -> torch.Tensor:
    """Number of true pixels in the (2w+1)^2 window around each pixel (window clipped at the edges)."""
    h, wd = mask.shape
    integral = torch.nn.functional.pad(mask.to(torch.int64).cumsum(0).cumsum(1), (1, 0, 1, 0))
    y0 = torch.arange(h, device=mask.device).sub(w).clamp(0, h)
    y1 = torch.arange(h, device=mask.device).add(w + 1).clamp(0, h)
    x0 = torch.arange(wd, device=mask.device).sub(w).clamp(0, wd)
    x1 = torch.arange(wd, device=mask.device).add(w + 1).clamp(0, wd)
    return (integral[y1][:, x1] - integral[y0][:, x1] - integral[y1][:, x0] + integral[y0][:, x0])


def homogeneity_index(classes, half_window: int) -> torch.Tensor:
    """HI: share of the valid pixels in the window with the class of the centre (0 where invalid)."""
    classes = torch.as_tensor(classes)
    total = _box_count(classes >= 0, half_window).clamp(min=1)
    hi = torch.zeros(classes.shape, dtype=torch.float32, device=classes.device)
    for c in range(int(classes.max()) + 1):
        member = classes == c
        hi = torch.where(member, _box_count(member, half_window) / total, hi).float()
    return hi


def distribute_residual(fine, f2_tp, f2_sp, hi, coarse_ref, coarse_target, valid, ratio: int,
                        data_min: float, data_max: float) -> torch.Tensor:
    """(band, y, x) change F2 - F1 after distributing the coarse residual; 0 where invalid.

    ``fine`` is the clipped fine image at t1, ``f2_tp``/``f2_sp`` the temporal/spatial predictions,
    ``coarse_ref``/``coarse_target`` the coarse images on the fine grid.
    """
    fine, f2_tp, f2_sp, hi, c1, c2, valid = (torch.as_tensor(a) for a in
                                             (fine, f2_tp, f2_sp, hi, coarse_ref, coarse_target, valid))
    nb, h, w = fine.shape
    hc, wc = h // ratio, w // ratio

    def mean(a):  # block mean over the valid pixels, broadcast back to the fine grid
        return (block_mean(a, ratio, valid)[:, None, :, None]).expand(hc, ratio, wc, ratio).reshape(h, w)

    out = torch.zeros_like(fine)
    for b in range(nb):
        r = (mean(c2[b]) - mean(c1[b])) - (mean(f2_tp[b]) - mean(fine[b]))  # float64 residual R
        e = f2_sp[b].double() - f2_tp[b]
        e = torch.where(r <= 0, e.clamp(max=0), e.clamp(min=0)).abs()  # the code's sign filter
        wgt = torch.where(valid, e * hi + r.abs() * (1 - hi) + _EPS_WEIGHT, 0.0)
        wgt = wgt / mean(wgt)
        wgt = torch.where(wgt > _MAX_WEIGHT, mean(wgt), wgt)  # avoid extreme weights, as the code
        wgt = wgt / mean(wgt)
        f2 = f2_tp[b] + (wgt * r).float()
        lo = max(min(c2[b][valid].min().item(), f2_tp[b][valid].min().item()), data_min)
        hi_ = min(max(c2[b][valid].max().item(), f2_tp[b][valid].max().item()), data_max)
        out[b] = torch.where(valid, f2.clamp(lo, hi_) - fine[b], 0.0)
    return out


# ---------------------------------------------------------------------------------------------
# Step 7: similar-pixel filtering


def similarity_thresholds(fine: torch.Tensor, valid: torch.Tensor, num_class: int) -> torch.Tensor:
    """2 std / n_classes per band over the valid pixels (ddof 1); a tiny positive value if 0."""
    std = torch.stack([band[valid].double().std() if valid.sum() > 1 else torch.tensor(0.0, dtype=torch.float64)
                       for band in fine])
    th = (2.0 * std / num_class).float()
    return th.clamp(min=torch.finfo(torch.float32).tiny)


def similar_pixel_filter(fine, change, coarse_ref, coarse_target, valid, num_class: int,
                         params: FsdafParams) -> torch.Tensor:
    """Final FSDAF prediction (band, y, x): F1 + weighted change of the similar pixels; NaN where invalid."""
    fine, change, c1, c2, valid = (torch.as_tensor(a) for a in (fine, change, coarse_ref, coarse_target, valid))
    w, t = params.half_window, params.tile
    th = similarity_thresholds(fine, valid, num_class)
    fp = torch.nn.functional.pad(torch.where(valid, fine, 0.0), (w, w, w, w))  # NaN-free, padding invalid
    cp = torch.nn.functional.pad(torch.where(valid, change, 0.0), (w, w, w, w))
    vp = torch.nn.functional.pad(valid, (w, w, w, w))
    k = min(params.num_similar_pixel, (2 * w + 1) ** 2)
    weighted = FILTER.get(fine.device.type, _filter_tiled)(fp, cp, vp, th, w, k, t)
    f2 = fine + weighted
    # revise predictions outside the data range with F1 + C2 - C1, as the code
    alt = fine + c2 - c1
    f2 = torch.where(f2 < params.data_min, alt.clamp(params.data_min, params.data_max), f2)
    f2 = torch.where(f2 > params.data_max, alt.clamp(params.data_min, params.data_max), f2)
    return torch.where(valid, f2, torch.nan)


def _filter_tiled(fp: torch.Tensor, cp: torch.Tensor, vp: torch.Tensor, th: torch.Tensor, w: int, k: int,
                  tile: int) -> torch.Tensor:
    """The weighted change of every pixel, tile by tile in torch (the CUDA path); inputs padded by w."""
    nb, h, wd = fp.shape[0], fp.shape[1] - 2 * w, fp.shape[2] - 2 * w
    tiles = [(y0, min(y0 + tile, h), x0, min(x0 + tile, wd)) for y0 in range(0, h, tile) for x0 in range(0, wd, tile)]

    def run(tile):
        y0, y1, x0, x1 = tile
        window = (slice(y0, y1 + 2 * w), slice(x0, x1 + 2 * w))
        return _filter_tile(fp[(slice(None), *window)], cp[(slice(None), *window)], vp[window], th, w, k)

    weighted = torch.empty(nb, h, wd, device=fp.device)
    # On the CPU the loop runs thousands of small ops per tile: one tile per thread with single-threaded
    # ops stays fast when other jobs share the cores, where splitting every op across threads collapses.
    workers = torch.get_num_threads() if fp.device.type == "cpu" else 1
    threads = torch.get_num_threads()
    try:
        if workers > 1:
            torch.set_num_threads(1)
        with ThreadPoolExecutor(workers) as pool:
            for (y0, y1, x0, x1), result in zip(tiles, pool.map(run, tiles)):
                weighted[:, y0:y1, x0:x1] = result
    finally:
        torch.set_num_threads(threads)
    return weighted


def _filter_fused(fp: torch.Tensor, cp: torch.Tensor, vp: torch.Tensor, th: torch.Tensor, w: int, k: int,
                  tile: int) -> torch.Tensor:
    """``_filter_tiled`` on the CPU in one pass per pixel and no tiles (kernels.fsdaf_similar_pixels, same bits)."""
    order, key_factor, weight_factor = _offset_tables(w, "cpu")
    return torch.from_numpy(kernels.fsdaf_similar_pixels(
        fp.numpy(), cp.numpy(), vp.numpy(), th.numpy(), np.float32(_EPS_SIMILARITY), w, k, order.astype(np.int64),
        key_factor, weight_factor.numpy(), _ID_BITS))


FILTER = {"cpu": _filter_fused, "cuda": _filter_tiled}
"""Step 7 per device type; both give the same bits (benchmarks/bench_fsdaf.py times both on the CPU)."""


def _sum_in_order(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum along ``dim`` from first to last, as the fused kernel (torch.sum's order depends on the CPU's vectors)."""
    parts = x.unbind(dim)
    total = parts[0].clone()
    for part in parts[1:]:
        total += part
    return total


def _offset_tables(w: int, device) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Window offsets (raster index) nearest first, and per offset the float32 key factor 10 + D/w
    and weight factor 1 + D/w."""
    dy, dx = np.meshgrid(np.arange(-w, w + 1), np.arange(-w, w + 1), indexing="ij")
    dist = np.sqrt(dy**2 + dx**2).ravel()
    order = np.lexsort((np.arange(dist.size), dist))
    return order, (10.0 + dist / w).astype(np.float32), torch.as_tensor((1.0 + dist / w).astype(np.float32), device=device)


def _relative_difference(diff: torch.Tensor, den: torch.Tensor, out: torch.Tensor) -> None:
    """out = sum_b diff_b / den_b in band order (addcdiv gives the bits of out + diff_b / den_b)."""
    torch.div(diff[0], den[0], out=out)
    for b in range(1, len(diff)):
        out.addcdiv_(diff[b], den[b])


def _pack(key: torch.Tensor, offset: int, signed: bool) -> torch.Tensor:
    """int64 keys ordered as (float32 key, offset): order-preserving float bits, then the offset."""
    bits = key.view(torch.int32)
    if signed:  # negative floats: flip the magnitude bits so that the integer order is the float order
        bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (bits.to(torch.int64) << _ID_BITS) | offset


def _unpack(packed: torch.Tensor, signed: bool) -> torch.Tensor:
    """The float32 key of packed keys (+inf for the empty marker)."""
    bits = (packed >> _ID_BITS).to(torch.int32)
    if signed:
        bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return torch.where(packed == _BIG, torch.inf, bits.view(torch.float32))


def _filter_tile(fp: torch.Tensor, cp: torch.Tensor, vp: torch.Tensor, th: torch.Tensor, w: int, k: int) -> torch.Tensor:
    """Weighted change of one tile; fp/cp/vp are the tile plus a halo of w (padding is invalid)."""
    nb, ph, pw = fp.shape
    th_, tw = ph - 2 * w, pw - 2 * w
    n, side, dev = th_ * tw, 2 * w + 1, fp.device
    centre = fp[:, w: w + th_, w: w + tw].contiguous().view(nb, n)
    den = centre + _EPS_SIMILARITY
    signed = bool((den < 0).any())  # negative reflectance gives negative keys
    order, key_factor, weight_factor = _offset_tables(w, dev)
    thr, valid = th.to(dev)[:, None], vp.reshape(-1)
    corner = (torch.arange(th_, device=dev)[:, None] * pw + torch.arange(tw, device=dev)).reshape(-1)
    s = torch.empty(n, device=dev)

    def similarity(offset: int) -> tuple[torch.Tensor, int]:
        """|F1(nb) - F1(c)| per band, the key (S + 1e-5)(10 + D/w) in s, and the flat shift."""
        iy, ix = divmod(offset, side)
        diff = torch.nn.functional.l1_loss(fp[:, iy: iy + th_, ix: ix + tw], centre.view(nb, th_, tw),
                                           reduction="none").view(nb, n)
        _relative_difference(diff, den, s)
        s.add_(1e-5).mul_(float(key_factor[offset]))
        return diff, iy * pw + ix

    def candidate(diff: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """valid and |difference| < threshold in every band (d - th < 0 exactly when d < th)."""
        return ((diff - thr).amax(0) < 0) & valid[at]

    # dense start: the nearest offsets (most of the final choice) through one top-k
    dense = min(side * side, max(k, 64))
    keys = torch.empty(dense, n, dtype=torch.int64, device=dev)
    for j, offset in enumerate(order[:dense].tolist()):
        diff, shift = similarity(offset)
        keys[j] = _pack(s, offset, signed).masked_fill_(~candidate(diff, corner + shift), _BIG)
    best = torch.topk(keys.T, k, dim=1, largest=False, sorted=False).values.contiguous()  # (pixel, k)
    del keys
    worst, worst_at = best.max(1)
    worst_key = _unpack(worst, signed)
    # sparse rest: only pixels whose key can beat the worst of their buffer are tested (a few %)
    for offset in order[dense:].tolist():
        diff, shift = similarity(offset)
        idx = torch.nonzero(s <= worst_key).squeeze(1)
        if idx.numel() == 0:
            continue
        key = _pack(s[idx], offset, signed)
        keep = torch.nonzero(candidate(diff[:, idx], corner[idx] + shift) & (key < worst[idx])).squeeze(1)
        if keep.numel():
            idx, key = idx[keep], key[keep]
            best[idx, worst_at[idx]] = key
            worst[idx], worst_at[idx] = best[idx].max(1)
            worst_key[idx] = _unpack(worst[idx], signed)
    best = torch.sort(best, dim=1).values.T.reshape(k, th_, tw)  # ascending key: a fixed order for the sums
    chosen = best != _BIG
    ids = torch.where(chosen, best & ((1 << _ID_BITS) - 1), (side * side) // 2)  # filler: the centre
    flat = (corner.view(th_, tw) + (ids // side) * pw + ids % side).reshape(-1)
    nbr = fp.reshape(nb, -1)[:, flat].reshape(nb, k * n)
    s = torch.empty(k * n, device=dev)
    _relative_difference((nbr - centre.repeat(1, k)).abs_(), den.repeat(1, k), s)
    cd = torch.where(chosen, 1.0 / (weight_factor[ids] * (s.view(k, th_, tw) + 1.0)), 0.0)
    weight = cd / _sum_in_order(cd, 0)
    change = cp.reshape(nb, -1)[:, flat].reshape(nb, k, th_, tw)
    return _sum_in_order(weight * change, 1)
