"""The real CIA and LGC datasets (Emelyanova et al. 2013): specs, local scan, DAP download.

Facts about the delivered files:

- Both collections are on the CSIRO Data Access Portal (DAP): CIA ``csiro:5846``
  (DOI 10.4225/08/5111AC0BF1229), LGC ``csiro:5847`` (DOI 10.4225/08/5111AD2B7FEE6) (§1).
- Files are raw int16 little-endian ENVI binaries with 6 bands; CIA 6 x 2040 x 1720
  (42,105,600 B), LGC 6 x 2720 x 3200 (104,448,000 B). CIA Landsat ``*.bil`` is BIL, every
  ``*.int`` is BSQ (§2). MODIS is already resampled to the 25 m Landsat grid (§5).
- The canonical date of a pair is its folder date, which equals the MODIS year + day of year.
  **CIA Landsat file names carry the previous day** (e.g. folder 2001_281_08oct holds
  ``L71093084_08420011007_...``); LGC names agree with the folder (§3, §6.1). One CIA file starts
  with ``L72`` instead of ``L71`` (§6.2). So files are found by regex over a recursive walk,
  never by a fixed path or zip name (the DAP web UI adds random suffixes to zip names, §1.1).
- DAP REST: ``GET {base}/collections/{cid}/data`` lists files (JSON ``file`` list with
  ``filename``, ``fileSize``, ``link.href``, ``presignedLink.href``); ``GET {base}/collections/{cid}``
  holds the metadata, with the licence (unconfirmed which one, §1.1).
- The band order is assumed to be blue, green, red, NIR, SWIR1, SWIR2 for both sensors (§4,
  unconfirmed); :func:`check_band_order` is the proposed correlation check.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import shutil
import stat
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urljoin

import numpy as np
import requests
from tqdm.auto import tqdm

from stfusion import BANDS
from stfusion.data.coarse_pixel import block_mean, valid_fraction
from stfusion.data.datasets import get_dataset
from stfusion.data.envi import find_header, parse_header
from stfusion.data.manifest import Manifest, describe_file
from stfusion.data.raster import Raster
from stfusion.errors import ConfigError, InputError
from stfusion.io import atomic_dir, sha256_file
from stfusion.units import REFLECTANCE_SCALE, is_valid_stored

DAP_BASE_URL = "https://data.csiro.au/dap/ws/v2"
PORTAL_URL_VARIABLE = "STFUSION_DAP_URL"
"""An environment variable that points downloads at another portal: a mirror, or the rehearsal's mock
(the files are checked by size either way, so where they come from does not change the data)."""
CITATION = "Emelyanova et al. 2013, Remote Sensing of Environment 133, 193-209"
SOURCE = "csiro-dap"
ROLES = ("fine", "coarse")  # fine = Landsat, coarse = MODIS


class DownloadError(InputError):
    """The DAP could not be reached or did not deliver the files; the message says how to get them by hand."""


@dataclass(frozen=True)
class DateRow:
    """One pair: the folder name, the canonical (folder) date and the Landsat file date."""

    folder: str
    date: str  # ISO; = folder date = MODIS date
    fine_file_date: str  # YYYYMMDD as written in the Landsat file name

    @property
    def doy(self) -> tuple[int, int]:
        day = dt.date.fromisoformat(self.date)
        return day.year, day.timetuple().tm_yday


@dataclass(frozen=True)
class DatasetSpec:
    """Everything fixed about one real dataset. Tests shrink it with :meth:`restrict`."""

    name: str
    title: str
    doi: str
    dap_id: str
    fine_sensor: str
    coarse_sensor: str
    rows: tuple[DateRow, ...]
    fine_regex: str  # group 1: YYYYMMDD of the Landsat file name
    fine_interleave: str
    example_fine: str  # file name template with {date} (YYYYMMDD), for error messages
    shape: tuple[int, int, int]  # (bands, lines, samples)
    coarse_regex: str = r"MOD09GA_A(\d{4})(\d{3})\.sur_refl\.int"  # groups: year, day of year
    coarse_interleave: str = "bsq"
    dtype: str = "<i2"
    related_dois: tuple[str, ...] = ()

    @property
    def landing_page(self) -> str:
        return f"https://data.csiro.au/collection/{self.dap_id}"

    @property
    def expected_bytes(self) -> int:
        bands, lines, samples = self.shape
        return bands * lines * samples * np.dtype(self.dtype).itemsize

    def interleave(self, role: str) -> str:
        return self.fine_interleave if role == "fine" else self.coarse_interleave

    def regex(self, role: str) -> re.Pattern[str]:
        return re.compile(self.fine_regex if role == "fine" else self.coarse_regex)

    def dates(self) -> list[str]:
        return [row.date for row in self.rows]

    def expected_name(self, row: DateRow, role: str) -> str:
        """An example file name for ``row`` and ``role`` (the regex decides; this is for messages)."""
        if role == "fine":
            return self.example_fine.format(date=row.fine_file_date)
        year, doy = row.doy
        return f"MOD09GA_A{year}{doy:03d}.sur_refl.int"

    def restrict(self, dates: Iterable[str] | None = None, shape: tuple[int, int, int] | None = None) -> "DatasetSpec":
        """A copy limited to some ISO ``dates`` and/or with another ``shape`` (small test fixtures)."""
        rows = self.rows
        if dates is not None:
            wanted = list(dates)
            unknown = sorted(set(wanted) - set(self.dates()))
            if unknown:
                raise ConfigError(f"dates {unknown} are not {self.name} dates; known: {self.dates()}")
            rows = tuple(r for r in self.rows if r.date in wanted)
        return dataclasses.replace(self, rows=rows, shape=tuple(shape) if shape else self.shape)


def _rows(table: str, landsat_offset_days: int) -> tuple[DateRow, ...]:
    """Rows from ``folder date`` pairs; the Landsat file date is the folder date minus the offset."""
    rows = []
    for line in table.split():
        folder, iso = line.split("=")
        fine = dt.date.fromisoformat(iso) - dt.timedelta(days=landsat_offset_days)
        rows.append(DateRow(folder, iso, fine.strftime("%Y%m%d")))
    return tuple(rows)


# CIA, 17 pairs; the Landsat file date is one day before the folder date.
CIA = DatasetSpec(
    name="cia",
    title="Landsat and MODIS data for the Coleambally Irrigation Area",
    doi="10.4225/08/5111AC0BF1229",
    dap_id="csiro:5846",
    fine_sensor="Landsat-7 ETM+",
    coarse_sensor="Terra MODIS MOD09GA",
    rows=_rows(
        """2001_281_08oct=2001-10-08 2001_290_17oct=2001-10-17 2001_306_02nov=2001-11-02
        2001_313_09nov=2001-11-09 2001_329_25nov=2001-11-25 2001_338_04dec=2001-12-04
        2002_005_05jan=2002-01-05 2002_012_12jan=2002-01-12 2002_044_13feb=2002-02-13
        2002_053_22feb=2002-02-22 2002_069_10mar=2002-03-10 2002_076_17mar=2002-03-17
        2002_092_02apr=2002-04-02 2002_101_11apr=2002-04-11 2002_108_18apr=2002-04-18
        2002_117_27apr=2002-04-27 2002_124_04may=2002-05-04""",
        landsat_offset_days=1,
    ),
    fine_regex=r"L7[12]\d+_\d+(\d{8})_HRF_modtran_surf_ref_agd66\.bil",
    fine_interleave="bil",
    example_fine="L71093084_084{date}_HRF_modtran_surf_ref_agd66.bil",
    shape=(6, 2040, 1720),
    related_dois=("10.4225/08/514B80FD805F4",),  # cited by rsatExtra for a 2-pair subset
)

# LGC, 14 pairs; Landsat file date = folder date.
LGC = DatasetSpec(
    name="lgc",
    title="Landsat and MODIS data for the Lower Gwydir Catchment study site",
    doi="10.4225/08/5111AD2B7FEE6",
    dap_id="csiro:5847",
    fine_sensor="Landsat-5 TM",
    coarse_sensor="Terra MODIS MOD09GA",
    rows=_rows(
        """2004_107_Apr16=2004-04-16 2004_123_May02=2004-05-02 2004_187_Jul05=2004-07-05
        2004_219_Aug06=2004-08-06 2004_235_Aug22=2004-08-22 2004_299_Oct25=2004-10-25
        2004_331_Nov26=2004-11-26 2004_347_Dec12=2004-12-12 2004_363_Dec28=2004-12-28
        2005_013_Jan13=2005-01-13 2005_029_Jan29=2005-01-29 2005_045_Feb14=2005-02-14
        2005_061_Mar02=2005-03-02 2005_093_Apr03=2005-04-03""",
        landsat_offset_days=0,
    ),
    fine_regex=r"(\d{8})_TM\.int",
    fine_interleave="bsq",
    example_fine="{date}_TM.int",
    shape=(6, 2720, 3200),
)

SPECS = {spec.name: spec for spec in (CIA, LGC)}


def get_spec(dataset: str | DatasetSpec) -> DatasetSpec:
    """The spec of ``dataset`` ("cia" or "lgc"); a :class:`DatasetSpec` is passed through."""
    if isinstance(dataset, DatasetSpec):
        return dataset
    spec = SPECS.get(str(dataset).lower())
    if spec is None:
        raise ConfigError(f"dataset {dataset!r} is not a real dataset; known: {sorted(SPECS)}")
    return spec


# ---------------------------------------------------------------------------------------------
# Scanning a local folder


def _match(spec: DatasetSpec, name: str) -> tuple[str, str] | None:
    """(ISO date, role) of a file name, or None if it is not one of the dataset's files."""
    by_fine = {row.fine_file_date: row.date for row in spec.rows}
    by_doy = {row.doy: row.date for row in spec.rows}
    if found := spec.regex("fine").fullmatch(name):
        date = by_fine.get(found.group(1))
        return (date, "fine") if date else None
    if found := spec.regex("coarse").fullmatch(name):
        date = by_doy.get((int(found.group(1)), int(found.group(2))))
        return (date, "coarse") if date else None
    return None


