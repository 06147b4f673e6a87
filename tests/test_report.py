"""The report's headline is written from the bootstrap intervals, not from the means."""

import pandas as pd

from stfusion.reporting.report import _calibration, _headline


def differences(rows):
    return pd.DataFrame([{"dataset": "lgc-sim", "region": region, "comparison": "vs temporal-difference",
                          "method": method, "against": "temporal-difference", "difference": diff, "low": low,
                          "high": high, "significant": low > 0 or high < 0, "level": 0.95}
                         for region, method, diff, low, high in rows])


def test_headline_names_better_worse_and_indistinguishable_methods():
    table = differences([("all", "edcstfn", -0.004, -0.006, -0.002), ("all", "mcbam-gan", -0.003, -0.005, -0.001),
                         ("all", "persistence", 0.02, 0.01, 0.03), ("all", "stfdiff", -0.004, -0.009, 0.001),
                         ("changed", "edcstfn", -0.01, -0.02, 0.003)])
    ranking = pd.DataFrame({"dataset": "lgc-sim", "region": "all", "method": ["edcstfn", "mcbam-gan", "stfdiff"],
                            "rank": [1, 1, 1], "rmse": [0.020, 0.021, 0.020]})
    text = _headline(table, ranking, "lgc-sim")
    assert ("`edcstfn` and `mcbam-gan` are better than `temporal-difference` (95% CI of the RMSE difference "
            "below 0); `persistence` is worse (CI above 0); the rest are indistinguishable from it.") in text
    assert "Over changed pixels: every method is indistinguishable from `temporal-difference`." in text
    assert "Rank 1 (no method significantly better): `edcstfn`, `stfdiff` and `mcbam-gan`." in text


def test_headline_names_the_reference_when_no_method_beats_it():
    table = differences([("all", "persistence", 0.02, 0.01, 0.03), ("all", "stfdiff", -0.004, -0.009, 0.001)])
    ranking = pd.DataFrame({"dataset": "lgc-sim", "region": "all", "method": ["stfdiff"], "rank": [1], "rmse": [0.02]})
    assert ("`persistence` is worse than `temporal-difference` (95% CI of the RMSE difference above 0); the rest "
            "are indistinguishable from it.") in _headline(table, ranking, "lgc-sim")


def test_calibration_says_over_or_under_confident_from_the_measured_coverage():
    coverage = pd.DataFrame({"dataset": "cia-sim", "method": ["a", "a", "b", "c"], "seed": [None, None, 42, 42],
                             "region": ["all", "changed", "all", "all"], "coverage_90": [0.55, 0.40, 0.97, 0.885]})
    lines = _calibration(coverage, "cia-sim")
    assert "`a`: its nominal 90 % interval covers 0.55 of all band-values and 0.40 over changed pixels: over-confident." in lines[0]
    assert "under-confident" in lines[1] and "0.97" in lines[1]
    assert "calibrated (within 0.02 of 0.90)" in lines[2] and "confident" not in lines[2]
    assert "changed" not in lines[2]  # no changed pixels: nothing said about them
