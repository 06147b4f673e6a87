import pytest

from stfusion.data.splits import Splits, make_splits
from stfusion.errors import ConfigError, InputError

DATES = [f"2001-{m:02d}-01" for m in range(1, 11)]


def test_test_targets_never_reach_training_or_validation():
    splits = make_splits("x", DATES, n_test=3, n_val=2)
    test_targets = splits.test_targets
    assert len(test_targets) == 3 and len(splits.val) == 2
    assert not test_targets & set(splits.train_dates)
    assert not test_targets & {d for pair in splits.train + splits.val for d in pair}
    assert not splits.val_targets & {d for pair in splits.train for d in pair}
    assert DATES[0] not in test_targets and DATES[-1] not in test_targets


def test_references_are_nearest_earlier_usable_dates():
    splits = make_splits("x", DATES, test_targets=[DATES[3], DATES[4]], val_targets=[DATES[6]])
    assert splits.test == ((DATES[2], DATES[3]), (DATES[2], DATES[4]))
    assert splits.val == ((DATES[5], DATES[6]),)
    assert (DATES[0], DATES[1]) in splits.train and (DATES[1], DATES[0]) in splits.train


def test_leakage_is_detected_on_load(tmp_path):
    splits = make_splits("x", DATES, n_test=2, n_val=1)
    path = splits.save(tmp_path / "splits.json")
    assert Splits.load(path) == splits
    target = splits.test[0][1]
    leaky = Splits("x", splits.train_dates + (target,), splits.train, splits.val, splits.test)
    with pytest.raises(InputError, match="leak"):
        leaky.check_no_leakage()
    with pytest.raises(InputError, match="leak"):
        leaky.save(tmp_path / "leaky.json")
    assert not (tmp_path / "leaky.json").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"test_targets": ["2001-01-01"]}, "test_targets: 2001-01-01 is not an interior date"),
        ({"test_targets": ["1999-05-05"]}, "test_targets"),
        ({"test_targets": ["2001-03-01"], "val_targets": ["2001-03-01"]}, "both test and validation"),
        ({"n_test": 9}, "exceeds"),
    ],
)
def test_bad_split_settings_name_the_parameter(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_splits("x", DATES, key="preprocess.splits.x", **kwargs)
