"""The raw-data manifest: which file holds which date and sensor, with its checksum.

The download stage writes ``data/raw/<dataset>/manifest.json`` for synthetic and real data
alike; the preprocess stage reads nothing but what the manifest lists, after verifying it.

Layout (paths are relative to the manifest's folder)::

    {
      "dataset": "cia-sim", "source": "synthetic", "ratio": 20, "reflectance_scale": 10000,
      "bands": ["blue", "green", "red", "nir", "swir1", "swir2"],
      "dates": [{"date": "2001-10-08", "fine": "fine/2001-10-08.tif",
                 "coarse": "coarse/2001-10-08.tif", "cover": "truth/cover_2001-10-08.tif",
                 "change": "truth/change_2001-10-08.tif"}, ...],
      "files": {"fine/2001-10-08.tif": {"sha256": "...", "bytes": 123, "format": "gtiff"}, ...},
      "meta": {...}
    }

``fine_qa`` (optional) is a uint8 quality mask of the fine image: :data:`QA_CLEAR`, :data:`QA_CLOUD` or
:data:`QA_SHADOW` per pixel, as a Landsat QA band gives after decoding; pixels not clear are invalid.

``format`` is ``gtiff``, ``envi-bil`` or ``envi-bsq``; ENVI entries also carry ``shape``
(bands, lines, samples) for files that come without a header. ``cover`` and ``change`` are the
synthetic generator's truth (land-cover class and change against the first date) and are
absent for real data.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stfusion.errors import InputError
from stfusion.io import sha256_file, write_json

IMAGE_ROLES = ("fine", "coarse")
MASK_ROLES = ("fine_qa",)
TRUTH_ROLES = ("cover", "change")
QA_CLEAR, QA_CLOUD, QA_SHADOW = 0, 1, 2
"""Codes of a ``fine_qa`` mask."""


@dataclass
class Manifest:
    """An in-memory raw-data manifest; ``folder`` is where its relative paths start."""

    dataset: str
    source: str
    dates: list[dict[str, str]]
    files: dict[str, dict[str, Any]]
    folder: Path
    ratio: int  # coarse over fine pixel size
    reflectance_scale: int  # stored integers per unit reflectance (stfusion.units)
    bands: list[str] = field(default_factory=lambda: ["blue", "green", "red", "nir", "swir1", "swir2"])
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.folder / "manifest.json"

    def date_list(self) -> list[str]:
        return [entry["date"] for entry in self.dates]

    def file(self, date: str, role: str) -> Path:
        """Absolute path of the ``role`` file (fine, coarse, fine_qa, cover, change) of ``date``."""
        for entry in self.dates:
            if entry["date"] == date:
                if role not in entry:
                    raise InputError(f"{self.path}: date {date} has no {role} file")
                return self.folder / entry[role]
        raise InputError(f"{self.path}: no entry for date {date}; dates are {self.date_list()}")

    def file_info(self, relpath: str) -> dict[str, Any]:
        try:
            return self.files[relpath]
        except KeyError:
            raise InputError(f"{self.path}: file {relpath} is used by a date but not listed under 'files'") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "source": self.source, "bands": list(self.bands), "ratio": self.ratio,
            "reflectance_scale": self.reflectance_scale, "dates": self.dates, "files": self.files, "meta": self.meta,
        }

    def save(self) -> Path:
        return write_json(self.path, self.to_dict())

    def relocated(self, folder: str | os.PathLike) -> "Manifest":
        """The same manifest with its relative paths rewritten to start at ``folder``."""
        folder = Path(folder)

        def move(rel: str) -> str:
            return rel if Path(rel).is_absolute() else os.path.relpath(self.folder / rel, folder)

        dates = [{k: (v if k == "date" else move(v)) for k, v in entry.items()} for entry in self.dates]
        files = {move(rel): info for rel, info in self.files.items()}
        return Manifest(self.dataset, self.source, dates, files, folder, ratio=self.ratio, bands=list(self.bands),
                        reflectance_scale=self.reflectance_scale, meta=dict(self.meta))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Manifest":
        folder = Path(folder)
        path = folder / "manifest.json"
        if not path.is_file():
            raise InputError(f"{path}: manifest not found; run the download stage for this dataset first")
        try:
            raw = json.loads(path.read_text())
            manifest = cls(
                dataset=raw["dataset"], source=raw["source"], dates=list(raw["dates"]), files=dict(raw["files"]),
                folder=folder, bands=list(raw.get("bands", cls.__dataclass_fields__["bands"].default_factory())),
                ratio=int(raw["ratio"]), reflectance_scale=int(raw["reflectance_scale"]), meta=dict(raw.get("meta", {})),
            )
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise InputError(f"{path}: not a valid manifest ({err!r})") from err
        manifest.check_structure()
        return manifest

    def check_structure(self) -> None:
        """Dates are ISO, sorted and unique, and every date names a fine and a coarse file."""
        seen: list[str] = []
        for entry in self.dates:
            date = entry.get("date")
            try:
                dt.date.fromisoformat(str(date))
            except ValueError:
                raise InputError(f"{self.path}: date {date!r} is not an ISO date (YYYY-MM-DD)") from None
            for role in IMAGE_ROLES:
                if not entry.get(role):
                    raise InputError(f"{self.path}: date {date} has no {role} file")
            seen.append(date)
        if seen != sorted(set(seen)):
            raise InputError(f"{self.path}: dates must be unique and in increasing order, got {seen}")

    def verify(self, *, checksums: bool = True) -> None:
        """Check that every file used by a date exists, has the listed size and SHA-256."""
        for entry in self.dates:
            for role in (*IMAGE_ROLES, *MASK_ROLES, *TRUTH_ROLES):
                if role not in entry:
                    continue
                rel = entry[role]
                info = self.file_info(rel)
                path = self.folder / rel
                if not path.is_file():
                    raise InputError(f"{path}: {role} file of date {entry['date']} is missing")
                size = path.stat().st_size
                if "bytes" in info and size != info["bytes"]:
                    raise InputError(f"{path}: has {size} bytes, the manifest expects {info['bytes']} (truncated?)")
                if checksums and "sha256" in info:
                    digest = sha256_file(path)
                    if digest != info["sha256"]:
                        raise InputError(
                            f"{path}: SHA-256 {digest} does not match the manifest's {info['sha256']}; "
                            "the file is corrupt or was replaced: download it again"
                        )


def describe_file(folder: Path, relpath: str, fmt: str, **extra: Any) -> dict[str, Any]:
    """The ``files`` entry of one file: size, SHA-256, format and any extra layout keys."""
    path = folder / relpath
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path), "format": fmt, **extra}