def _walk(spec: DatasetSpec, folder: Path) -> dict[tuple[str, str], list[Path]]:
    """Every dataset file below ``folder`` by (date, role); sorted so the result is deterministic."""
    found: dict[tuple[str, str], list[Path]] = {}
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            key = _match(spec, name)
            if key:
                found.setdefault(key, []).append(Path(root) / name)
    return found


def _pick(paths: list[Path], date: str, role: str) -> Path:
    """One file out of possibly several copies (e.g. a zip extracted twice); copies must be identical."""
    if len(paths) > 1 and len({(p.stat().st_size, sha256_file(p)) for p in paths}) > 1:
        listing = "\n  ".join(map(str, paths))
        raise InputError(f"date {date}: several different {role} files match:\n  {listing}\nkeep only one")
    return paths[0]


def _check_file(spec: DatasetSpec, path: Path, role: str) -> str:
    """Check the byte size (and header if any) of one file; return its manifest format."""
    size = path.stat().st_size
    if size != spec.expected_bytes:
        raise InputError(
            f"{path}: has {size} bytes, expected {spec.expected_bytes} for a {spec.name.upper()} {role} file "
            f"({' x '.join(map(str, spec.shape))} {spec.dtype}); the file is truncated or not this dataset's"
        )
    interleave = spec.interleave(role)
    header = find_header(path)
    if header is not None:  # trust a header, but say when it disagrees with the table
        said = parse_header(header).get("interleave", interleave).strip().lower()
        if said != interleave:
            warnings.warn(f"{header}: says interleave {said!r}, the dataset description says {interleave!r}; trusting the header")
            interleave = said
    return f"envi-{interleave}"


