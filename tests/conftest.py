"""Shared fixtures: tiny synthetic datasets made on the fly (fixed seeds, real formats)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stfusion.data.synthetic import generate_dataset, synthetic_config

TINY = {"height": 60, "width": 40, "n_dates": 5, "seed": 3}


@pytest.fixture(scope="session")
def tiny_raw_master(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("raw") / "cia-sim"
    generate_dataset("cia-sim", folder, synthetic_config("cia-sim", TINY))
    return folder


@pytest.fixture
def tiny_raw(tiny_raw_master, tmp_path) -> Path:
    """A private copy of a tiny cia-sim raw folder, safe to damage."""
    folder = tmp_path / "raw" / "cia-sim"
    shutil.copytree(tiny_raw_master, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_processed(tiny_raw_master, tmp_path_factory):
    from stfusion.data.preprocess import preprocess_dataset

    out = tmp_path_factory.mktemp("processed") / "cia-sim"
    cube, splits = preprocess_dataset(tiny_raw_master, out, {"n_test": 1, "n_val": 1})
    return out, cube, splits
