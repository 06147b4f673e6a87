"""Numba kernels for the baselines on the CPU: one pass per pixel over its window instead of whole-tile passes.

STARFM's and FSDAF's kernels repeat the torch path's float32 operations element by element and in the same
order, so their results are bit-identical to it (tests/test_starfm.py, tests/test_fsdaf.py); ESTARFM's selects
the same similar pixels and sums over them in float64 in order, within a unit in the last place of the torch
path (tests/test_estarfm.py). The torch paths stay for CUDA. docs/performance.md has the timings.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

__all__ = ["estarfm_rows", "fsdaf_similar_pixels", "starfm_accumulate"]

_EMPTY = np.iinfo(np.int64).max  # an empty slot of the similar-pixel buffer, as fsdaf._BIG


_ROWS = 8  # rows (tasks) per call of a compiled kernel


def _in_threads(kernel, count: int) -> None:
    """``kernel(first, stop)`` over ``range(count)`` in chunks of _ROWS, on torch's threads (which the study's
    lanes set). The compiled kernels release the GIL; Numba's own ``prange`` compiled FSDAF's loops 2.5 times
    slower."""
    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        list(pool.map(lambda first: kernel(first, min(first + _ROWS, count)), range(0, count, _ROWS)))


@intrinsic
def _fma(typingctx, a, b, c):
    """a x b + c rounded once, as torch's vectorised CPU kernels compute ``addcmul`` (AVX2 and AVX-512 builds)."""
    def codegen(context, builder, signature, args):
        return builder.fma(*args)
    return types.float32(types.float32, types.float32, types.float32), codegen


@intrinsic
def _float_bits(typingctx, x):
    """The bits of a float32 as an int32."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.int32(types.float32), codegen


@intrinsic
def _bits_float(typingctx, x):
    """The float32 whose bits are an int32 (the inverse of _float_bits)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


def starfm_accumulate(nb_l, nb_lsr, nb_msr, nb_far, nb_candidate, l_c, t1, t2, slice_, shifts, factors,
                      rows, before, cols) -> tuple[np.ndarray, np.ndarray]:
    """STARFM's sums of w and w x candidate over the window (``starfm._accumulate`` fused, same results).

    Arrays as ``starfm._terms`` makes them, neighbour terms (pair, band, N) and centre terms (pair or
    not, band, rows x width), except ``nb_far``: -1 where the neighbour is close (weight 1), and the
    integer ``nb_candidate``. ``shifts``/``factors``: each offset's flat shift and distance factor,
    rings in order. Only the ``cols`` columns after ``before`` of each row are summed; the rest stay 0.
    """
    pairs, bands, n = l_c.shape
    sum_w, sum_wp = np.zeros((pairs, bands, n), np.float32), np.zeros((pairs, bands, n), np.float32)
    _in_threads(lambda first, stop: _starfm_rows(nb_l, nb_lsr, nb_msr, nb_far, nb_candidate, l_c, t1, t2, slice_,
                                                 shifts, factors, rows, before, cols, first, stop, sum_w, sum_wp),
                pairs * bands * rows)
    return sum_w, sum_wp


@numba.njit(cache=True, nogil=True)
def _starfm_rows(nb_l, nb_lsr, nb_msr, nb_far, nb_candidate, l_c, t1, t2, slice_, shifts, factors, rows, before,
                 cols, task0, task1, sum_w, sum_wp):  # pragma: no cover (compiled)
    """Tasks task0 to task1 - 1 (one row of one pair and band each) of starfm_accumulate.

    Two offsets per pass over the row: the sums stay in registers between them (added in the same order, so
    the same bits), which halves the loads and stores of the sums and centre terms (docs/performance.md).
    """
    bands, width = l_c.shape[1], l_c.shape[2] // rows
    for task in range(task0, task1):
        p, b, r = task // (bands * rows), task // rows % bands, task % rows
        start, s = r * width + before, slice_[p, b, 0]
        low, high = np.empty(cols, l_c.dtype), np.empty(cols, l_c.dtype)  # rule 2: low < L_nb < high
        for i in range(cols):
            low[i], high[i] = l_c[p, b, start + i] - s, l_c[p, b, start + i] + s
        t1_row, t2_row = t1[b, start:start + cols], t2[b, start:start + cols]
        w_row, wp_row = sum_w[p, b, start:start + cols], sum_wp[p, b, start:start + cols]
        terms = nb_l[p, b], nb_lsr[p, b], nb_msr[p, b], nb_far[p, b], nb_candidate[p, b]
        o = 0
        while o + 2 <= shifts.size:
            k, f0, f1 = shifts[o] + start, factors[o], factors[o + 1]  # slices per offset: k + i would not vectorise
            l0, lsr0, msr0, far0, cand0 = _slices(terms, k, cols)
            k = shifts[o + 1] + start
            l1, lsr1, msr1, far1, cand1 = _slices(terms, k, cols)
            for i in range(cols):
                lo, hi, a1, a2 = low[i], high[i], t1_row[i], t2_row[i]
                w0 = _starfm_weight(l0[i], lsr0[i], msr0[i], far0[i], f0, lo, hi, a1, a2)
                w1 = _starfm_weight(l1[i], lsr1[i], msr1[i], far1[i], f1, lo, hi, a1, a2)
                w_row[i] = w_row[i] + w0 + w1
                wp_row[i] = _fma(w1, np.float32(cand1[i]), _fma(w0, np.float32(cand0[i]), wp_row[i]))
            o += 2
        if o < shifts.size:  # an odd count of offsets: the last one alone
            k, f0 = shifts[o] + start, factors[o]
            l0, lsr0, msr0, far0, cand0 = _slices(terms, k, cols)
            for i in range(cols):
                w0 = _starfm_weight(l0[i], lsr0[i], msr0[i], far0[i], f0, low[i], high[i], t1_row[i], t2_row[i])
                w_row[i] += w0
                wp_row[i] = _fma(w0, np.float32(cand0[i]), wp_row[i])