def _entry_name(path: Path, manifest_folder: Path) -> str:
    """Manifest key: relative to the manifest folder when inside it, else absolute."""
    path = path.resolve()
    try:
        return path.relative_to(manifest_folder.resolve()).as_posix()
    except ValueError:
        return str(path)


def _missing_message(spec: DatasetSpec, folder: Path, missing: list[tuple[DateRow, str]]) -> str:
    lines = [f"{folder}: {len(missing)} {spec.name.upper()} file(s) not found (searched all subfolders):"]
    for row, role in missing:
        shifted = role == "fine" and row.fine_file_date != row.date.replace("-", "")
        note = f" (the Landsat name carries the day before, {row.fine_file_date})" if shifted else ""
        lines.append(
            f"  date {row.date} (folder {row.folder}): {role} file like {spec.expected_name(row, role)} "
            f"(regex {spec.regex(role).pattern}){note}"
        )
    lines.append(f"Download the data from {spec.landing_page} (DOI {spec.doi}) and extract every zip there.")
    return "\n".join(lines)


def scan_raw_dir(
    dataset: str | DatasetSpec,
    folder: str | os.PathLike,
    manifest_folder: str | os.PathLike | None = None,
) -> Manifest:
    """Find every date's Landsat (fine) and MODIS (coarse) file anywhere below ``folder``.

    Returns a :class:`Manifest` (formats ``envi-bil``/``envi-bsq`` with ``shape``, sizes and
    SHA-256). With ``manifest_folder`` the manifest is saved there (files outside it are listed
    by absolute path); without, its folder is ``folder`` and nothing is written.
    """
    spec = get_spec(dataset)
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: raw data folder not found (download.raw_dir / --raw-dir)")
    target = Path(manifest_folder) if manifest_folder is not None else folder
    found = _walk(spec, folder)
    missing = [(row, role) for row in spec.rows for role in ROLES if (row.date, role) not in found]
    if missing:
        raise InputError(_missing_message(spec, folder, missing))
    dates, files, raw_files = [], {}, {}
    for row in spec.rows:
        entry = {"date": row.date}
        raw_files[row.date] = {"folder": row.folder, "fine_file_date": row.fine_file_date}
        for role in ROLES:
            path = _pick(found[(row.date, role)], row.date, role)
            fmt = _check_file(spec, path, role)
            name = _entry_name(path, target)
            files[name] = describe_file(target, name, fmt, shape=list(spec.shape), dtype=spec.dtype)
            entry[role] = name
            raw_files[row.date][role] = path.name
        dates.append(entry)
    manifest = Manifest(
        dataset=spec.name, source=SOURCE, dates=dates, files=files, folder=target,
        bands=list(BANDS), ratio=get_dataset(spec.name).ratio, reflectance_scale=REFLECTANCE_SCALE, meta=_meta(spec, raw_files, folder),
    )
    manifest.check_structure()
    if manifest_folder is not None:
        manifest.save()
    return manifest


