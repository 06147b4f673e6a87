"""A stand-in for the CSIRO Data Access Portal: the real datasets' files, mocked, served on 127.0.0.1.

:func:`write_collection` writes a dataset as the portal delivers it (docs/data.md, "Real data"):
the zips the web interface makes, with their random suffix and ``data/CIA/{Landsat,MODIS}/<date
folder>/<file>`` layout (LGC: a Landsat zip and a MODIS zip), the real file names (CIA's Landsat
date one day before the folder's, the one ``L72`` file), CIA Landsat as BIL and every ``.int`` as
BSQ, int16 little-endian, a header beside every other date's files, and fill values (MOD09GA's
-28672 and a stripe of zeros) where real files may have them. The pixels are smooth random fields,
not real surfaces: the rehearsal checks formats, sizes, memory and time, not accuracy.

:class:`PortalServer` answers like the portal's REST API (``/collections/{id}`` with a licence,
``/collections/{id}/data`` listing every file with its size and a presigned link) and serves the
bytes with HTTP range requests; ``interrupt`` cuts the first transfer of a file after that many
bytes, as a dropped connection would, so the download's resume is exercised.
"""

from __future__ import annotations

import json
import os
import string
import tempfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath

import numpy as np

from stfusion.data.coarse_pixel import block_mean
from stfusion.data.envi import header_candidates, write_envi
from stfusion.data.real import DatasetSpec, DateRow
from stfusion.io import atomic_dir

FILL_MODIS = -28672  # MOD09GA's fill value
LICENCE = "CSIRO Data Licence (mock)"
ZIP_ROOTS = {  # as the portal's web interface names its zips (the suffix is random)
    "cia": "Landsat_and_MODIS_data_for_the_Coleambally_Irrigation_Area-{suffix}-",
    "lgc": "Landsat_and_MODIS_data_for_the_Lower_Gwydir_Catchment_{sensor}-{suffix}",
}
BAND_MEANS = (500, 800, 900, 2500, 2200, 1400)  # reflectance x 10000: blue ... SWIR2 of cropland


