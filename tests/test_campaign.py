"""The campaign of bad inputs a demanding user tries on the command line, kept as one table.

Every case runs `stfusion` as a user would and asserts what the user sees: exit status 2, one line on stderr
that names the file or option and says what was expected (no traceback), and the folder byte for byte as it
was: nothing the user gave overwritten, nothing partial left behind. The cases that are no error (fill
values, unicode paths) assert the output instead. Deeper faults (kill -9 during training, zip-slip and
symlink archives, corrupted raw files under a stale manifest) are tested where they are handled:
tests/test_train.py, tests/test_real_data.py and tests/test_datacube.py.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from affine import Affine
from rasterio.crs import CRS

from stfusion.cli import main
from stfusion.data.raster import Grid, write_geotiff

GRID = Grid(40, 60, Affine(25.0, 0, 300000.0, 0, -25.0, 6200000.0), CRS.from_epsg(32755))


class Payload:
    """Pickled, it would run a shell command on load: what a malicious weights file does."""

    def __reduce__(self):
        return os.system, ("touch pwned",)


def _image(seed: int, shift: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).integers(300, 3000, (3, 40, 60)) + shift).astype(np.int16)


@pytest.fixture
def folder(tmp_path) -> Path:
    """f1, c1 and c2 (int16 reflectance x 10000) in a folder of the user's."""
    for name, data in (("f1", _image(1)), ("c1", _image(2)), ("c2", _image(2, 120))):
        write_geotiff(tmp_path / f"{name}.tif", data, GRID)
    return tmp_path


def _fuse(folder: Path, *extra: str, f1: str = "f1.tif", c1: str = "c1.tif", c2: str = "c2.tif",
          out: str = "p.tif", method: str = "temporal-difference") -> list[str]:
    return ["fuse", "--method", method, "--fine-ref", str(folder / f1), "--coarse-ref", str(folder / c1),
            "--coarse-target", str(folder / c2), "--out", str(folder / out), *extra]


def _tif(folder: Path, name: str, data: np.ndarray, grid: Grid = GRID, **kwargs) -> str:
    """Write the user's bad GeoTIFF ``name``; return the name for the command line."""
    write_geotiff(folder / name, data, grid, **kwargs)
    return name


def _raw(folder: Path, name: str, content: bytes) -> str:
    (folder / name).write_bytes(content)
    return name


def _weights_without_state_dict(folder: Path) -> str:
    torch.save({"foo": 1}, folder / "w.pt")
    return str(folder / "w.pt")


def _envi_negative_size(folder: Path) -> str:
    _raw(folder, "h.hdr", b"ENVI\nsamples = -60\nlines = 40\nbands = 3\ndata type = 2\ninterleave = bsq\n"
                          b"byte order = 0\n")
    return _raw(folder, "h.dat", bytes(7200))


SHORTER = Grid(20, 60, GRID.transform, GRID.crs)
OTHER_CRS = Grid(40, 60, GRID.transform, CRS.from_epsg(32756))
SHIFTED = Grid(40, 60, GRID.transform * Affine.translation(1, 0), GRID.crs)
FILLED = np.full((3, 40, 60), -9999, np.int16)
EVIL = pickle.dumps(Payload())
POSITIVE_SCALE = "--reflectance-scale: expected a positive"
EVALUATE = ["evaluate", "--pred", "{d}/f1.tif", "--truth", "{d}/c1.tif"]

