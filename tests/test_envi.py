"""ENVI reader/writer: BIL vs BSQ by known pixels, headers, georeferencing, truncation, errors.

The raw bytes in the layout tests are built by hand (not by ``write_envi``), so a reader and
writer that were wrong in the same way could not pass together.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from stfusion.data.envi import NoGeoreferenceWarning, find_header, parse_header, read_envi, write_envi
from stfusion.data.raster import Grid, read_geotiff, write_geotiff
from stfusion.errors import ConfigError, InputError

BANDS, LINES, SAMPLES = 3, 4, 5
SHAPE = (BANDS, LINES, SAMPLES)


def known() -> np.ndarray:
    """Pixel value = 1000 * band + 10 * line + sample, so every value says where it belongs."""
    b, y, x = np.indices(SHAPE)
    return (1000 * b + 10 * y + x).astype(np.int16)


def raw_bytes(array: np.ndarray, interleave: str) -> bytes:
    """Hand-made ENVI bytes (int16 little-endian), written element by element in file order."""
    out = []
    bands, lines, samples = array.shape
    if interleave == "bsq":
        order = ((b, y, x) for b in range(bands) for y in range(lines) for x in range(samples))
    elif interleave == "bil":
        order = ((b, y, x) for y in range(lines) for b in range(bands) for x in range(samples))
    else:
        order = ((b, y, x) for y in range(lines) for x in range(samples) for b in range(bands))
    for index in order:
        out.append(int(array[index]).to_bytes(2, "little", signed=True))
    return b"".join(out)


def read_quiet(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoGeoreferenceWarning)
        return read_envi(path, **kwargs)


@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
def test_headerless_layouts_give_known_pixels(tmp_path, interleave):
    path = tmp_path / f"image.{interleave}"
    path.write_bytes(raw_bytes(known(), interleave))
    raster = read_quiet(path, interleave=interleave, shape=SHAPE)
    assert raster.data.shape == SHAPE and raster.data.dtype == np.int16
    np.testing.assert_array_equal(raster.data, known())
    assert raster.data[2, 3, 4] == 2034


def test_bil_read_as_bsq_gives_different_pixels(tmp_path):
    """data.md §6.5: reading the CIA Landsat BIL file as BSQ is wrong without any error."""
    path = tmp_path / "landsat.bil"
    path.write_bytes(raw_bytes(known(), "bil"))
    as_bsq = read_quiet(path, interleave="bsq", shape=SHAPE).data
    assert not np.array_equal(as_bsq, known())
    # In BIL the second line stored is band 1 of line 0, which BSQ takes as band 0 line 1.
    np.testing.assert_array_equal(as_bsq[0, 1], known()[1, 0])
    np.testing.assert_array_equal(read_quiet(path, interleave="bil", shape=SHAPE).data[0, 1], known()[0, 1])


def test_writer_matches_hand_made_bytes(tmp_path):
    for interleave in ("bsq", "bil", "bip"):
        path = write_envi(tmp_path / f"w.{interleave}", known(), interleave=interleave, header=False)
        assert path.read_bytes() == raw_bytes(known(), interleave)


def test_headerless_without_layout_is_an_error(tmp_path):
    path = tmp_path / "MOD09GA_A2001281.sur_refl.int"
    path.write_bytes(raw_bytes(known(), "bsq"))
    with pytest.raises(InputError, match="header.*interleave.*shape"):
        read_envi(path)
    with pytest.raises(InputError, match="header"):
        read_envi(path, interleave="bsq")


def test_headerless_warns_no_georeferencing(tmp_path):
    path = tmp_path / "x.int"
    path.write_bytes(raw_bytes(known(), "bsq"))
    with pytest.warns(NoGeoreferenceWarning, match="no georeferencing"):
        raster = read_envi(path, interleave="bsq", shape=SHAPE)
    assert raster.grid.crs is None and raster.grid.transform == Affine.identity()
    assert (raster.grid.height, raster.grid.width) == (LINES, SAMPLES)


def test_truncated_file_names_file_and_byte_counts(tmp_path):
    path = tmp_path / "20040416_TM.int"
    path.write_bytes(raw_bytes(known(), "bsq")[:-2])
    expected = 2 * BANDS * LINES * SAMPLES
    with pytest.raises(InputError) as err:
        read_quiet(path, interleave="bsq", shape=SHAPE)
    message = str(err.value)
    assert str(path) in message and str(expected) in message and str(expected - 2) in message


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match="nothing.bil"):
        read_envi(tmp_path / "nothing.bil", interleave="bil", shape=SHAPE)


def test_bad_interleave_argument(tmp_path):
    path = tmp_path / "x.int"
    path.write_bytes(raw_bytes(known(), "bsq"))
    with pytest.raises(ConfigError, match="interleave 'bsl'"):
        read_envi(path, interleave="bsl", shape=SHAPE)


def test_header_is_found_and_trusted(tmp_path):
    path = write_envi(tmp_path / "L71093084_08420011007_HRF_modtran_surf_ref_agd66.bil", known(), interleave="bil",
                      band_names=["blue", "green", "red"])
    assert find_header(path) == tmp_path / "L71093084_08420011007_HRF_modtran_surf_ref_agd66.hdr"
    raster = read_quiet(path)  # no layout arguments needed
    np.testing.assert_array_equal(raster.data, known())
    assert raster.band_names == ("blue", "green", "red")
    # Agreeing arguments are fine.
    np.testing.assert_array_equal(read_quiet(path, interleave="BIL", shape=SHAPE).data, known())


def test_appended_header_name_is_found(tmp_path):
    path = tmp_path / "MOD09GA_A2001281.sur_refl.int"
    path.write_bytes(raw_bytes(known(), "bip"))
    (tmp_path / "MOD09GA_A2001281.sur_refl.int.hdr").write_text(
        "ENVI\nsamples = 5\nlines = 4\nbands = 3\ndata type = 2\ninterleave = bip\nbyte order = 0\n"
    )
    np.testing.assert_array_equal(read_quiet(path).data, known())


def test_header_contradicting_arguments(tmp_path):
    path = write_envi(tmp_path / "x.bil", known(), interleave="bil")
    with pytest.raises(InputError, match=r"interleave 'bsq'.*header.*'bil'"):
        read_envi(path, interleave="bsq")
    with pytest.raises(InputError, match=r"shape \(3, 5, 4\).*\(3, 4, 5\)"):
        read_envi(path, shape=(3, 5, 4))


def test_header_data_types_byte_order_and_offset(tmp_path):
    values = np.linspace(-1.5, 2.5, BANDS * LINES * SAMPLES, dtype=np.float32).reshape(SHAPE)
    path = tmp_path / "float.img"
    path.write_bytes(b"\0" * 16 + values.astype(">f4").tobytes())
    (tmp_path / "float.hdr").write_text(
        "ENVI\ndescription = {a description\n  spanning lines = tricky}\nsamples = 5\nlines = 4\nbands = 3\n"
        "header offset = 16\ndata type = 4\ninterleave = bsq\nbyte order = 1\ndata ignore value = -9999\n"
    )
    raster = read_quiet(path)
    assert raster.data.dtype == np.float32 and raster.data.dtype.isnative
    np.testing.assert_array_equal(raster.data, values)
    assert raster.nodata == -9999
    assert parse_header(tmp_path / "float.hdr")["description"] == "a description spanning lines = tricky"
    # uint16 (code 12) little-endian
    path12 = tmp_path / "u16.img"
    path12.write_bytes(np.full(SHAPE, 60000, "<u2").tobytes())
    (tmp_path / "u16.hdr").write_text("ENVI\nsamples = 5\nlines = 4\nbands = 3\ndata type = 12\ninterleave = bsq\n")
    assert read_quiet(path12).data.max() == 60000


def test_unsupported_data_type(tmp_path):
    path = tmp_path / "c.img"
    path.write_bytes(b"\0" * (8 * 60))
    (tmp_path / "c.hdr").write_text("ENVI\nsamples = 5\nlines = 4\nbands = 3\ndata type = 6\ninterleave = bsq\n")
    with pytest.raises(InputError, match="data type 6"):
        read_envi(path)


def test_georeferenced_round_trip(tmp_path):
    """AGD66 / AMG zone 55, the CRS the CIA 'agd66' suffix suggests (data.md §2)."""
    grid = Grid(LINES, SAMPLES, Affine(25.0, 0.0, 500012.5, 0.0, -25.0, 6150000.0), CRS.from_epsg(20255))
    path = write_envi(tmp_path / "geo.bil", known(), interleave="bil", grid=grid)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # georeferenced: no warning at all
        raster = read_envi(path)
    assert raster.grid.crs.to_epsg() == 20255
    assert raster.grid.transform.almost_equals(grid.transform)
    assert raster.grid.mismatch(grid) is None
    # GDAL's ENVI driver reads the same header: independent check of the writer.
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 20255 and src.transform.almost_equals(grid.transform)
        np.testing.assert_array_equal(src.read(), known())


def test_utm_map_info_without_wkt_and_reference_pixel(tmp_path):
    path = tmp_path / "utm.int"
    path.write_bytes(raw_bytes(known(), "bsq"))
    # Reference pixel (2.5, 3.0) at (1000, 2000): the upper-left corner is 1.5 and 2 pixels away.
    (tmp_path / "utm.hdr").write_text(
        "ENVI\nsamples = 5\nlines = 4\nbands = 3\ndata type = 2\ninterleave = bsq\nbyte order = 0\n"
        "map info = {UTM, 2.5, 3.0, 1000.0, 2000.0, 30.0, 30.0, 55, South, WGS-84, units=Meters}\n"
    )
    grid = read_envi(path).grid
    assert grid.crs == CRS.from_epsg(32755)
    assert grid.transform == Affine(30.0, 0.0, 1000.0 - 1.5 * 30, 0.0, -30.0, 2000.0 + 2 * 30)


def test_unknown_projection_warns_and_keeps_transform(tmp_path):
    path = tmp_path / "odd.int"
    path.write_bytes(raw_bytes(known(), "bsq"))
    (tmp_path / "odd.hdr").write_text(
        "ENVI\nsamples = 5\nlines = 4\nbands = 3\ndata type = 2\ninterleave = bsq\n"
        "map info = {Some Local Grid, 1, 1, 10.0, 20.0, 2.0, 2.0}\n"
    )
    with pytest.warns(NoGeoreferenceWarning, match="Some Local Grid"):
        grid = read_envi(path).grid
    assert grid.crs is None and grid.transform == Affine(2.0, 0.0, 10.0, 0.0, -2.0, 20.0)


def test_header_without_map_info_warns(tmp_path):
    path = write_envi(tmp_path / "plain.int", known(), interleave="bsq")
    with pytest.warns(NoGeoreferenceWarning, match="map info"):
        assert read_envi(path).grid.crs is None


def test_mmap_view_matches(tmp_path):
    path = write_envi(tmp_path / "m.bil", known(), interleave="bil")
    view = read_quiet(path, mmap=True).data
    np.testing.assert_array_equal(view, known())
    assert not view.flags.writeable


def test_writer_refuses_values_that_do_not_fit(tmp_path):
    with pytest.raises(ValueError, match="do not fit"):
        write_envi(tmp_path / "big.int", np.full(SHAPE, 40000, np.int32), interleave="bsq")
    assert not (tmp_path / "big.int").exists()


def test_geotiff_and_envi_agree(tmp_path):
    """The same scene as GeoTIFF (rasterio) and as headerless ENVI BSQ reads back identically."""
    grid = Grid(LINES, SAMPLES, Affine(25.0, 0.0, 0.0, 0.0, -25.0, 100.0), CRS.from_epsg(20255))
    tif = write_geotiff(tmp_path / "20040416_TM.tif", known(), grid)
    envi = write_envi(tmp_path / "20040416_TM.int", known(), interleave="bsq", header=False)
    from_tif = read_geotiff(tif, bands=BANDS)
    np.testing.assert_array_equal(from_tif.data, read_quiet(envi, interleave="bsq", shape=SHAPE).data)
    assert from_tif.grid.crs.to_epsg() == 20255
