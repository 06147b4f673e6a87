"""Real CIA/LGC specs, scanning a user's folder, and the DAP download against a local server.

Fixtures use the real file and folder names (data.md §3) but tiny images: the specs are shrunk
with ``DatasetSpec.restrict``. The "DAP" is an ``http.server`` on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import socket
import threading
import warnings
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from stfusion.data.envi import NoGeoreferenceWarning, read_envi, write_envi
from stfusion.data.manifest import Manifest
from stfusion.data.real import (
    CIA, LGC, DownloadError, check_band_order, download, get_spec, parse_listing, scan_raw_dir,
)
from stfusion.errors import ConfigError, InputError
from stfusion.rehearsal.portal import file_name

SMALL = (6, 8, 10)
CIA_DATES = ["2001-10-08", "2001-10-17", "2002-03-10"]  # the third has the L72 Landsat file
LGC_DATES = ["2004-04-16", "2004-12-12", "2005-04-03"]
CIA_ZIP_ROOT = "Landsat_and_MODIS_data_for_the_Coleambally_Irrigation_Area-x7Qa2Lp9-/data/CIA"


def small(spec, dates):
    return spec.restrict(dates=dates, shape=SMALL)


def pixels(spec, date: str, role: str) -> np.ndarray:
    """Distinct content per date and role, so a mix-up of dates shows in the values."""
    seed = spec.dates().index(date) * 2 + (role == "coarse")
    return np.random.default_rng(seed).integers(1, 10000, SMALL, dtype=np.int16)


def write_tree(root: Path, spec) -> dict[tuple[str, str], Path]:
    """The layout of the DAP zips: <zip root>/{Landsat,MODIS}/<date folder>/<file> (LGC: two zips)."""
    paths = {}
    for row in spec.rows:
        for role, sensor in (("fine", "Landsat"), ("coarse", "MODIS")):
            name = file_name(spec, row, role)  # the real names, the L72 file included (data.md §6.2)
            if spec.name == "cia":
                folder = root / CIA_ZIP_ROOT / sensor / row.folder
            else:
                folder = root / f"Landsat_and_MODIS_data_for_the_Lower_Gwydir_Catchment_{sensor.upper()}" / row.folder
            path = folder / name
            write_envi(path, pixels(spec, row.date, role), interleave=spec.interleave(role), header=False)
            paths[(row.date, role)] = path
    return paths


def read_raw(manifest: Manifest, date: str, role: str) -> np.ndarray:
    info = manifest.file_info(next(e[role] for e in manifest.dates if e["date"] == date))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoGeoreferenceWarning)
        return read_envi(manifest.file(date, role), interleave=info["format"][5:], shape=tuple(info["shape"])).data


# ---------------------------------------------------------------------------------------------
# Specs


def test_date_tables_match_data_md():
    assert len(CIA.rows) == 17 and len(LGC.rows) == 14
    for spec in (CIA, LGC):
        for row in spec.rows:
            year, doy, label = row.folder.split("_")
            day = dt.date.fromisoformat(row.date)
            assert (int(year), int(doy)) == row.doy == (day.year, day.timetuple().tm_yday)
            assert day.strftime("%d%b").lower() == label.lower() or day.strftime("%b%d").lower() == label.lower()
    assert {r.date: r.fine_file_date for r in CIA.rows}["2002-03-10"] == "20020309"
    assert all(r.fine_file_date == r.date.replace("-", "") for r in LGC.rows)
    assert CIA.expected_bytes == 42_105_600 and LGC.expected_bytes == 104_448_000
    assert (CIA.fine_interleave, CIA.coarse_interleave, LGC.fine_interleave) == ("bil", "bsq", "bsq")
    assert CIA.landing_page == "https://data.csiro.au/collection/csiro:5846" and LGC.dap_id == "csiro:5847"


def test_unknown_dataset_lists_known_names(tmp_path):
    with pytest.raises(ConfigError, match=r"'modis'.*\['cia', 'lgc'\]"):
        get_spec("modis")
    with pytest.raises(ConfigError, match="cia"):
        download("modis", tmp_path)


def test_restrict_rejects_unknown_dates():
    with pytest.raises(ConfigError, match="2001-10-09"):
        CIA.restrict(dates=["2001-10-09"])


# ---------------------------------------------------------------------------------------------
# Scanning


def test_scan_cia_tree_handles_date_offset_and_l72(tmp_path):
    spec = small(CIA, CIA_DATES)
    paths = write_tree(tmp_path / "raw", spec)
    manifest = scan_raw_dir(spec, tmp_path / "raw")
    assert manifest.date_list() == CIA_DATES and manifest.dataset == "cia"
    # Folder date 2001-10-08 holds the Landsat file dated 20011007 (data.md §6.1).
    assert manifest.meta["raw_files"]["2001-10-08"]["fine"] == "L71093084_08420011007_HRF_modtran_surf_ref_agd66.bil"
    assert manifest.meta["raw_files"]["2002-03-10"]["fine"].startswith("L72")
    assert manifest.meta["raw_files"]["2002-03-10"]["coarse"] == "MOD09GA_A2002069.sur_refl.int"
    assert manifest.meta["doi"] == "10.4225/08/5111AC0BF1229" and "Emelyanova et al. 2013" in manifest.meta["citation"]
    for date in CIA_DATES:
        for role in ("fine", "coarse"):
            assert manifest.file(date, role) == paths[(date, role)]
            np.testing.assert_array_equal(read_raw(manifest, date, role), pixels(spec, date, role))
    formats = {info["format"] for name, info in manifest.files.items() if name.endswith(".bil")}
    assert formats == {"envi-bil"}
    assert {info["format"] for name, info in manifest.files.items() if name.endswith(".int")} == {"envi-bsq"}
    assert all(info["shape"] == list(SMALL) and info["bytes"] == 960 for info in manifest.files.values())
    manifest.verify()
    assert not (tmp_path / "raw" / "manifest.json").exists()  # no manifest_folder: nothing written


def test_scan_lgc_tree_with_manifest_elsewhere(tmp_path):
    spec = small(LGC, LGC_DATES)
    paths = write_tree(tmp_path / "user" / "downloads", spec)
    scan_raw_dir(spec, tmp_path / "user", manifest_folder=tmp_path / "data" / "raw" / "lgc")
    manifest = Manifest.load(tmp_path / "data" / "raw" / "lgc")
    manifest.verify()
    entry = manifest.dates[1]
    assert entry["date"] == "2004-12-12" and Path(entry["fine"]).is_absolute()
    assert manifest.file("2004-12-12", "fine") == paths[("2004-12-12", "fine")]
    assert manifest.meta["raw_files"]["2004-12-12"] == {
        "folder": "2004_347_Dec12", "fine_file_date": "20041212",
        "fine": "20041212_TM.int", "coarse": "MOD09GA_A2004347.sur_refl.int",
    }
    np.testing.assert_array_equal(read_raw(manifest, "2005-04-03", "coarse"), pixels(spec, "2005-04-03", "coarse"))


def test_scan_missing_date_names_date_file_and_folder(tmp_path):
    spec = small(CIA, CIA_DATES)
    paths = write_tree(tmp_path, spec)
    paths[("2001-10-17", "fine")].unlink()
    with pytest.raises(InputError) as err:
        scan_raw_dir(spec, tmp_path)
    message = str(err.value)
    assert "2001-10-17" in message and "L71093084_08420011016_HRF_modtran_surf_ref_agd66.bil" in message
    assert str(tmp_path) in message and "2001_290_17oct" in message and "csiro:5846" in message


def test_scan_wrong_size_is_an_error(tmp_path):
    spec = small(LGC, LGC_DATES)
    paths = write_tree(tmp_path, spec)
    path = paths[("2004-04-16", "coarse")]
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match=r"MOD09GA_A2004107.sur_refl.int: has 860 bytes, expected 960"):
        scan_raw_dir(spec, tmp_path)


def test_scan_identical_copies_ok_different_copies_error(tmp_path):
    spec = small(LGC, LGC_DATES[:1])
    paths = write_tree(tmp_path / "a", spec)
    copy = tmp_path / "b" / "20040416_TM.int"
    copy.parent.mkdir()
    copy.write_bytes(paths[("2004-04-16", "fine")].read_bytes())
    assert scan_raw_dir(spec, tmp_path).date_list() == ["2004-04-16"]
    copy.write_bytes(bytes(960))
    with pytest.raises(InputError, match="several different fine files"):
        scan_raw_dir(spec, tmp_path)


def test_scan_trusts_a_header_that_disagrees_with_the_table(tmp_path):
    spec = small(CIA, CIA_DATES[:1])
    paths = write_tree(tmp_path, spec)
    landsat = paths[("2001-10-08", "fine")]
    write_envi(landsat, pixels(spec, "2001-10-08", "fine"), interleave="bsq")  # header says bsq
    with pytest.warns(UserWarning, match="trusting the header"):
        manifest = scan_raw_dir(spec, tmp_path)
    assert manifest.file_info(manifest.dates[0]["fine"])["format"] == "envi-bsq"


def test_scan_missing_folder(tmp_path):
    with pytest.raises(InputError, match="raw_dir"):
        scan_raw_dir("cia", tmp_path / "absent")


# ---------------------------------------------------------------------------------------------
# A fake DAP on 127.0.0.1


class FakeDAP:
    """Routes path -> bytes or JSON; honours Range unless ``ignore_range``; logs (path, Range)."""

    def __init__(self):
        self.routes: dict[str, object] = {}
        self.ignore_range = False
        self.log: list[tuple[str, str | None]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                owner.log.append((self.path, self.headers.get("Range")))
                body = owner.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                if not isinstance(body, bytes):
                    self._send(200, json.dumps(body).encode(), "application/json")
                    return
                ranged = self.headers.get("Range")
                if ranged and not owner.ignore_range:
                    start = int(ranged.split("=")[1].split("-")[0])
                    self._send(206, body[start:], "application/octet-stream",
                               {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"})
                else:
                    self._send(200, body, "application/octet-stream")

            def _send(self, code, body, ctype, extra=None):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.base_url = self.url + "/dap/ws/v2"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def publish(self, spec, files: dict[str, bytes], sizes: dict[str, int] | None = None, licence="CC BY 4.0"):
        """Serve ``files`` (listed name -> bytes) as the DAP collection of ``spec``."""
        collection = f"/dap/ws/v2/collections/{spec.dap_id}"
        entries = []
        for i, (name, body) in enumerate(files.items()):
            self.routes[f"/s3/{i}"] = body
            entries.append({
                "filename": name, "fileSize": (sizes or {}).get(name, len(body)),
                "link": {"href": f"{self.base_url}/collections/{spec.dap_id}/data/{i}"},
                "presignedLink": {"href": f"{self.url}/s3/{i}"},
            })
        self.routes[collection + "/data"] = {"file": entries}
        self.routes[collection] = {"title": spec.title, "licence": licence}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def dap():
    server = FakeDAP()
    yield server
    server.close()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, body in members.items():
            zf.writestr(name, body)
    return buffer.getvalue()


def cia_files(tmp_path, spec) -> dict[str, bytes]:
    """CIA Landsat in a DAP web-UI style zip, MODIS as plain files, plus an unrelated PDF."""
    paths = write_tree(tmp_path / "source", spec)
    root = tmp_path / "source"
    landsat = {p.relative_to(root).as_posix(): p.read_bytes() for (d, r), p in paths.items() if r == "fine"}
    files = {"Landsat_and_MODIS_data-x7Qa2Lp9.zip": zip_bytes(landsat), "README.pdf": b"%PDF not needed"}
    for (date, role), path in paths.items():
        if role == "coarse":
            files[f"data/CIA/MODIS/{path.parent.name}/{path.name}"] = path.read_bytes()
    return files


def test_download_lists_filters_fetches_extracts_and_scans(tmp_path, dap):
    spec = small(CIA, CIA_DATES)
    dap.publish(spec, cia_files(tmp_path, spec))
    manifest = download(spec, tmp_path / "dest", base_url=dap.base_url)
    assert manifest.date_list() == CIA_DATES and manifest.meta["licence"] == "CC BY 4.0"
    assert manifest.meta["obtained"] == "download" and manifest.meta["doi"] == CIA.doi
    assert not any(path == "/s3/1" for path, _ in dap.log)  # README.pdf was filtered out
    loaded = Manifest.load(tmp_path / "dest")
    loaded.verify()
    assert loaded.dates[0]["fine"].startswith("extracted/Landsat_and_MODIS_data-x7Qa2Lp9/")
    for date in CIA_DATES:
        np.testing.assert_array_equal(read_raw(loaded, date, "fine"), pixels(spec, date, "fine"))
    # Running again downloads nothing.
    requests_before = len(dap.log)
    download(spec, tmp_path / "dest", base_url=dap.base_url)
    assert all(not path.startswith("/s3/") for path, _ in dap.log[requests_before:])


@pytest.mark.parametrize("ignore_range", [False, True])
def test_download_resumes_a_partial_file(tmp_path, dap, ignore_range):
    spec = small(LGC, LGC_DATES)
    paths = write_tree(tmp_path / "source", spec)
    files = {f"lgc/{p.name}": p.read_bytes() for p in paths.values()}
    dap.publish(spec, files)
    dap.ignore_range = ignore_range
    name = "lgc/20041212_TM.int"
    body = files[name]
    part = tmp_path / "dest" / "downloads" / "lgc" / "20041212_TM.int.part"
    part.parent.mkdir(parents=True)
    # A server that ignores Range must make us restart, so give that case a corrupt head.
    part.write_bytes(body[:400] if not ignore_range else b"\xff" * 400)
    manifest = download(spec, tmp_path / "dest", base_url=dap.base_url)
    index = list(files).index(name)
    assert (f"/s3/{index}", "bytes=400-") in dap.log
    assert not part.exists()
    digest = hashlib.sha256(body).hexdigest()
    assert manifest.meta["downloads"][name]["sha256"] == digest
    assert manifest.files[manifest.dates[1]["fine"]]["sha256"] == digest


def test_download_size_mismatch(tmp_path, dap):
    spec = small(LGC, LGC_DATES)
    paths = write_tree(tmp_path / "source", spec)
    files = {p.name: p.read_bytes() for p in paths.values()}
    dap.publish(spec, files, sizes={"20040416_TM.int": 1000})
    with pytest.raises(InputError, match=r"got 960 bytes for 20040416_TM.int.*says 1000"):
        download(spec, tmp_path / "dest", base_url=dap.base_url)


def test_download_rejects_zip_escaping_destination(tmp_path, dap):
    spec = small(CIA, CIA_DATES)
    files = cia_files(tmp_path, spec)
    files["evil.zip"] = zip_bytes({"fine.txt": b"ok", "../evil.txt": b"escape"})
    dap.publish(spec, files)
    with pytest.raises(InputError, match=r"evil.zip.*'\.\./evil\.txt'"):
        download(spec, tmp_path / "dest", base_url=dap.base_url)
    assert not list(tmp_path.rglob("evil.txt"))
    assert not (tmp_path / "dest" / "extracted" / "evil").exists()


def test_download_rejects_symlink_member(tmp_path, dap):
    spec = small(CIA, CIA_DATES)
    files = cia_files(tmp_path, spec)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        link = zipfile.ZipInfo("link")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    files["links.zip"] = buffer.getvalue()
    dap.publish(spec, files)
    with pytest.raises(InputError, match="symlink member 'link'"):
        download(spec, tmp_path / "dest", base_url=dap.base_url)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/dap/ws/v2"


def test_no_network_message_says_what_to_download(tmp_path):
    with pytest.raises(DownloadError) as err:
        download("lgc", tmp_path / "dest", base_url=closed_port_url(), timeout=5)
    message = str(err.value)
    assert isinstance(err.value, InputError) and message.count("\n") >= 4
    for needle in ("10.4225/08/5111AD2B7FEE6", "https://data.csiro.au/collection/csiro:5847",
                   "download.raw_dir", "params.yaml", "--raw-dir", "20040416_TM.int"):
        assert needle in message


def test_http_error_and_empty_listing_say_what_to_download(tmp_path, dap):
    with pytest.raises(DownloadError, match=r"(?s)404.*csiro:5846.*download.raw_dir"):
        download("cia", tmp_path / "dest", base_url=dap.base_url)
    dap.publish(CIA, {"README.pdf": b"x"})
    with pytest.raises(DownloadError, match=r"(?s)lists none of the dataset's files.*--raw-dir"):
        download("cia", tmp_path / "dest", base_url=dap.base_url)


def test_raw_dir_needs_no_network(tmp_path):
    spec = small(CIA, CIA_DATES)
    write_tree(tmp_path / "mine", spec)
    manifest = download(spec, tmp_path / "dest", raw_dir=tmp_path / "mine", base_url=closed_port_url())
    assert Manifest.load(tmp_path / "dest").date_list() == CIA_DATES
    assert manifest.meta["obtained"] == "raw_dir"


def test_listing_shapes_are_tolerated():
    base = "https://data.csiro.au/dap/ws/v2"
    one = {"filename": "a.zip", "fileSize": 3, "link": {"href": "/dap/ws/v2/collections/csiro:5846/data/1"}}
    for payload in ({"file": [one]}, {"file": one}, [one], {"files": [one]}):
        (remote,) = parse_listing(payload, base)
        assert remote.url == "https://data.csiro.au/dap/ws/v2/collections/csiro:5846/data/1" and remote.size == 3
    assert parse_listing({"file": [dict(one, presignedLink={"href": "https://s3/x"})]}, base)[0].url == "https://s3/x"


# ---------------------------------------------------------------------------------------------
# Band order


def band_pair(ratio=10, blocks=8):
    """Fine bands = independent block patterns plus texture; coarse = their block means, repeated."""
    rng = np.random.default_rng(0)
    pattern = rng.uniform(1000, 5000, (6, blocks, blocks))
    fine = np.kron(pattern, np.ones((ratio, ratio))) + rng.normal(0, 100, (6, blocks * ratio, blocks * ratio))
    coarse = np.kron(pattern, np.ones((ratio, ratio))) + rng.normal(0, 50, fine.shape)
    return fine.astype(np.int16), coarse.astype(np.int16), pattern.astype(np.int16)


def test_band_order_passes_for_matching_bands():
    fine, coarse, native = band_pair()
    check_band_order(fine, coarse, ratio=10)
    check_band_order(fine, native, ratio=10)  # coarse already at 1/ratio size


def test_band_order_names_swapped_bands():
    fine, coarse, _ = band_pair()
    swapped = coarse[[0, 1, 3, 2, 4, 5]]
    with pytest.raises(InputError) as err:
        check_band_order(fine, swapped, ratio=10, what="2001-10-08")
    message = str(err.value)
    assert message.startswith("2001-10-08:")
    assert "fine band 3 (red) correlates best with coarse band 4 (nir)" in message
    assert "fine band 4 (nir) correlates best with coarse band 3 (red)" in message
    assert "band 1 (blue) correlates" not in message
