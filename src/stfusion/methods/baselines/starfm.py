"""STARFM (Gao et al. 2006, doi:10.1109/TGRS.2006.872081) as Gao's C code v1.2.1 computes it, vectorised in torch.

``starfm(fine_ref, coarse_ref, coarse_target, *, valid, ratio, window)`` follows the C code rule by rule,
in its integer units, so every threshold test is exact; docs/methods/starfm.md lists the rules and the
deviations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from stfusion.methods.baselines import check_window, fill_holes, kernels
from stfusion.errors import InputError
from stfusion.units import REFLECTANCE_SCALE

__all__ = ["StarfmParams", "predict_starfm", "starfm"]

TILE = {"cpu": 512, "cuda": 2048}
"""Default tile side in fine pixels. On the CPU the fused kernel's working set for one output row (the
window's rows of one band, 12 bytes per pixel) stays in L2 up to ~800 px; 512 was fastest on 2 cores (256:
+19 %, 1024: +3 %). On CUDA larger tiles amortise kernel launches."""


@dataclass(frozen=True)
class StarfmParams:
    """The C code's parameters, for reflectance in [0, 1] (C keys in capitals)."""

    max_search_distance: float = 750.0  # MAX_SEARCH_DISTANCE, metres
    resolution: float = 25.0  # RESOLUTION, metres per fine pixel
    num_slice_pure_test: int = 40  # NUM_SLICE_PURE_TEST
    landsat_uncertainty: float = 0.005  # LANDSAT_UNCERTAINTY (50 x 1e-4)
    modis_uncertainty: float = 0.005  # MODIS_UNCERTAINTY
    data_range: tuple[float, float] = (0.0, 1.0)  # LANDSAT_/MODIS_DATA_RANGE
    reflectance_scale: float = float(REFLECTANCE_SCALE)  # SCALE_FACTOR: stored units per unit reflectance
    use_spatial: bool = True  # USE_SPATIAL_FLAG
    symmetric_window: bool = False  # True: -h..+h instead of the C code's -h..h-1

    def __post_init__(self) -> None:
        def fail(name: str, why: str) -> None:
            raise InputError(f"params.{name}: {getattr(self, name)!r} {why}")

        for name in ("max_search_distance", "resolution", "reflectance_scale", "landsat_uncertainty", "modis_uncertainty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                fail(name, "is not a finite number >= 0")
        if self.resolution <= 0 or self.reflectance_scale <= 0:
            fail("resolution" if self.resolution <= 0 else "reflectance_scale", "must be positive")
        if isinstance(self.num_slice_pure_test, bool) or not isinstance(self.num_slice_pure_test, int) or self.num_slice_pure_test < 1:
            fail("num_slice_pure_test", "is not an integer >= 1")
        if self.use_spatial and int(2 * self.max_search_distance / self.resolution) < 1:
            fail("max_search_distance", f"gives an empty window at resolution {self.resolution}")
        try:
            low, high = (float(v) for v in self.data_range)
            increasing = math.isfinite(low + high) and round(high * self.reflectance_scale) > round(low * self.reflectance_scale)
        except (TypeError, ValueError):
            increasing = False
        if not increasing:
            fail("data_range", "is not an increasing (low, high) pair of reflectances")

    @property
    def offsets(self) -> range:
        """Window offsets along each axis, in fine pixels (rule 0)."""
        if not self.use_spatial:
            return range(0, 1)
        size = int(2 * self.max_search_distance / self.resolution)  # C: WIN_SIZE
        last = size // 2 if self.symmetric_window else size - 1 - size // 2
        return range(-(size // 2), last + 1)

    def units(self) -> dict[str, int]:
        """Data range and uncertainties in the C code's integer units (rules 1 and 3)."""
        s = self.reflectance_scale
        to_int = lambda value: int(value * s + 1e-6)  # C truncates; the guard absorbs 0.005 * 10000 = 49.99..
        r0, r1 = round(self.data_range[0] * s), round(self.data_range[1] * s)
        u_m, u_l = to_int(self.modis_uncertainty), to_int(self.landsat_uncertainty)
        r_msr, r_lsr = int(math.sqrt(2 * u_m * u_m)), int(math.sqrt(u_m * u_m + u_l * u_l))
        return {"r0": r0, "r1": r1, "r_msr": r_msr, "r_lsr": r_lsr,
                "combined": int(math.sqrt(r_msr * r_msr + r_lsr * r_lsr))}


# ---------------------------------------------------------------------------------------------
# Inputs


def _checked(fine_refs, coarse_refs, coarse_target, valid, ratio) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pair, band, y, x) fine and coarse, (band, y, x) target, (pair, y, x) mask; errors name the argument."""
    fine, coarse, target = (np.asarray(a, dtype=np.float32) for a in (fine_refs, coarse_refs, coarse_target))
    if fine.ndim not in (3, 4):
        raise InputError(f"fine_refs: expected (band, y, x) or (pair, band, y, x), got shape {fine.shape}")
    fine = fine if fine.ndim == 4 else fine[None]
    coarse = coarse if coarse.ndim == 4 else coarse[None]
    if coarse.shape != fine.shape:
        raise InputError(f"coarse_refs: shape {np.shape(coarse_refs)} differs from fine_refs {np.shape(fine_refs)}")
    if target.ndim != 3 or target.shape[0] != fine.shape[1]:
        raise InputError(f"coarse_target: expected ({fine.shape[1]} bands, y, x) like fine_refs, got shape {target.shape}")
    if target.shape[1:] != fine.shape[2:]:
        raise InputError(f"coarse_target: grid {target.shape[1:]} differs from fine_refs {fine.shape[2:]}")
    pairs, _, height, width = fine.shape
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, np.integer)) or ratio < 1
                              or height % ratio or width % ratio):
        raise InputError(f"ratio: {ratio!r} does not divide the fine grid {height} x {width} into whole coarse pixels")
    if valid is None:
        mask = np.ones((pairs, height, width), bool)
    else:
        mask = np.asarray(valid, dtype=bool)
        if mask.shape not in ((height, width), (pairs, height, width)):
            raise InputError(f"valid: expected shape {(height, width)} or {(pairs, height, width)}, got {mask.shape}")
        mask = np.broadcast_to(mask, (pairs, height, width))
        if not mask.any():
            raise InputError("valid: no pixel is valid")
    return fine, coarse, target, mask


def _to_units(image: np.ndarray, u: dict[str, int], scale: float, name: str) -> np.ndarray:
    """Integer units as float32 (exact), NaN where non-finite or outside the data range (inclusive, as the C test)."""
    out = np.empty(image.shape, np.float32)
    for index in np.ndindex(image.shape[:-2]):  # one band at a time bounds the float64 temporaries
        with np.errstate(invalid="ignore"):
            units = np.rint(image[index].astype(np.float64) * scale)
            units[~((units >= u["r0"]) & (units <= u["r1"]))] = np.nan  # also NaN -> NaN
        out[index] = units
    if np.isnan(out).all():
        raise InputError(f"{name}: no valid pixel (all NaN or outside the data range)")
    return out


def _slices(fine_units: np.ndarray, params: StarfmParams, u: dict[str, int]) -> np.ndarray:
    """Rule 1: the (pair, band) similarity thresholds from the whole valid fine bands."""
    slices = np.zeros(fine_units.shape[:2], np.int64)
    for p, b in np.ndindex(slices.shape):
        x = fine_units[p, b]
        with np.errstate(invalid="ignore"):
            x = x[(x > u["r0"]) & (x < u["r1"])].astype(np.float64)  # doStatistics: strict range, unmasked
        if x.size == 0:
            raise InputError(f"fine_refs: pair {p} band {b} has no valid pixel inside the data range")
        n, sum_x, sum_x2 = float(x.size), x.sum(), (x * x).sum()  # integer sums: exact in float64
        stdev = int(math.sqrt(max(sum_x2 / n - (sum_x / n) * (sum_x / n), 0.0)))
        slices[p, b] = int(stdev * 2.0 / params.num_slice_pure_test + 0.5)
    return slices


def _padded(image: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """``image[..., y0:y1, x0:x1]`` with NaN (invalid) wherever the box leaves the image."""
    out = np.full(image.shape[:-2] + (y1 - y0, x1 - x0), np.nan, np.float32)
    height, width = image.shape[-2:]
    ya, yb, xa, xb = max(y0, 0), min(y1, height), max(x0, 0), min(x1, width)
    out[..., ya - y0:yb - y0, xa - x0:xb - x0] = image[..., ya:yb, xa:xb]
    return out


# ---------------------------------------------------------------------------------------------
# One tile


def _predict_tile(images: tuple[np.ndarray, np.ndarray, np.ndarray], box: tuple[int, int, int, int],
                  slices: torch.Tensor, params: StarfmParams, u: dict[str, int], device: torch.device) -> np.ndarray:
    """Predict the fine pixels in ``box`` = (y0, y1, x0, x1); returns (band, y, x) reflectance."""
    before, after = -params.offsets[0], params.offsets[-1]  # the window's reach up/left and down/right
    y0, y1, x0, x1 = box
    slabs = [torch.from_numpy(_padded(a, y0 - before, y1 + after, x0 - before, x1 + after)).to(device) for a in images]
    nb, centre = _terms(*slabs, y1 - y0, before, slices, u)
    sum_w, sum_wp = ACCUMULATE.get(device.type, _accumulate)(nb, centre, params, before, slabs[0].shape[-1])
    crop = lambda x: x.sum(0).view(-1, y1 - y0, slabs[0].shape[-1])[..., before:before + x1 - x0]  # sum over pairs
    sum_w, sum_wp = crop(sum_w), crop(sum_wp)
    units = sum_wp / sum_w + u["r0"]
    good = (sum_w > 0) & (units > u["r0"]) & (units < u["r1"])  # rule 7: fill outside the data range
    return torch.where(good, units / params.reflectance_scale, torch.nan).cpu().numpy()


def _terms(fine: torch.Tensor, coarse: torch.Tensor, target: torch.Tensor, h: int, before: int,
           slices: torch.Tensor, u: dict[str, int]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Everything that depends on the neighbour only or on the centre only, computed once per tile.

    Inputs are padded slabs in integer units, NaN = invalid. Neighbour terms are flattened and padded
    by the reach, so that offset (dy, dx) is the contiguous slice [k, k + n) of them; centre terms
    cover the ``h`` tile rows and every padded column (n = h x padded width).
    """
    span = u["r1"] - u["r0"]  # values are shifted to [0, span], so int16 holds every integer term
    int_type = torch.int16 if 2 * span + 1 <= torch.iinfo(torch.int16).max else torch.int32
    zero = torch.zeros((), device=fine.device)
    ok = fine.isfinite() & coarse.isfinite() & target.isfinite()
    l_s, m_s, t_s = (torch.where(ok, x - u["r0"], zero) for x in (fine, coarse, target))
    r_lsr, r_msr = (m_s - l_s).abs(), (m_s - t_s).abs()
    distance = r_lsr + 1 if fine.shape[0] == 1 else (r_msr + 1) * (r_lsr + 1)  # rule 5, float as in C
    close = distance < u["combined"]
    flat = lambda x, dtype: F.pad(x.flatten(-2).to(dtype), (before, before))  # the reach after is <= before
    nb = {"l": flat(l_s, int_type), "lsr": flat(r_lsr, int_type), "msr": flat(r_msr, int_type),
          "close": flat((ok & close).float(), torch.float32),  # rule 6: w = 1 at any distance
          "far": flat(torch.where(ok & ~close, 1 / distance, zero), torch.float32),  # w = (1 / T) x distance factor
          "candidate": flat(torch.where(ok, l_s + t_s - m_s, zero), torch.float32)}  # rule 7: L + M_tp - M (- r0)

    rows = slice(before, before + h)
    ok_c = ok[..., rows, :]
    min_lsr = torch.where(ok_c, r_lsr[..., rows, :], float(span)).amin(0)  # rule 4, over the valid pairs
    min_msr = torch.where(ok_c, r_msr[..., rows, :], float(span)).amin(0)
    centre = {"l": torch.where(ok_c, l_s[..., rows, :], -(span + 1.0)),  # invalid centre: |L_nb - L_c| > span
              "t1": min_lsr + (min(u["r_lsr"], span) + 1),  # kept if |M - L|(nb) < t1 ...
              "t2": min_msr + (min(u["r_msr"], span) + 1)}  # ... or |M - M_tp|(nb) < t2
    centre = {key: x.flatten(-2).to(int_type) for key, x in centre.items()}
    centre["slice"] = slices.clamp(max=span + 1).to(fine.device, int_type)[..., None]
    return nb, centre


def _accumulate(nb: dict[str, torch.Tensor], centre: dict[str, torch.Tensor], params: StarfmParams,
                before: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift and accumulate (reference section 4): sum w and sum w x candidate over the window offsets.

    ``q = min(slice - |L_nb - L_c|, max(t1 - |M-L|_nb, t2 - |M-M_tp|_nb))`` is an integer >= 1 for a
    candidate (rules 2 and 4) and <= 0 otherwise, so ``clamp(q, 0, w)`` is the candidate's weight
    without a boolean tensor (float-to-bool comparisons and ``where`` are slow on the CPU).
    """
    l_c, t1, t2, slice_ = centre["l"], centre["t1"], centre["t2"], centre["slice"]
    n = l_c.shape[-1]  # l_c: (pair, band, n)
    sum_w, sum_wp, q, wgt = (torch.zeros(l_c.shape, device=l_c.device) for _ in range(4))
    a, b, e = (torch.empty_like(l_c) for _ in range(3))
    zero = torch.zeros((), device=l_c.device)
    for factor, ring in _rings(params):
        ring_w = torch.add(nb["close"], nb["far"], alpha=factor)  # rule 6 at this distance, once per ring
        for dy, dx in ring:
            k = (before + dy) * width + dx + before
            torch.sub(nb["l"][..., k:k + n], l_c, out=a)
            a.abs_()
            torch.sub(slice_, a, out=a)  # >= 1 iff |L_nb - L_c| < slice
            torch.sub(t1, nb["lsr"][..., k:k + n], out=b)
            torch.sub(t2, nb["msr"][..., k:k + n], out=e)
            torch.maximum(b, e, out=b)  # >= 1 iff the filter keeps the neighbour
            torch.minimum(a, b, out=a)
            q.copy_(a)
            torch.clamp(q, zero, ring_w[..., k:k + n], out=wgt)
            sum_w.add_(wgt)
            sum_wp.addcmul_(wgt, nb["candidate"][..., k:k + n])
    return sum_w, sum_wp


def _accumulate_fused(nb: dict[str, torch.Tensor], centre: dict[str, torch.Tensor], params: StarfmParams,
                      before: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``_accumulate`` on the CPU in one pass per pixel (kernels.starfm_accumulate, bit-identical)."""
    shifts, factors = [], []
    for factor, ring in _rings(params):
        shifts += [(before + dy) * width + dx + before for dy, dx in ring]
        factors += [factor] * len(ring)
    rows, cols = centre["l"].shape[-1] // width, width - before - params.offsets[-1]  # the tile's own columns
    far = torch.where(nb["close"] > 0, -1.0, nb["far"])  # one array for both: 8 bytes less per offset
    candidate = nb["candidate"].to(nb["l"].dtype)  # an integer in [-span, 2 span]
    sums = kernels.starfm_accumulate(
        *(nb[key].numpy() for key in ("l", "lsr", "msr")), far.numpy(), candidate.numpy(),
        *(centre[key].numpy() for key in ("l", "t1", "t2", "slice")),
        np.asarray(shifts, np.int64), np.asarray(factors, np.float32), rows, before, cols)
    return tuple(torch.from_numpy(x) for x in sums)


ACCUMULATE = {"cpu": _accumulate_fused, "cuda": _accumulate}
"""The accumulation per device type; both give the same bits (benchmarks/bench_starfm.py times both on the CPU)."""


def _rings(params: StarfmParams) -> list[tuple[float, list[tuple[int, int]]]]:
    """Window offsets grouped by distance, with the distance factor 1 / (1 + d res / max distance) (rule 6)."""
    rings: dict[int, list[tuple[int, int]]] = {}
    for dy in params.offsets:
        for dx in params.offsets:
            rings.setdefault(dy * dy + dx * dx, []).append((dy, dx))
    scaled = lambda d2: math.sqrt(d2) * params.resolution / params.max_search_distance if d2 else 0.0
    return [(1.0 / (1.0 + scaled(d2)), ring) for d2, ring in sorted(rings.items())]


# ---------------------------------------------------------------------------------------------
# Public API


def predict_starfm(fine_refs: np.ndarray, coarse_refs: np.ndarray, coarse_target: np.ndarray, *,
                   valid: np.ndarray | None = None, ratio: int | None = None, params: StarfmParams | None = None,
                   device: torch.device | str | None = None, tile: int | tuple[int, int] | None = None) -> np.ndarray:
    """STARFM prediction of the fine image at the target date (see the module docstring for the rules).

    ``fine_refs``, ``coarse_refs``: one pair (band, y, x) or several (pair, band, y, x), reflectance
    in [0, 1] with the coarse images on the fine grid; ``coarse_target``: (band, y, x). ``valid``:
    (y, x) or (pair, y, x), False = nodata; non-finite or out-of-range values are nodata too.
    ``ratio``: coarse / fine pixel size, checked only (STARFM does not use it; None: not checked). ``device``: default CUDA when present, else CPU
    (torch's own threads). ``tile``: side, or (rows, cols), of the tiles processed at once (default
    ``TILE``: 256 on the CPU, 2048 on CUDA); the result does not depend on it, memory use does.
    Returns float32 (band, y, x) reflectance, NaN where there is no prediction.
    """
    params = StarfmParams() if params is None else params
    if not isinstance(params, StarfmParams):
        raise InputError(f"params: expected a StarfmParams, got {type(params).__name__}")
    fine, coarse, target, mask = _checked(fine_refs, coarse_refs, coarse_target, valid, ratio)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tile_shape = _tile_shape(tile, device)

    u = params.units()
    fine_u = _to_units(fine, u, params.reflectance_scale, "fine_refs")
    fine_u[~np.broadcast_to(mask[:, None], fine_u.shape)] = np.nan  # masked pixels: no statistics, no candidate
    images = (fine_u, _to_units(coarse, u, params.reflectance_scale, "coarse_refs"),
              _to_units(target, u, params.reflectance_scale, "coarse_target"))
    slices = torch.from_numpy(_slices(fine_u, params, u))
    if not params.use_spatial:  # rule 8: no similarity test, i.e. a slice wider than the data range
        slices.fill_(u["r1"] - u["r0"] + 1)

    # Tiles of equal size (at most ``tile_shape``): a thin last tile would cost a whole halo for a few pixels.
    rows, cols = (np.linspace(0, size, -(-size // side) + 1).round().astype(int)
                  for size, side in zip(target.shape[1:], tile_shape))
    out = np.empty(target.shape, np.float32)
    with torch.inference_mode():
        for y0, y1 in zip(rows[:-1].tolist(), rows[1:].tolist()):
            for x0, x1 in zip(cols[:-1].tolist(), cols[1:].tolist()):
                out[:, y0:y1, x0:x1] = _predict_tile(images, (y0, y1, x0, x1), slices, params, u, device)
    return out


def _tile_shape(tile, device: torch.device) -> tuple[int, int]:
    """(rows, cols) of a tile: ``tile`` as a side or a (rows, cols) pair, or the device's default side."""
    tile = TILE["cuda" if device.type == "cuda" else "cpu"] if tile is None else tile
    sides = (tile, tile) if isinstance(tile, (int, np.integer)) and not isinstance(tile, bool) else tuple(np.ravel(tile))
    if len(sides) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in sides):
        raise InputError(f"tile: expected a positive number of pixels or a (rows, cols) pair, got {tile!r}")
    return int(sides[0]), int(sides[1])


def starfm(fine_ref: np.ndarray, coarse_ref: np.ndarray, coarse_target: np.ndarray, *,
           valid: np.ndarray | None = None, ratio: int | None = None, window: int | None = None) -> np.ndarray:
    """The study's predictor signature: one pair, the C code's defaults (60 x 60 window at 25 m).

    ``window`` (odd, fine pixels) sets a symmetric window of that side instead, with the distance
    weight scaled to its half-width (MAX_SEARCH_DISTANCE = (window // 2) x 25 m).
    """
    params = StarfmParams()
    if window is not None:
        window = check_window(window)
        params = StarfmParams(max_search_distance=(window // 2) * params.resolution, symmetric_window=True)
    pred = predict_starfm(fine_ref, coarse_ref, coarse_target, valid=valid, ratio=ratio, params=params)
    return fill_holes("starfm", pred, fine_ref, coarse_ref, coarse_target, valid)
