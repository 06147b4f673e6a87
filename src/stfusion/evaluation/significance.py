"""Which differences between methods are real: a paired, hierarchical bootstrap of RMSE differences.

A method's score is the mean, over test pairs and (for a trained model) seeds, of the overall RMSE of
each prediction. Its uncertainty has three sources, and the bootstrap resamples all three:

- **test pairs**: drawn with replacement, the same draw for both methods of a comparison (paired);
- **seeds**: drawn with replacement for each trained model on its own (seed 1 of one model has
  nothing to do with seed 1 of another); a deterministic method has one "seed";
- **space**: errors of nearby pixels are correlated, so pixels are resampled in square blocks
  (``block`` fine pixels a side), the same blocks for both methods. Each resampled prediction's RMSE
  is recomputed from its blocks' sums of squared errors, so the statistic is the one the tables show.

Percentile intervals; see docs/metrics.md for the choices and their reasons.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from stfusion.errors import InputError

BLOCK_COLUMNS = ["dataset", "method", "seed", "reference_date", "target_date", "region", "block", "sse", "count"]


def block_errors(prediction: np.ndarray, observed: np.ndarray, mask: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Per square block of ``block`` pixels (row-major, partial edge blocks included): the sum of squared
    errors over every band of the pixels valid in ``mask`` and finite in both images, and how many
    band-values that is. Summed over blocks they give the overall RMSE: sqrt(sum sse / sum count)."""
    if block < 1:
        raise InputError(f"evaluate.bootstrap.block: expected a block side >= 1 pixel, got {block!r}")
    valid = mask & np.isfinite(prediction).all(axis=0) & np.isfinite(observed).all(axis=0)
    squared = np.where(valid, ((prediction.astype(np.float64) - observed) ** 2).sum(axis=0), 0.0)
    height, width = valid.shape
    rows, cols = -(-height // block), -(-width // block)
    pad = ((0, rows * block - height), (0, cols * block - width))
    to_blocks = lambda a: np.pad(a, pad).reshape(rows, block, cols, block).sum(axis=(1, 3)).reshape(-1)  # noqa: E731
    return to_blocks(squared), to_blocks(valid.astype(np.float64)) * prediction.shape[0]


@dataclass(frozen=True)
class Errors:
    """One method's block sums on one dataset and region: sse and count, (seed, pair, block)."""

    sse: np.ndarray
    count: np.ndarray

    @property
    def score(self) -> float:
        """Mean over seeds and pairs of each prediction's RMSE (what the tables report)."""
        return float(np.mean(_rmse(self.sse.sum(-1), self.count.sum(-1))))


def _rmse(sse: np.ndarray, count: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(sse / count)


def errors_by_method(blocks: pd.DataFrame) -> dict[str, Errors]:
    """Split a tidy block table of one dataset and region into each method's (seed, pair, block) arrays."""
    pairs = sorted(set(zip(blocks["reference_date"], blocks["target_date"])))
    out = {}
    for method, rows in blocks.groupby("method", sort=True):
        seeds = sorted(rows["seed"].fillna(-1).unique())
        n_blocks = int(rows["block"].max()) + 1
        sse, count = (np.zeros((len(seeds), len(pairs), n_blocks)) for _ in range(2))
        s = np.searchsorted(seeds, rows["seed"].fillna(-1).to_numpy())
        p = np.array([pairs.index(pair) for pair in zip(rows["reference_date"], rows["target_date"])])
        b = rows["block"].to_numpy(int)
        sse[s, p, b], count[s, p, b] = rows["sse"].to_numpy(), rows["count"].to_numpy()
        out[str(method)] = Errors(sse, count)
    shapes = {e.sse.shape[1:] for e in out.values()}
    if len(shapes) > 1:
        raise InputError(f"block errors: methods were scored on different test pairs or blocks {sorted(shapes)}")
    return out


class Resamples:
    """One set of bootstrap draws of test pairs and blocks, shared by every method it scores (paired)."""

    def __init__(self, pairs: int, blocks: int, resamples: int = 2000, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.resamples = resamples
        self.pairs = self.rng.integers(0, pairs, (resamples, pairs))
        # block weights: how often each block was drawn, per resample and drawn pair
        self.weights = self.rng.multinomial(blocks, np.full(blocks, 1 / blocks), (resamples, pairs)).astype(np.float64)
        self._seeds: dict[tuple[str, int], np.ndarray] = {}

    def scores(self, method: str, errors: Errors) -> np.ndarray:
        """The method's score in every resample, (resamples,)."""
        n_seeds = errors.sse.shape[0]
        key = (method, n_seeds)
        if key not in self._seeds:  # one seed draw per method, reused in every comparison it enters
            self._seeds[key] = self.rng.integers(0, n_seeds, (self.resamples, n_seeds))
        seeds = self._seeds[key][:, :, None]  # (R, S, 1)
        pairs = self.pairs[:, None, :]  # (R, 1, P)
        sse = (errors.sse[seeds, pairs] * self.weights[:, None]).sum(-1)  # (R, S, P)
        count = (errors.count[seeds, pairs] * self.weights[:, None]).sum(-1)
        with warnings.catch_warnings():  # a resample may hold no pixel of a small region: NaN, left out
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(_rmse(sse, count), axis=(1, 2))


DIFFERENCE_COLUMNS = ["method", "against", "difference", "low", "high", "significant", "seeds", "against_seeds", "level"]
RANKING_COLUMNS = ["method", "rmse", "seeds", "significantly_better", "rank"]
LABELS = ["dataset", "region"]


def compare(errors: dict[str, Errors], comparisons: list[tuple[str, str]], *, resamples: int = 2000,
            level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """For each (method, against): the score difference method - against and its bootstrap interval.

    A difference is ``significant`` when its interval excludes 0 (negative: ``method`` has the lower RMSE).
    """
    if not 0 < level < 1:
        raise InputError(f"evaluate.bootstrap.level: expected a confidence level in (0, 1), got {level!r}")
    unknown = sorted({m for pair in comparisons for m in pair} - set(errors))
    if unknown:
        raise InputError(f"bootstrap: no block errors for {unknown}; scored methods are {sorted(errors)}")
    _, pairs, blocks = next(iter(errors.values())).sse.shape
    draws = Resamples(pairs, blocks, resamples, seed)
    cache: dict[str, np.ndarray] = {}
    rows = []
    for method, against in comparisons:
        for name in (method, against):
            if name not in cache:
                cache[name] = draws.scores(name, errors[name])
        diff = cache[method] - cache[against]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = np.nanquantile(diff, [(1 - level) / 2, (1 + level) / 2])
        rows.append({"method": method, "against": against,
                     "difference": errors[method].score - errors[against].score,
                     "low": float(low), "high": float(high), "significant": bool(low > 0 or high < 0),
                     "seeds": errors[method].sse.shape[0], "against_seeds": errors[against].sse.shape[0], "level": level})
    return pd.DataFrame(rows, columns=DIFFERENCE_COLUMNS)


def ranking(errors: dict[str, Errors], differences: pd.DataFrame) -> pd.DataFrame:
    """Rank = 1 + the number of methods significantly better than this one; methods that no interval
    separates share a rank. ``differences`` must hold every pair of the methods (either order)."""
    better = {m: 0 for m in errors}
    for row in differences.itertuples():
        if row.significant:
            loser = row.method if row.difference > 0 else row.against
            better[loser] += 1
    table = pd.DataFrame({"method": list(errors), "rmse": [errors[m].score for m in errors],
                          "seeds": [errors[m].sse.shape[0] for m in errors],
                          "significantly_better": [better[m] for m in errors]})
    table["rank"] = table["significantly_better"] + 1
    return table.sort_values(["rank", "rmse"], ignore_index=True)


REFERENCE = "temporal-difference"
"""The honest reference every method must beat: F1 plus the coarse change."""


def study_comparisons(errors: dict[str, Errors], families: dict[str, str], deep: list[str]) -> list[tuple[str, str, str]]:
    """The comparisons the report makes, as (kind, method, against): every method against
    temporal-difference and against the best traditional method (lowest RMSE), and every pair of the
    deep models' seed runs (``deep``)."""
    wanted = []
    if REFERENCE in errors:
        wanted += [("vs temporal-difference", m, REFERENCE) for m in errors if m != REFERENCE]
    traditional = [m for m in errors if families.get(m) == "traditional"]
    if traditional:
        best = min(traditional, key=lambda m: errors[m].score)
        wanted += [(f"vs best traditional ({best})", m, best) for m in errors if m != best]
    runs = [m for m in deep if m in errors]
    wanted += [("between deep models", a, b) for i, a in enumerate(runs) for b in runs[i + 1:]]
    return wanted


def study_significance(blocks: pd.DataFrame, families: dict[str, str], deep: list[str], *,
                       resamples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The differences the report makes and the ranking, per dataset and region (all, changed), from
    a tidy block table (BLOCK_COLUMNS). One bootstrap draw per dataset and region serves every comparison."""
    differences, rankings = [], []
    for (dataset, region), rows in blocks[blocks["region"].isin(["all", "changed"])].groupby(["dataset", "region"]):
        if not rows["count"].sum():  # an empty region (no changed pixel in any test pair)
            continue
        errors = errors_by_method(rows)
        names = list(errors)
        every_pair = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
        table = compare(errors, every_pair, resamples=resamples, level=level, seed=seed)
        labels = {"dataset": dataset, "region": region}
        rankings.append(ranking(errors, table).assign(**labels))
        lookup = {(r.method, r.against): r for r in table.itertuples(index=False)}
        for kind, method, against in study_comparisons(errors, families, deep):
            row = lookup.get((method, against))
            if row is None:  # the pair was compared the other way round
                row = lookup[(against, method)]
                row = row._replace(method=method, against=against, difference=-row.difference, low=-row.high,
                                   high=-row.low, seeds=row.against_seeds, against_seeds=row.seeds)
            differences.append({**labels, "comparison": kind, **row._asdict()})
    # Explicit columns: a study with one method (or no changed pixels) still writes tables with headers.
    ranks = pd.concat(rankings, ignore_index=True) if rankings else pd.DataFrame(columns=RANKING_COLUMNS + LABELS)
    return pd.DataFrame(differences, columns=LABELS + ["comparison"] + DIFFERENCE_COLUMNS), ranks