def _meta(spec: DatasetSpec, raw_files: dict, folder: Path) -> dict[str, Any]:
    return {
        "title": spec.title, "doi": spec.doi, "doi_url": f"https://doi.org/{spec.doi}", "dap_id": spec.dap_id,
        "landing_page": spec.landing_page, "citation": CITATION, "related_dois": list(spec.related_dois),
        "fine_sensor": spec.fine_sensor, "coarse_sensor": spec.coarse_sensor, "raw_dir": str(folder.resolve()),
        "obtained": "raw_dir", "licence": None, "raw_files": raw_files,
        "date_note": "canonical date = folder date = MODIS date; CIA Landsat file names carry the day before",
    }


# ---------------------------------------------------------------------------------------------
# Downloading from the DAP


@dataclass(frozen=True)
class RemoteFile:
    name: str  # as listed (may contain folders)
    url: str
    size: int | None


def _manual_message(spec: DatasetSpec, reason: str) -> str:
    return "\n".join([
        f"Cannot download the {spec.name.upper()} data automatically: {reason}",
        "Get it by hand:",
        f"  dataset: {spec.title}",
        f"  DOI: https://doi.org/{spec.doi}",
        f"  CSIRO Data Access Portal: {spec.landing_page}",
        "  files: Landsat (e.g. " + spec.expected_name(spec.rows[0], "fine") + ") and MODIS (e.g. "
        + spec.expected_name(spec.rows[0], "coarse") + ") for all dates",
        "Extract the zip(s) into one folder (any layout; files are found by name), then set",
        "  download.raw_dir: <that folder>   in params.yaml, or pass --raw-dir <that folder>.",
    ])