# Each case: (setup(folder) -> the command line, what stderr's one line must say). The setup writes the bad input.
CASES = {
    "missing raster": (lambda d: _fuse(d, f1="nope.tif"), "nope.tif: raster file not found"),
    "empty raster": (lambda d: _fuse(d, c2=_raw(d, "e.tif", b"")), "e.tif: cannot read raster"),
    "truncated raster": (lambda d: _fuse(d, c2=_raw(d, "t.tif", (d / "c2.tif").read_bytes()[:600])),
                         "t.tif: cannot read rows 0-40, columns 0-60: the file is truncated or corrupt"),
    "text named .tif": (lambda d: _fuse(d, c1=_raw(d, "x.tif", b"not an image\n")), "x.tif: cannot read raster"),
    "band mismatch": (lambda d: _fuse(d, c2=_tif(d, "b.tif", _image(3)[:2])), "has 2 bands"),
    "shape mismatch": (lambda d: _fuse(d, c2=_tif(d, "s.tif", _image(3)[:, :20], SHORTER)), "s.tif against"),
    "CRS mismatch": (lambda d: _fuse(d, c2=_tif(d, "crs.tif", _image(3), OTHER_CRS)), "CRS EPSG:32756 differs"),
    "transform mismatch": (lambda d: _fuse(d, c2=_tif(d, "tr.tif", _image(3), SHIFTED)), "transform"),
    "all-NaN input": (lambda d: _fuse(d, c2=_tif(d, "nan.tif", np.full((3, 40, 60), np.nan, np.float32))),
                      "no pixel is valid"),
    "all-nodata input": (lambda d: _fuse(d, f1=_tif(d, "nd.tif", FILLED, nodata=-9999)), "no pixel is valid"),
    "even --window": (lambda d: _fuse(d, "--window", "30", method="starfm"), "--window: expected an odd number"),
    "huge --window": (lambda d: _fuse(d, "--window", "1000001", method="starfm"), "--window: 1000001 pixels is wider"),
    "--ratio not dividing": (lambda d: _fuse(d, "--ratio", "7"), "--ratio: 7 does not divide"),
    "--ratio 0": (lambda d: _fuse(d, "--ratio", "0"), "--ratio: expected the coarse over fine pixel"),
    "--reflectance-scale 0": (lambda d: _fuse(d, "--reflectance-scale", "0"), POSITIVE_SCALE),
    "--reflectance-scale nan": (lambda d: _fuse(d, "--reflectance-scale", "nan"), POSITIVE_SCALE),
    "float x10000 read as reflectance": (lambda d: _fuse(d, f1=_tif(d, "f.tif", _image(1).astype(np.float32))),
                                         "pass --reflectance-scale 10000"),
    "a pair in other units": (lambda d: _fuse(d, c1=_tif(d, "c1.tif", _image(2) // 10)), "its median reflectance"),
    "--out is an input": (lambda d: _fuse(d, out="f1.tif"), "is the input"),
    "--out exists": (lambda d: _fuse(d, out=_raw(d, "p.tif", b"the user's earlier result")), "--overwrite"),
    "--out .png": (lambda d: _fuse(d, out="p.png"), "does not end in .tif or .tiff"),
    "--out a folder": (lambda d: ((d / "dir").mkdir(), _fuse(d, out="dir"))[-1], "is a folder"),
    "--out under a file": (lambda d: _fuse(d, out="f1.tif/p.tif"), "is a file, so the folder"),
    "--block too small": (lambda d: _fuse(d, "--block", "8"), "--block: expected a block side of at least 64"),
    "unknown method": (lambda d: _fuse(d, method="starfn"), "--method: unknown method 'starfn'"),
    "malicious pickle as weights": (lambda d: _fuse(d, "--weights", str(d / _raw(d, "evil.pt", EVIL))),
                                    "evil.pt: not a weights file stfusion can read safely"),
    "weights without state_dict": (lambda d: _fuse(d, "--weights", _weights_without_state_dict(d)),
                                   "w.pt: not an stfusion weights file"),
    "malformed ENVI header": (lambda d: _fuse(d, c2=_envi_negative_size(d)), "h.hdr: ENVI header 'samples' = -60"),
    "evaluate: missing truth": (lambda d: [a.format(d=d) for a in EVALUATE[:-1]] + [str(d / "no.tif")],
                                "no.tif: raster file not found"),
    "evaluate: float x10000 prediction": (lambda d: ["evaluate", "--pred", str(d / _tif(d, "p.tif", _image(1).astype(
        np.float32))), "--truth", str(d / "f1.tif")], "p.tif: only 0% of its values are reflectance"),
    "evaluate: truth in other units": (lambda d: ["evaluate", "--pred", str(d / "f1.tif"), "--truth",
                                                  str(d / _tif(d, "t.tif", _image(1) // 10))], "its median reflectance"),
    "evaluate: --reflectance-scale 0": (lambda d: [a.format(d=d) for a in EVALUATE] + ["--reflectance-scale", "0"],
                                        POSITIVE_SCALE),
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(folder.rglob("*"))}


# Known defects, each in code the study's stages run (fixed together with the study rerun they require).
DEFECTS: dict[str, str] = {}


@pytest.mark.parametrize("case", [pytest.param(case, marks=pytest.mark.xfail(strict=True, reason=DEFECTS[case]))
                                  if case in DEFECTS else case for case in CASES])
def test_a_bad_input_is_one_line_and_loses_nothing(folder, capsys, case):
    setup, message = CASES[case]
    argv = setup(folder)
    before = _snapshot(folder)
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stfusion: error: "), captured.err
    assert message in lines[0] and "Traceback" not in captured.err
    assert _snapshot(folder) == before  # nothing overwritten, nothing partial left
    assert not (folder / "pwned").exists() and not Path("pwned").exists()


def test_fill_values_without_a_nodata_tag_are_counted_not_predicted(folder, capsys):
    image = _image(1)
    image[0, :2], image[2, 5, 5] = -9999, 32000
    _tif(folder, "f1.tif", image)
    assert main(_fuse(folder)) == 0
    assert "121 values outside reflectance (0, 1] counted as nodata" in capsys.readouterr().out


def test_unicode_and_spaces_in_paths(folder, capsys):
    named = folder / "Données de l'été 2021"
    named.mkdir()
    for name in ("f1", "c1", "c2"):
        shutil.copy(folder / f"{name}.tif", named / f"{name} été.tif")
    assert main(_fuse(named, f1="f1 été.tif", c1="c1 été.tif", c2="c2 été.tif", out="prédiction 1.tif")) == 0
    assert (named / "prédiction 1.tif").is_file() and "wrote" in capsys.readouterr().out


@pytest.fixture(scope="module")
def realistic_scene(tmp_path_factory) -> Path:
    """A 160 x 160 CIA-like scene of the realistic preset (sensor noise, clouds): three dates of fine and coarse."""
    from stfusion.data.synthetic import generate_dataset, synthetic_config

    folder = tmp_path_factory.mktemp("realistic") / "cia-sim"
    generate_dataset("cia-sim", folder, synthetic_config("cia-sim", {"height": 160, "width": 160, "n_dates": 3,
                                                                      "seed": 4}))
    return folder


@pytest.mark.parametrize("method", ["persistence", "temporal-difference", "starfm", "fsdaf", "estarfm"])
def test_no_method_writes_nan_where_the_inputs_are_valid(realistic_scene, tmp_path, capsys, method):
    """Where STARFM finds no similar pixel (1361 of 25600 pixels here) the output is filled and counted: every
    pixel whose inputs are valid is predicted, by every method."""
    from stfusion.data.raster import read_geotiff

    dates = sorted(p.stem for p in (realistic_scene / "fine").glob("*.tif"))
    refs = [dates[0], dates[2]] if method == "estarfm" else [dates[0]]
    fine = [str(realistic_scene / "fine" / f"{d}.tif") for d in refs]
    coarse = [str(realistic_scene / "coarse" / f"{d}.tif") for d in refs]
    target = realistic_scene / "coarse" / f"{dates[1]}.tif"
    out = tmp_path / "p.tif"
    assert main(["fuse", "--method", method, "--ratio", "20", "--fine-ref", *fine, "--coarse-ref", *coarse,
                 "--coarse-target", str(target), "--out", str(out)]) == 0
    inputs = [read_geotiff(p).data for p in (*fine, *coarse, target)]
    valid = np.logical_and.reduce([np.isfinite(d).all(axis=0) & (d > 0).all(axis=0) for d in inputs])
    assert valid.mean() > 0.5
    assert np.isfinite(read_geotiff(out).data[:, valid]).all()
    if method == "starfm":
        assert "found no similar pixel" in capsys.readouterr().out
