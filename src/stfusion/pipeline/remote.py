"""Sharing a study through a DVC remote: push its outputs, and pull them into another clone instead of retraining.

Each profile's study is its own ``dvc.yaml`` (the default study's at the project root, a profile's in
``studies/<profile>/``), and push and pull take only that file's outputs, so the default study and the full
reproduction share a remote without fetching each other's data. A remote stores files by their hash, so one
profile's push never overwrites another's.

The remote is, in order: ``--remote`` (a remote's name or a URL), the ``STFUSION_REMOTE`` environment variable
(the same), or DVC's default remote (``.dvc/config``: a local folder, ``~/.cache/stfusion/dvc-remote``, which
``.dvc/config.local`` may change for one clone). A pull fetches into the DVC cache first and changes the
workspace only once everything has arrived, and never replaces a file that exists nowhere else.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from stfusion.errors import ConfigError, InputError, StfusionError
from stfusion.paths import code_root
from stfusion.pipeline.profiles import DEFAULT

REMOTE_VARIABLE = "STFUSION_REMOTE"
GIVEN = "given"  # the name under which a remote given by URL is configured for one command
PLUGINS = {"s3": "s3", "gs": "gs", "gcs": "gs", "ssh": "ssh", "webdav": "webdav", "webdavs": "webdav"}
"""URL scheme -> the extra of the package that installs its DVC plugin (pyproject.toml)."""


@dataclass(frozen=True)
class Remote:
    name: str
    url: str

    @property
    def local(self) -> Path | None:
        """The folder of a local remote (a path or a file:// URL), else None."""
        parsed = urlparse(self.url)
        if parsed.scheme in ("", "file") or len(parsed.scheme) == 1:  # one letter: a Windows drive
            return Path(parsed.path if parsed.scheme == "file" else self.url).expanduser()
        return None

    def __str__(self) -> str:
        return f"remote {self.url}" if self.name == GIVEN else f"remote {self.name!r} ({self.url})"


def study_folder(profile: str | None) -> Path:
    """The folder of a profile's study: the project root for the default study, else ``studies/<profile>``."""
    root = code_root()
    folder = root if profile in (None, DEFAULT) else root / "studies" / profile
    if not (folder / "dvc.lock").is_file():
        what = "the default study" if folder == root else f"profile {profile!r}"
        raise InputError(f"{folder / 'dvc.lock'}: not found; {what} has no recorded results to push or pull "
                         f"(run `stfusion study{'' if folder == root else f' --profile {profile}'}` first, or "
                         "check out the commit that recorded them)")
    return folder


def open_remote(folder: Path, remote: str | None = None):
    """The DVC repository at ``folder`` and the remote to use (see the module docstring)."""
    from dvc.repo import Repo

    given = remote or os.environ.get(REMOTE_VARIABLE) or None
    repo = Repo(str(folder))
    names = repo.config.get("remote", {})
    if given is not None and given not in names:  # a URL: configured for this command only
        repo.close()
        if "/" not in given and "\\" not in given:  # a mistyped name would become a folder of that name
            raise ConfigError(f"--remote or {REMOTE_VARIABLE}: {given!r} is neither a remote of {folder}'s DVC "
                              f"config ({', '.join(names) or 'none'}) nor a path or URL")
        repo = Repo(str(folder), config={"remote": {GIVEN: {"url": given}}, "core": {"remote": GIVEN}})
        name = GIVEN
    else:
        name = given or repo.config.get("core", {}).get("remote")
    if not name:
        repo.close()
        raise ConfigError(f"{folder}: no DVC remote; give one with --remote URL or {REMOTE_VARIABLE}, or set a "
                          "default with `dvc remote add -d NAME URL` (docs/sharing.md)")
    return repo, Remote(name, str(repo.config["remote"][name]["url"]))


def _check_reachable(repo, remote: Remote, *, pushing: bool) -> None:
    """Fail in one line, before any transfer, where the remote cannot be used."""
    if remote.local is not None:
        if not pushing and not remote.local.is_dir():
            raise InputError(f"{remote}: folder not found; mount it, or give the remote that holds the study with "
                             f"--remote or {REMOTE_VARIABLE} (docs/sharing.md)")
        return
    scheme = urlparse(remote.url).scheme
    try:
        repo.cloud.get_remote(remote.name)
    except ImportError:
        extra = PLUGINS.get(scheme, scheme)
        raise ConfigError(f"{remote}: needs DVC's {scheme} plugin: pip install -e '.[{extra}]'") from None


def _targets(folder: Path) -> list[str]:
    return [str(folder / "dvc.yaml")]


def push(profile: str | None = None, remote: str | None = None) -> dict:
    """Upload every output the profile's dvc.lock records (those already there are skipped)."""
    folder = study_folder(profile)
    repo, where = open_remote(folder, remote)
    with repo, _dvc_quiet():
        _check_reachable(repo, where, pushing=True)
        missing = _missing(repo, folder, where)
        if missing:
            raise InputError(f"{folder / 'dvc.lock'}: {len(missing)} file(s) it records are neither in the DVC cache nor "
                             f"on the remote (such as {missing[0]}); run the study to the end before pushing")
        started = time.perf_counter()
        try:
            pushed = repo.push(targets=_targets(folder), remote=where.name)
        except Exception as err:  # noqa: BLE001 - DVC's and the file system's errors alike: say which remote
            raise StfusionError(f"{where}: push failed ({_first_line(err)})") from None
    return {"remote": str(where), "files": pushed, "seconds": time.perf_counter() - started, "folder": str(folder)}


def pull(profile: str | None = None, remote: str | None = None) -> dict:
    """Fetch every output the profile's dvc.lock records into the DVC cache, then check them out; nothing in the
    workspace changes unless the remote holds all of them."""
    from dvc.exceptions import DownloadError

    folder = study_folder(profile)
    repo, where = open_remote(folder, remote)
    started = time.perf_counter()
    lacking = (f"push them from the study that made them (stfusion push"
               f"{'' if profile in (None, DEFAULT) else f' --profile {profile}'}); nothing was changed")
    with repo, _dvc_quiet():
        _check_reachable(repo, where, pushing=False)
        try:
            missing = _missing(repo, folder, where)
            if missing:
                raise InputError(f"{where}: {len(missing)} file(s) of {folder / 'dvc.lock'} are not there (such as "
                                 f"{missing[0]}); {lacking}")
            fetched = repo.fetch(targets=_targets(folder), remote=where.name)
        except StfusionError:
            raise
        except DownloadError as err:  # a folder's listing is there, some of its files are not
            raise InputError(f"{where}: {err.amount} file(s) of {folder / 'dvc.lock'} are not there or cannot be "
                             f"read; {lacking}") from None
        except Exception as err:  # noqa: BLE001 - an unreachable remote fails in its own way per protocol
            raise StfusionError(f"{where}: pull failed ({_first_line(err)}); nothing was changed") from None
        _checkout(repo, folder)
        stale = sorted(repo.status(targets=_targets(folder)))  # code or parameters changed since the study ran
    return {"remote": str(where), "files": fetched, "seconds": time.perf_counter() - started, "folder": str(folder),
            "stale": stale}


@contextmanager
def _dvc_quiet():
    """DVC logs each file it cannot transfer, with a traceback; the one-line error that follows says it all."""
    loggers = [logging.getLogger(name) for name in ("dvc", "dvc_data", "dvc_objects")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _missing(repo, folder: Path, where: Remote) -> list[str]:
    """Outputs of dvc.lock in neither the DVC cache nor the remote."""
    status = repo.status(targets=_targets(folder), cloud=True, remote=where.name)
    return sorted(path for path, state in status.items() if state == "missing")


def _checkout(repo, folder: Path) -> None:
    """Check the fetched outputs out, never forcing: DVC refuses, before changing anything, to replace a file that is
    not in its cache."""
    from dvc.exceptions import DvcException

    try:
        repo.checkout(targets=_targets(folder))
    except DvcException as err:
        text = str(err)
        if "unsaved files" in text:
            files = [line.strip() for line in text.splitlines()[1:] if line.strip()]
            raise InputError(f"{', '.join(files[:3])}{' ...' if len(files) > 3 else ''}: differ from the study's "
                             "dvc.lock and exist nowhere else; pulling would replace them: move them away (or "
                             "`dvc commit` them to keep them in the cache) and pull again; nothing was changed") from None
        raise StfusionError(f"{folder}: checkout failed ({_first_line(err)})") from None


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