@numba.njit(inline="always")
def _slices(terms, k, cols):  # pragma: no cover (compiled)
    """The neighbour terms of one offset: [k, k + cols) of each."""
    return terms[0][k:k + cols], terms[1][k:k + cols], terms[2][k:k + cols], terms[3][k:k + cols], terms[4][k:k + cols]


@numba.njit(inline="always")
def _starfm_weight(l_nb, lsr, msr, far, factor, low, high, t1, t2):  # pragma: no cover (compiled)
    """A neighbour's weight: its ring weight if it is a candidate, else 0."""
    similar = (l_nb > low) & (l_nb < high)
    kept = (lsr < t1) | (msr < t2)  # rule 4
    ring_w = np.float32(1.0) if far < 0 else factor * far  # rule 6, = close + factor x far
    return ring_w if similar & kept else np.float32(0.0)  # = _accumulate's clamp(q, 0, ring_w)


@numba.njit(inline="always")
def _pack(key, offset, id_bits):  # pragma: no cover (compiled)
    """An int64 ordered as (key, offset), as fsdaf._pack: order-preserving float bits, then the offset."""
    bits = _float_bits(key)
    if bits < 0:
        bits ^= 0x7FFFFFFF
    return (np.int64(bits) << id_bits) | offset


def fsdaf_similar_pixels(fp, cp, vp, thr, eps, half_window, k, order, key_factor, weight_factor, id_bits) -> np.ndarray:
    """FSDAF step 7's weighted change (band, y, x) of every pixel (``fsdaf._filter_tile`` fused, same results).

    ``fp``, ``cp``: fine image and change (band, y, x), ``vp``: valid (y, x), all padded by the half
    window with invalid pixels; ``order``: the window's offsets nearest first (any order selects the same
    pixels: the k smallest (key, offset)); ``key_factor``/``weight_factor``: 10 + D/w and 1 + D/w.
    """
    bands, height, width = fp.shape
    rows = height - 2 * half_window
    out = np.empty((bands, rows, width - 2 * half_window), np.float32)
    _in_threads(lambda first, stop: _fsdaf_rows(fp, cp, vp, thr, eps, half_window, k, order, key_factor, weight_factor,
                                                id_bits, first, stop, out), rows)
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _fsdaf_rows(fp, cp, vp, thr, eps, w, k, order, key_factor, weight_factor, id_bits, r0, r1,
                out):  # pragma: no cover (compiled)
    """Rows r0 to r1 - 1 of fsdaf_similar_pixels."""
    bands, cols = fp.shape[0], out.shape[2]
    side = 2 * w + 1
    for r in range(r0, r1):
        centre = np.ascontiguousarray(fp[:, r + w, w:w + cols])  # contiguous rows vectorise
        den = np.empty((bands, cols), np.float32)
        for b in range(bands):
            for x in range(cols):
                den[b, x] = centre[b, x] + eps
        best = np.full((cols, k), _EMPTY, np.int64)
        worst, worst_at = np.full(cols, _EMPTY, np.int64), np.zeros(cols, np.int64)
        worst_key = np.full(cols, np.inf, np.float32)
        key, test = np.empty(cols, np.float32), np.empty(cols, np.bool_)
        for o in order:
            _keys(fp, vp, centre, den, thr, r + o // side, o % side, key_factor[o], key, test, worst_key)
            for x in range(cols):
                if test[x]:  # the buffer update written out: as a shared helper it ran 9-11 % slower
                    packed = _pack(key[x], o, id_bits)
                    if packed < worst[x]:
                        best[x, worst_at[x]] = packed
                        at = 0
                        for j in range(1, k):
                            if best[x, j] > best[x, at]:
                                at = j
                        worst[x], worst_at[x] = best[x, at], at
                        worst_key[x] = np.inf if best[x, at] == _EMPTY else _key_of(best[x, at], id_bits)
        for x in range(cols):
            _weighted_change(fp, cp, centre, den, np.sort(best[x]), r, x, w, weight_factor, id_bits, out)


@numba.njit(inline="always")
def _keys(fp, vp, centre, den, thr, y, ix, factor, key, test, worst_key):  # pragma: no cover (compiled)
    """One offset for a row of pixels: the key (S + 1e-5)(10 + D/w) and whether it may enter the buffer."""
    cols = key.size
    valid = vp[y, ix:ix + cols]
    nbr, c, d, t = fp[0, y, ix:ix + cols], centre[0], den[0], thr[0]
    for x in range(cols):
        diff = abs(nbr[x] - c[x])
        key[x] = diff / d[x]  # fsdaf._relative_difference, band by band
        test[x] = valid[x] & (diff < t)
    for b in range(1, fp.shape[0]):
        nbr, c, d, t = fp[b, y, ix:ix + cols], centre[b], den[b], thr[b]
        for x in range(cols):
            diff = abs(nbr[x] - c[x])
            key[x] = key[x] + diff / d[x]
            test[x] = test[x] & (diff < t)
    for x in range(cols):
        key[x] = (key[x] + np.float32(1e-5)) * factor
        test[x] = test[x] & (key[x] <= worst_key[x])


@numba.njit(inline="always")
def _key_of(packed, id_bits):  # pragma: no cover (compiled)
    """The float32 key of a packed key (fsdaf._unpack)."""
    bits = np.int32(packed >> id_bits)
    if bits < 0:
        bits ^= 0x7FFFFFFF
    return _bits_float(bits)


@numba.njit(inline="always")
def _weighted_change(fp, cp, centre, den, keys, r, x, w, weight_factor, id_bits, out):  # pragma: no cover
    """Weights 1 / ((1 + D/w)(S + 1)) of the chosen pixels, normalised, times their change, summed in key order."""
    side, k, bands = 2 * w + 1, keys.size, fp.shape[0]
    ids = np.empty(k, np.int64)
    cd = np.zeros(k, np.float32)
    for j in range(k):
        ids[j] = keys[j] & ((1 << id_bits) - 1) if keys[j] != _EMPTY else side * side // 2  # filler: the centre
        if keys[j] != _EMPTY:
            iy, ix = r + ids[j] // side, x + ids[j] % side
            s = abs(fp[0, iy, ix] - centre[0, x]) / den[0, x]
            for b in range(1, bands):
                s = s + abs(fp[b, iy, ix] - centre[b, x]) / den[b, x]
            cd[j] = np.float32(1.0) / (weight_factor[ids[j]] * (s + np.float32(1.0)))
    total = cd[0]
    for j in range(1, k):
        total += cd[j]
    weight = cd / total  # as the torch path: weight = cd / sum, then sum of weight x change
    for b in range(bands):
        acc = weight[0] * cp[b, r + ids[0] // side, x + ids[0] % side]
        for j in range(1, k):
            acc = acc + weight[j] * cp[b, r + ids[j] // side, x + ids[j] % side]
        out[b, r, x] = acc


def estarfm_rows(scaled, ok, fine, coarse, target, means, critical, w, k, min_similar, data_range, min_change,
                 max_coefficient) -> np.ndarray:
    """ESTARFM's prediction (band, y, x), float32, of every pixel (``estarfm._predict_tile`` fused).

    ``scaled``: the fine pairs in threshold units, float32 (pair, band, y, x); ``ok``: valid; ``fine``,
    ``coarse`` (pair, band, y, x) and ``target`` (band, y, x) float64; all padded by the half window ``w``
    with invalid pixels (NaN). ``means``: (image, band, y, x) window means of C1, C2, C0, unpadded;
    ``critical``: F(1, df) critical values by df. The similar pixels are the torch path's (the same float32
    scores and keys); the float64 sums over them run in order, where torch's blocks may sum in another.
    """
    bands, rows, cols = target.shape[0], ok.shape[0] - 2 * w, ok.shape[1] - 2 * w
    out = np.empty((bands, rows, cols), np.float32)
    low, high = data_range
    _in_threads(lambda first, stop: _estarfm_rows(scaled, ok, fine, coarse, target, means, critical, w, k,
                                                  min_similar, low, high, min_change, max_coefficient, first, stop,
                                                  out), rows)
    return out


_OFFSET_BITS = 12  # as estarfm._INFINITE_KEY: a key is (float32 score bits, offset in raster order)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _estarfm_rows(scaled, ok, fine, coarse, target, means, critical, w, k, min_similar, low, high, min_change,
                  max_coefficient, r0, r1, out):  # pragma: no cover (compiled)
    """Rows r0 to r1 - 1 of estarfm_rows: the k smallest keys of each pixel, then its prediction."""
    pairs, bands, cols = scaled.shape[0], scaled.shape[1], out.shape[2]
    side = 2 * w + 1
    for r in range(r0, r1):
        centre = np.ascontiguousarray(scaled[:, :, r + w, w:w + cols])  # contiguous rows vectorise
        best = np.full((cols, k), _EMPTY, np.int64)
        worst, worst_at = np.full(cols, _EMPTY, np.int64), np.zeros(cols, np.int64)
        worst_score = np.full(cols, np.inf, np.float32)
        score, test = np.empty(cols, np.float32), np.empty(cols, np.bool_)
        for dy in range(side):
            for dx in range(side):  # raster order: a later offset never displaces an equal score
                _estarfm_scores(scaled, ok, centre, r + dy, dx, score, test, worst_score)
                o = dy * side + dx
                for x in range(cols):
                    if test[x]:  # as in _fsdaf_rows, written out (docs/performance.md)
                        packed = (np.int64(_float_bits(score[x])) << _OFFSET_BITS) | o
                        if packed < worst[x]:
                            best[x, worst_at[x]] = packed
                            at = 0
                            for j in range(1, k):
                                if best[x, j] > best[x, at]:
                                    at = j
                            worst[x], worst_at[x] = best[x, at], at
                            worst_score[x] = np.inf if best[x, at] == _EMPTY else \
                                _bits_float(np.int32(best[x, at] >> _OFFSET_BITS))
        for x in range(cols):
            if ok[r + w, x + w]:
                _estarfm_pixel(fine, coarse, target, means, critical, np.sort(best[x]), r, x, w, min_similar, low,
                               high, min_change, max_coefficient, out)
            else:
                out[:, r, x] = np.nan


@numba.njit(inline="always")
def _estarfm_scores(scaled, ok, centre, y, ix, score, test, worst_score):  # pragma: no cover (compiled)
    """One offset for a row of pixels: the score (sum of |difference| in threshold units, pair-major as
    torch sums it) and whether the candidate is valid, within every threshold and may enter the buffer."""
    cols = score.size
    valid = ok[y, ix:ix + cols]
    for x in range(cols):
        score[x], test[x] = np.float32(0.0), valid[x]
    for p in range(scaled.shape[0]):
        for b in range(scaled.shape[1]):
            nbr, c = scaled[p, b, y, ix:ix + cols], centre[p, b]
            for x in range(cols):
                d = abs(nbr[x] - c[x])  # NaN (invalid) is never within a threshold
                score[x] = score[x] + d
                test[x] = test[x] & (d < 1)
    for x in range(cols):
        test[x] = test[x] & (score[x] < worst_score[x])


@numba.njit(inline="always")
def _estarfm_pixel(fine, coarse, target, means, critical, keys, r, x, w, min_similar, low, high, min_change,
                   max_coefficient, out):  # pragma: no cover (compiled)
    """One pixel's prediction from its sorted keys: estarfm._predict_tile's formulas, float64."""
    pairs, bands, side = fine.shape[0], fine.shape[1], 2 * w + 1
    n = 0
    while n < keys.size and keys[n] != _EMPTY:
        n += 1
    ys, xs = np.empty(n, np.int64), np.empty(n, np.int64)
    for j in range(n):
        o = keys[j] & ((1 << _OFFSET_BITS) - 1)
        ys[j], xs[j] = r + o // side, x + o % side
    weight = _estarfm_weights(fine, coarse, ys, xs, r, x, w)
    for b in range(bands):
        coefficient = _estarfm_coefficient(fine, coarse, critical, ys, xs, b, min_change, max_coefficient)
        inv0 = 1.0 / (abs(means[2, b, r, x] - means[0, b, r, x]) + 0.01 ** 5)
        inv1 = 1.0 / (abs(means[2, b, r, x] - means[1, b, r, x]) + 0.01 ** 5)
        t0, t1 = inv0 / (inv0 + inv1), inv1 / (inv0 + inv1)
        pair_pred, revised = np.zeros(pairs), np.zeros(pairs)
        for p in range(pairs):
            change, weighted = 0.0, 0.0
            for j in range(n):
                change += weight[j] * coefficient * (target[b, ys[j], xs[j]] - coarse[p, b, ys[j], xs[j]])
                weighted += weight[j] * fine[p, b, ys[j], xs[j]]
            pair_pred[p], revised[p] = fine[p, b, r + w, x + w] + change, weighted
        pred = t0 * pair_pred[0] + t1 * pair_pred[1]
        if pred <= low or pred >= high:  # outside the data range: the weighted fine values
            pred = t0 * revised[0] + t1 * revised[1]
        if n < min_similar:  # too few similar pixels: each pair's window change alone
            d0, d1 = means[2, b, r, x] - means[0, b, r, x], means[2, b, r, x] - means[1, b, r, x]
            inv0, inv1 = 1.0 / abs(d0 + 0.01 ** 5), 1.0 / abs(d1 + 0.01 ** 5)
            pred = inv0 / (inv0 + inv1) * (fine[0, b, r + w, x + w] + d0 + 0.01 ** 5) \
                + inv1 / (inv0 + inv1) * (fine[1, b, r + w, x + w] + d1 + 0.01 ** 5)
        out[b, r, x] = pred


@numba.njit(inline="always")
def _estarfm_weights(fine, coarse, ys, xs, r, x, w):  # pragma: no cover (compiled)
    """1 / ((1 - spectral correlation) x (1 + distance / w)) of each similar pixel, normalised."""
    pairs, bands, n = fine.shape[0], fine.shape[1], ys.size
    weight = np.empty(n)
    for j in range(n):
        yj, xj = ys[j], xs[j]
        if bands == 1:
            s = 0.0
            for p in range(pairs):
                s += abs((fine[p, 0, yj, xj] - coarse[p, 0, yj, xj]) / (fine[p, 0, yj, xj] + coarse[p, 0, yj, xj]))
            s_d = 1.0 - 0.5 * s
        else:
            mx, my = 0.0, 0.0
            for p in range(pairs):
                for b in range(bands):
                    mx += fine[p, b, yj, xj]
                    my += coarse[p, b, yj, xj]
            mx, my = mx / (pairs * bands), my / (pairs * bands)
            sxy, sxx, syy = 0.0, 0.0, 0.0
            for p in range(pairs):
                for b in range(bands):
                    dx, dy = fine[p, b, yj, xj] - mx, coarse[p, b, yj, xj] - my
                    sxy, sxx, syy = sxy + dx * dy, sxx + dx * dx, syy + dy * dy
            s_d = sxy / (np.sqrt(sxx) * np.sqrt(syy))
        if np.isnan(s_d):
            s_d = 0.5
        d_d = 1.0 + np.sqrt(float((yj - r - w) ** 2 + (xj - x - w) ** 2)) / w
        weight[j] = 1.0 / ((1.0 - s_d) * d_d + 1e-7)
    return weight / weight.sum()


@numba.njit(inline="always")
def _estarfm_coefficient(fine, coarse, critical, ys, xs, b, min_change, max_coefficient):  # pragma: no cover
    """Band b's conversion coefficient: the slope of fine on coarse over both dates' similar pixels where the
    coarse images changed enough and the slope is significant and in (0, max]; else 1."""
    pairs, n = fine.shape[0], ys.size
    count = float(pairs * n)
    mean_c = np.zeros(pairs)
    mx, my = 0.0, 0.0
    for p in range(pairs):
        for j in range(n):
            mean_c[p] += coarse[p, b, ys[j], xs[j]]
            my += fine[p, b, ys[j], xs[j]]
        mx += mean_c[p]
    mx, my = mx / count, my / count
    sxx, syy, sxy = 0.0, 0.0, 0.0
    for p in range(pairs):
        for j in range(n):
            dx, dy = coarse[p, b, ys[j], xs[j]] - mx, fine[p, b, ys[j], xs[j]] - my
            sxx, syy, sxy = sxx + dx * dx, syy + dy * dy, sxy + dx * dy
    slope = sxy / sxx
    r2 = sxy * sxy / (sxx * syy)
    f_value = r2 * (count - 2) / (1 - r2)  # F(1, 2n - 2); r2 = 1 gives inf
    significant = f_value >= critical[max(int(count) - 2, 0)]
    change = abs(mean_c[0] / n - mean_c[1] / n)
    if change >= min_change and significant and slope > 0 and slope <= max_coefficient:
        return slope
    return 1.0
