"""The paired bootstrap of RMSE differences: it finds known differences, its intervals have the right
width, and the block sums reproduce the overall RMSE of the metrics."""

import numpy as np
import pandas as pd
import pytest

from stfusion.errors import InputError
from stfusion.evaluation.metrics import compute_metrics
from stfusion.evaluation.significance import (Errors, block_errors, compare, errors_by_method, ranking,
                                              study_significance)


def errors_from_rmse(rmse: np.ndarray) -> Errors:
    """(seed, pair) RMSEs as one block of one band-value each."""
    rmse = np.asarray(rmse, dtype=np.float64)
    return Errors(sse=(rmse**2)[..., None], count=np.ones((*rmse.shape, 1)))


def test_block_sums_give_the_overall_rmse_of_the_metrics():
    rng = np.random.default_rng(1)
    observed = rng.random((4, 50, 37))
    prediction = observed + rng.normal(0, 0.02, observed.shape)
    prediction[2, 3, 4] = np.nan
    mask = rng.random((50, 37)) > 0.2
    sse, count = block_errors(prediction, observed, mask, block=8)
    assert sse.shape == count.shape == (7 * 5,)
    expected = compute_metrics(prediction, observed, mask)["all"]["rmse"]["all"]
    assert np.sqrt(sse.sum() / count.sum()) == pytest.approx(expected, rel=1e-12)


def test_bootstrap_recovers_a_known_difference_and_finds_no_difference_between_equals():
    rng = np.random.default_rng(2)
    base = 0.03 + rng.normal(0, 0.002, (1, 30))  # a deterministic method on 30 test pairs
    better = base - 0.004 + rng.normal(0, 0.0005, (3, 30))  # a model with 3 seeds, 0.004 lower
    same = base + rng.normal(0, 0.0005, (3, 30))
    errors = {"base": errors_from_rmse(base), "better": errors_from_rmse(better), "same": errors_from_rmse(same)}
    table = compare(errors, [("better", "base"), ("same", "base")], resamples=1000).set_index("method")
    assert table.loc["better", "difference"] == pytest.approx(-0.004, abs=3e-4)
    assert table.loc["better", "high"] < 0 and table.loc["better", "significant"]
    assert table.loc["same", "low"] < 0 < table.loc["same", "high"] and not table.loc["same", "significant"]


def test_interval_width_matches_the_normal_theory_of_a_mean():
    rng = np.random.default_rng(3)
    n, sigma = 400, 0.001
    b = np.full((1, n), 0.05)
    a = b + 0.0005 + rng.normal(0, sigma, (1, n))  # per-pair differences ~ N(0.0005, sigma^2)
    row = compare({"a": errors_from_rmse(a), "b": errors_from_rmse(b)}, [("a", "b")], resamples=4000).iloc[0]
    half_width = (row["high"] - row["low"]) / 2
    assert half_width == pytest.approx(1.96 * sigma / np.sqrt(n), rel=0.12)
    assert row["low"] < 0.0005 < row["high"]


def test_spatial_blocks_widen_the_interval_when_errors_vary_across_space():
    rng = np.random.default_rng(4)
    pairs, blocks = 3, 60
    count = np.full((1, pairs, blocks), 100.0)
    b_sse = np.full((1, pairs, blocks), 100 * 0.03**2)
    local = rng.normal(0, 0.01, (1, pairs, blocks))  # the difference varies from block to block ...
    a_sse = 100 * (0.03 + local) ** 2
    a_sse *= a_sse.sum(-1, keepdims=True).mean() / a_sse.sum(-1, keepdims=True)  # ... but not from pair to pair
    flat = compare({"a": Errors(a_sse.sum(-1, keepdims=True), count.sum(-1, keepdims=True)),
                    "b": Errors(b_sse.sum(-1, keepdims=True), count.sum(-1, keepdims=True))}, [("a", "b")]).iloc[0]
    spatial = compare({"a": Errors(a_sse, count), "b": Errors(b_sse, count)}, [("a", "b")]).iloc[0]
    assert flat["high"] - flat["low"] < 1e-9  # the pairs alone see no uncertainty
    assert spatial["high"] - spatial["low"] > 1e-4


def test_errors_by_method_arranges_a_tidy_table_and_ranking_ties_what_no_interval_separates():
    rows = []
    for method, seeds, level in [("td", [None], 0.05), ("m", [1, 2, 3], 0.03), ("n", [1, 2, 3], 0.0301)]:
        for seed in seeds:
            for k, (ref, target) in enumerate([("a", "b"), ("c", "d"), ("e", "f"), ("g", "h")]):
                for block in range(4):
                    value = level * (1 + 0.01 * ((seed or 0) + k + block))
                    rows.append({"method": method, "seed": seed, "reference_date": ref, "target_date": target,
                                 "block": block, "sse": value**2 * 10, "count": 10.0})
    errors = errors_by_method(pd.DataFrame(rows))
    assert errors["m"].sse.shape == (3, 4, 4) and errors["td"].sse.shape == (1, 4, 4)
    differences = compare(errors, [("m", "td"), ("n", "td"), ("m", "n")], resamples=500)
    table = ranking(errors, differences).set_index("method")
    assert table.loc["m", "rank"] == table.loc["n", "rank"] == 1 and table.loc["td", "rank"] == 3


def test_bad_requests_name_the_parameter():
    errors = {"a": errors_from_rmse([[0.1, 0.2]])}
    with pytest.raises(InputError, match="no block errors for \\['b'\\]"):
        compare(errors, [("a", "b")])
    with pytest.raises(InputError, match="evaluate.bootstrap.level"):
        compare(errors, [("a", "a")], level=1.5)
    with pytest.raises(InputError, match="evaluate.bootstrap.block"):
        block_errors(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), np.ones((2, 2), bool), 0)


def test_a_study_of_one_method_writes_tables_with_headers_and_no_rows(tmp_path):
    """The notebooks' defaults score temporal-difference alone: nothing to compare, but the tables must
    still read back (an empty frame without columns writes a file pandas cannot read)."""
    rows = [{"dataset": "cia-sim", "region": region, "method": "temporal-difference", "seed": None,
             "reference_date": "a", "target_date": "b", "block": block, "sse": 0.01, "count": 10.0}
            for region in ("all", "changed") for block in range(3)]
    differences, ranks = study_significance(pd.DataFrame(rows), {"temporal-difference": "reference"}, [])
    assert differences.empty and {"dataset", "region", "comparison", "low", "high"} <= set(differences.columns)
    assert list(ranks["method"]) == ["temporal-difference", "temporal-difference"]
    for name, table in (("differences", differences), ("ranking", ranks)):
        table.to_csv(tmp_path / f"{name}.csv", index=False)
        assert list(pd.read_csv(tmp_path / f"{name}.csv").columns) == list(table.columns)