def _href(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("href")
    if isinstance(value, list) and value:
        return _href(value[0])
    return value if isinstance(value, str) else None


def parse_listing(payload: Any, base_url: str) -> list[RemoteFile]:
    """Files of a DAP ``/data`` answer, tolerating the shapes seen: ``{"file": [...]}`` (or
    ``files``/``dataFiles``), a bare list, or a single entry instead of a list."""
    items = payload
    if isinstance(payload, dict):
        items = next((payload[k] for k in ("file", "files", "dataFiles") if k in payload), [])
    items = [items] if isinstance(items, dict) else list(items or [])
    files = []
    for item in items:
        name = item.get("filename") or item.get("name")
        # The presigned S3 link was just issued by this listing, so it is fresh and serves bytes
        # directly; the stable link is the fallback.
        url = _href(item.get("presignedLink")) or _href(item.get("link")) or item.get("url")
        size = item.get("fileSize", item.get("size"))
        if name and url:
            files.append(RemoteFile(str(name), urljoin(base_url + "/", url), int(size) if size is not None else None))
    return files


def _wanted(spec: DatasetSpec, name: str) -> bool:
    """Zips (extracted later), the dataset's files for the spec's dates, and their headers."""
    base = PurePosixPath(name).name
    if base.lower().endswith(".zip"):
        return True
    if base.lower().endswith(".hdr"):
        stem = base[:-4]
        return any(_match(spec, candidate) for candidate in (stem, stem + ".bil", stem + ".int"))
    return _match(spec, base) is not None


def _safe_relpath(name: str, where: str) -> PurePosixPath:
    """A relative path that cannot leave its destination (no absolute paths, drives or '..')."""
    clean = name.replace("\\", "/")
    path = PurePosixPath(clean)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", clean) or ".." in path.parts or not path.parts:
        raise InputError(f"{where}: refusing unsafe path {name!r} (absolute or leaving the destination)")
    return path


def _get_json(session: requests.Session, url: str, timeout: float) -> Any:
    # DAP answers XML unless JSON is asked for.
    response = session.get(url, headers={"Accept": "application/json"}, timeout=timeout)
    response.raise_for_status()
    try:
        return response.json()
    except ValueError:
        raise DownloadError(f"{url}: answer is not JSON (starts {response.text[:80]!r})") from None


def _licence(metadata: Any) -> str | None:
    value = metadata.get("licence", metadata.get("license")) if isinstance(metadata, dict) else None
    if isinstance(value, dict):
        value = value.get("name") or value.get("title") or value.get("value") or str(value)
    return str(value) if value else None


def fetch_file(session: requests.Session, remote: RemoteFile, target: Path, timeout: float) -> None:
    """Download ``remote`` to ``target`` with resume: bytes go to ``target.part``; an existing
    part is continued with an HTTP Range request. A server that ignores Range (answers 200)
    sends the whole file, so the part is restarted. The size must equal the listed size."""
    if target.is_file() and remote.size in (None, target.stat().st_size):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    if remote.size is not None and start > remote.size:
        part.unlink()
        start = 0
    headers = {"Range": f"bytes={start}-"} if start else {}
    with session.get(remote.url, headers=headers, stream=True, timeout=timeout) as response:
        if start and response.status_code == 416 and start == remote.size:
            pass  # the part was already complete
        else:
            response.raise_for_status()
            resumed = bool(start) and response.status_code == 206
            if resumed and not response.headers.get("Content-Range", f"bytes {start}-").startswith(f"bytes {start}-"):
                raise DownloadError(f"{remote.url}: server resumed at {response.headers['Content-Range']}, asked for byte {start}")
            _stream(response, part, "ab" if resumed else "wb", start if resumed else 0, remote)
    actual = part.stat().st_size
    if remote.size is not None and actual != remote.size:
        if actual > remote.size:
            part.unlink()
        raise DownloadError(
            f"{remote.url}: got {actual} bytes for {remote.name}, the DAP listing says {remote.size}; "
            f"run the download again (a short file is resumed from {part})"
        )
    os.replace(part, target)


TRANSFER_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
"""A dropped or stalled connection: what a retry, resuming the ``.part`` file, can mend."""
RETRIES = 3


def fetch_resuming(session: requests.Session, remote: RemoteFile, target: Path, timeout: float,
                   retries: int | None = None) -> None:
    """:func:`fetch_file`, resumed up to ``retries`` (default :data:`RETRIES`) times after a dropped connection."""
    retries = RETRIES if retries is None else retries
    for attempt in range(retries + 1):
        try:
            return fetch_file(session, remote, target, timeout)
        except TRANSFER_ERRORS:
            if attempt == retries:
                raise


def _stream(response: requests.Response, part: Path, mode: str, initial: int, remote: RemoteFile) -> None:
    with open(part, mode) as out, tqdm(
        total=remote.size, initial=initial, unit="B", unit_scale=True, desc=PurePosixPath(remote.name).name,
        disable=None, leave=False,
    ) as bar:
        for chunk in response.iter_content(chunk_size=1 << 20):
            out.write(chunk)
            bar.update(len(chunk))


def extract_zip(archive: Path, destination: Path) -> Path:
    """Extract ``archive`` into ``destination`` (atomically, skipped if it exists). Every member is
    checked first: absolute paths, members resolving outside the destination and symlinks are
    rejected, so nothing is written from a malicious archive."""
    if destination.is_dir():
        return destination
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            for member in members:
                _check_member(archive, member, destination)
            with atomic_dir(destination) as tmp:
                for member in members:
                    out = tmp / _safe_relpath(member.filename, str(archive))
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
    except zipfile.BadZipFile as err:
        raise InputError(f"{archive}: damaged zip file ({err}); delete it and download again") from err
    return destination


def _check_member(archive: Path, member: zipfile.ZipInfo, destination: Path) -> None:
    if stat.S_ISLNK(member.external_attr >> 16):
        raise InputError(f"{archive}: refusing symlink member {member.filename!r}")
    rel = _safe_relpath(member.filename, str(archive))
    root = destination.resolve()
    if not (root / rel).resolve().is_relative_to(root):
        raise InputError(f"{archive}: refusing member {member.filename!r} that resolves outside {destination}")


def download(
    dataset: str | DatasetSpec,
    dest: str | os.PathLike,
    *,
    raw_dir: str | os.PathLike | None = None,
    base_url: str | None = None,
    session: requests.Session | None = None,
    timeout: float = 60,
) -> Manifest:
    """Get the raw files of ``dataset`` into ``dest`` and write ``dest/manifest.json``.

    With ``raw_dir`` (files the user already downloaded and extracted) nothing goes over the
    network: the folder is scanned. Otherwise the DAP collection at ``base_url`` (default: the
    ``STFUSION_DAP_URL`` environment variable, else the CSIRO portal) is listed, the dataset's files and
    any zips are downloaded into ``dest/downloads`` (resumable), zips are extracted into
    ``dest/extracted/<zip name>``, and ``dest`` is scanned. A network failure raises
    :class:`DownloadError` explaining how to download by hand and set ``download.raw_dir``.
    """
    spec = get_spec(dataset)
    dest = Path(dest)
    if raw_dir is not None:
        return scan_raw_dir(spec, raw_dir, manifest_folder=dest)
    base_url = base_url or os.environ.get(PORTAL_URL_VARIABLE) or DAP_BASE_URL
    session = session or requests.Session()
    collection = f"{base_url.rstrip('/')}/collections/{spec.dap_id}"
    retrieved = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    try:
        remote = [f for f in parse_listing(_get_json(session, f"{collection}/data", timeout), base_url) if _wanted(spec, f.name)]
        if not remote:
            raise DownloadError(_manual_message(spec, f"{collection}/data lists none of the dataset's files or zips"))
        licence = _collection_licence(session, collection, timeout)
        downloads = {}
        for item in remote:
            target = dest / "downloads" / _safe_relpath(item.name, f"{collection}/data")
            fetch_resuming(session, item, target, timeout)
            downloads[item.name] = {"url": item.url, "bytes": target.stat().st_size, "sha256": sha256_file(target)}
    except TRANSFER_ERRORS as err:
        reason = f"network failure ({err.__class__.__name__}: {err}); running it again resumes what arrived"
        raise DownloadError(_manual_message(spec, reason)) from err
    except requests.HTTPError as err:
        raise DownloadError(_manual_message(spec, f"the DAP answered {err}")) from err
    for name in downloads:
        if name.lower().endswith(".zip"):
            archive = dest / "downloads" / name
            extract_zip(archive, dest / "extracted" / PurePosixPath(name).name[:-4])
    manifest = scan_raw_dir(spec, dest, manifest_folder=dest)
    manifest.meta.update(
        obtained="download", raw_dir=None, base_url=base_url, retrieved=retrieved, licence=licence, downloads=downloads,
    )
    manifest.save()
    return manifest


def _collection_licence(session: requests.Session, collection: str, timeout: float) -> str | None:
    """The licence string of the collection metadata; metadata errors other than network ones
    are not fatal (the files are what matters), but leave a warning."""
    try:
        return _licence(_get_json(session, collection, timeout))
    except (requests.HTTPError, DownloadError) as err:
        warnings.warn(f"{collection}: no collection metadata ({err}); licence not recorded; check {collection}")
        return None


# ---------------------------------------------------------------------------------------------
# Band order


def _block_mean(data: np.ndarray, valid: np.ndarray, ratio: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of valid pixels per coarse pixel, and whether at least half of its fine pixels are valid."""
    return block_mean(data, ratio, valid), valid_fraction(valid, ratio) >= 0.5


def _valid(data: np.ndarray) -> np.ndarray:
    """Valid in every band (excludes fill -28672 and wrapped negatives)."""
    return is_valid_stored(data).all(axis=0)


def _band_name(index: int, count: int) -> str:
    return f"{index + 1} ({BANDS[index]})" if count == len(BANDS) else str(index + 1)


def check_band_order(fine: np.ndarray | Raster, coarse: np.ndarray | Raster, ratio: int, *, what: str = "",
                     margin: float = 0.0) -> None:
    """Check that coarse band i is the best-correlated coarse band of fine band i (within ``margin`` of r).

    Both images are block-averaged to the coarse grid (``ratio`` x ``ratio`` blocks; a coarse
    image already at 1/ratio size is used as it is), every fine band is correlated with every
    coarse band over blocks that are valid in both, and :class:`InputError` names each fine band
    whose same-index coarse band is not the best match. ``what`` prefixes the message (a date).
    """
    fine = np.asarray(fine.data if isinstance(fine, Raster) else fine)
    coarse = np.asarray(coarse.data if isinstance(coarse, Raster) else coarse)
    prefix = f"{what}: " if what else ""
    if fine.ndim != 3 or coarse.ndim != 3 or fine.shape[0] != coarse.shape[0]:
        raise InputError(f"{prefix}band check needs (band, y, x) images with equal band counts, got {fine.shape} and {coarse.shape}")
    fine_mean, fine_ok = _block_mean(fine, _valid(fine), ratio)
    if coarse.shape[1:] == fine.shape[1:]:
        coarse_mean, coarse_ok = _block_mean(coarse, _valid(coarse), ratio)
    elif coarse.shape[1:] == fine_mean.shape[1:]:
        coarse_mean, coarse_ok = coarse.astype(np.float64), _valid(coarse)
    else:
        raise InputError(f"{prefix}coarse shape {coarse.shape} is neither the fine shape {fine.shape} nor 1/{ratio} of it")
    use = fine_ok & coarse_ok
    if use.sum() < 3:
        raise InputError(f"{prefix}only {int(use.sum())} valid {ratio}x{ratio} blocks; too few to check the band order")
    corr = _cross_corr(fine_mean[:, use], coarse_mean[:, use])
    problems = []
    count = fine.shape[0]
    for band in range(count):
        best = int(np.argmax(np.where(np.isnan(corr[band]), -np.inf, corr[band])))
        if best != band and not corr[band, band] >= corr[band, best] - margin:
            problems.append(
                f"fine band {_band_name(band, count)} correlates best with coarse band {_band_name(best, count)} "
                f"(r={corr[band, best]:.3f}), not with coarse band {_band_name(band, count)} (r={corr[band, band]:.3f})"
            )
    if problems:
        raise InputError(prefix + "band order of the coarse image does not match the fine image: " + "; ".join(problems))


def _cross_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of every row of ``a`` with every row of ``b`` (NaN for constant rows)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    norm = np.outer(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a @ b.T) / norm