def fine_image(spec: DatasetSpec, index: int, seed: int) -> np.ndarray:
    """A (band, y, x) int16 image: a field pattern of 40-pixel blocks that changes between dates, plus texture."""
    bands, height, width = spec.shape
    rng = np.random.default_rng([seed, index])
    blocks = np.random.default_rng(seed).random((bands, -(-height // 40), -(-width // 40)))
    season = 1.0 + 0.3 * np.sin(2 * np.pi * index / max(len(spec.rows), 1))
    image = np.empty((bands, height, width), np.int16)
    for band in range(bands):  # one band at a time: a full LGC float image would be 400 MB
        pattern = np.repeat(np.repeat(blocks[band], 40, axis=0), 40, axis=1)[:height, :width]
        values = BAND_MEANS[band] * (0.5 + pattern * season) + rng.normal(0, 50, (height, width))
        image[band] = np.clip(values, 1, 10000)
    return image


def coarse_image(fine: np.ndarray, ratio: int = 20) -> np.ndarray:
    """MODIS as delivered: the fine image's block means over ``ratio`` pixels, resampled back to the fine grid."""
    bands, height, width = fine.shape
    h, w = -(-height // ratio) * ratio, -(-width // ratio) * ratio
    means = block_mean(np.pad(fine, ((0, 0), (0, h - height), (0, w - width)), mode="edge"), ratio)
    return np.repeat(np.repeat(means, ratio, axis=1), ratio, axis=2)[:, :height, :width].astype(np.int16)


def with_fill(image: np.ndarray, index: int, role: str) -> np.ndarray:
    """Fill values where real files may have them: MODIS fill on a corner of every third date, a stripe of
    zeros along the edge of every fourth fine image."""
    if role == "coarse" and index % 3 == 1:
        image[:, : image.shape[1] // 10, : image.shape[2] // 10] = FILL_MODIS
    if role == "fine" and index % 4 == 2:
        image[:, :, :3] = 0
    return image


def file_name(spec: DatasetSpec, row: DateRow, role: str) -> str:
    name = spec.expected_name(row, role)
    if spec.name == "cia" and role == "fine" and row.date == "2002-03-10":
        name = name.replace("L71", "L72", 1)  # the one CIA file with another prefix
    return name


def _suffix(rng: np.random.Generator) -> str:
    letters = string.ascii_letters + string.digits
    return "".join(letters[i] for i in rng.integers(len(letters), size=8))


def _member(spec: DatasetSpec, row: DateRow, role: str, suffix: str) -> str:
    sensor = "Landsat" if role == "fine" else "MODIS"
    if spec.name == "cia":
        folder = f"{ZIP_ROOTS['cia'].format(suffix=suffix)}/data/CIA/{sensor}/{row.folder}"
    else:
        folder = f"{ZIP_ROOTS['lgc'].format(sensor=sensor.upper(), suffix=suffix)}/{row.folder}"
    return f"{folder}/{file_name(spec, row, role)}"


def write_collection(spec: DatasetSpec, folder: str | os.PathLike, *, seed: int = 0,
                     compresslevel: int = 1, progress: bool = True) -> Path:
    """Write ``spec``'s files as the portal serves them into ``folder`` (atomically): its zips and a README."""
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    suffix = _suffix(rng)
    with atomic_dir(folder) as tmp, tempfile.TemporaryDirectory(dir=tmp) as scratch_dir:
        scratch = Path(scratch_dir)
        zips: dict[str, zipfile.ZipFile] = {}
        for index, row in enumerate(tqdm(spec.rows, desc=f"mock {spec.name}", disable=not progress)):
            fine = fine_image(spec, index, seed)
            for role, image in (("fine", fine), ("coarse", coarse_image(fine))):
                member = _member(spec, row, role, suffix)
                archive = member.split("/")[0] + ".zip"
                if archive not in zips:
                    zips[archive] = zipfile.ZipFile(tmp / archive, "w", zipfile.ZIP_DEFLATED, compresslevel=compresslevel)
                raw = write_envi(scratch / PurePosixPath(member).name, with_fill(image, index, role),
                                 interleave=spec.interleave(role), header=index % 2 == 1)
                for path in (raw, *header_candidates(raw)):
                    if path.is_file():
                        zips[archive].write(path, str(PurePosixPath(member).with_name(path.name)))
                        path.unlink()
        for archive in zips.values():
            archive.close()
        (tmp / "README.pdf").write_bytes(b"%PDF-1.4 mock: the portal lists documents beside the data\n")
    return Path(folder)


class PortalServer:
    """The portal's REST API over the files of ``collections`` (DAP id -> folder), on 127.0.0.1.

    ``base_url`` is what ``stfusion.data.real.download`` takes. ``log`` records (path, Range header)
    of every request. ``interrupt`` maps a listed file name to a byte count: its first full transfer
    stops there and the connection closes. ``drop_every``: every transfer stops after that many bytes.
    """

    def __init__(self, collections: dict[str, str | os.PathLike], *, interrupt: dict[str, int] | None = None,
                 drop_every: int | None = None):
        self.files = {cid: sorted(p for p in Path(folder).rglob("*") if p.is_file()) for cid, folder in collections.items()}
        self.roots = {cid: Path(folder) for cid, folder in collections.items()}
        self.interrupt, self.drop_every = dict(interrupt or {}), drop_every
        self.log: list[tuple[str, str | None]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.base_url = f"{self.url}/dap/ws/v2"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> "PortalServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def listing(self, cid: str) -> dict:
        entries = []
        for i, path in enumerate(self.files[cid]):
            name = path.relative_to(self.roots[cid]).as_posix()
            entries.append({"filename": name, "fileSize": path.stat().st_size,
                            "link": {"href": f"{self.base_url}/collections/{cid}/data/{i}"},
                            "presignedLink": {"href": f"{self.url}/s3/{cid}/{i}"}})
        return {"file": entries}

    def _route(self, path: str) -> tuple[str, object] | None:
        prefix = "/dap/ws/v2/collections/"
        for cid in self.files:
            if path == f"{prefix}{cid}":
                return "json", {"id": cid, "licence": LICENCE}
            if path == f"{prefix}{cid}/data":
                return "json", self.listing(cid)
            for head in (f"/s3/{cid}/", f"{prefix}{cid}/data/"):
                if path.startswith(head) and path[len(head):].isdigit() and int(path[len(head):]) < len(self.files[cid]):
                    file = self.files[cid][int(path[len(head):])]
                    return "file", (file.relative_to(self.roots[cid]).as_posix(), file)
        return None

    def _handler(self):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet: the rehearsal prints its own progress
                pass

            def do_GET(self):
                owner.log.append((self.path, self.headers.get("Range")))
                found = owner._route(self.path)
                if found is None:
                    self.send_error(404)
                elif found[0] == "json":
                    body = json.dumps(found[1]).encode()
                    self._head(200, len(body), "application/json")
                    self.wfile.write(body)
                else:
                    self._file(*found[1])

            def _head(self, code: int, length: int, ctype: str, extra: dict | None = None):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(length))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()

            def _file(self, name: str, path: Path):
                size, ranged = path.stat().st_size, self.headers.get("Range")
                start = int(ranged.split("=")[1].split("-")[0]) if ranged else 0
                if start >= size > 0:
                    self._head(416, 0, "application/octet-stream", {"Content-Range": f"bytes */{size}"})
                    return
                extra = {"Content-Range": f"bytes {start}-{size - 1}/{size}"} if ranged else {}
                self._head(206 if ranged else 200, size - start, "application/octet-stream", extra)
                stop = owner.interrupt.pop(name, None) if not ranged else None
                if owner.drop_every:
                    stop = start + owner.drop_every
                with open(path, "rb") as source:
                    source.seek(start)
                    left = (min(stop, size) if stop is not None else size) - start
                    while left > 0 and (chunk := source.read(min(left, 1 << 20))):
                        self.wfile.write(chunk)
                        left -= len(chunk)
                if stop is not None and stop < size:
                    self.close_connection = True  # a dropped transfer: fewer bytes than Content-Length

        return Handler
