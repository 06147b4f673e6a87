"""Time-series fusion of a site: ``stfusion fuse --site``.

Every coarse target date of a site folder (docs/sites.md) is predicted from the nearest reference pair
(a date with both images whose fine image is clear enough), or, for a method that takes two (ESTARFM), from
the nearest pair on either side; STARFM, which takes one or more, gets both where the target has them. Each
output is named after its target date, ``<out_dir>/<date>.tif``; a rerun skips the targets already written,
so an interrupted series resumes (``overwrite`` predicts them again). No output may be a site file. A scene
wider or taller than ``block`` pixels is read, warped and written block by block (stfusion.inference.blocks).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from contextlib import ExitStack
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from stfusion.data.formats import open_windows
from stfusion.data.site import (Site, coarse_box, coarse_ratio, coarse_reflectance, fine_box, fine_reflectance,
                                load_site, match_dates)
from stfusion.errors import ConfigError, InputError
from stfusion.inference.blocks import block_boxes, block_halo, block_side, fuse_blocks, predict_layers
from stfusion.inference.fuse import trained_predictor, untrained_predictor, write_layers
from stfusion.inference.outputs import check_output, remove_stale_std

DEFAULT_MIN_CLEAR = 0.5
"""The share of a fine image that must be clear for its date to serve as a reference pair."""


def _days(a: str, b: str) -> int:
    return abs((dt.date.fromisoformat(a) - dt.date.fromisoformat(b)).days)


def reference_dates(target: str, pairs: list[str], count: int, usable) -> tuple[str, ...]:
    """The reference pair(s) of ``target``: the nearest ``usable`` pair in time (the earlier on a tie), or for
    ``count`` 2 the nearest usable pair before and after it. The target's own date is never its reference."""
    candidates = sorted((d for d in pairs if d != target), key=lambda d: (_days(d, target), d))
    if count == 1:
        for date in candidates:
            if usable(date):
                return (date,)
        raise InputError(f"target {target}: no reference pair with a clear enough fine image among {pairs}")
    before = next((d for d in candidates if d < target and usable(d)), None)
    after = next((d for d in candidates if d > target and usable(d)), None)
    if before is None or after is None:
        side = "before" if before is None else "after"
        raise InputError(f"target {target}: a two-pair method needs a reference pair on either side; none {side} it")
    return before, after


@dataclass(frozen=True)
class SeriesResult:
    target: str
    references: tuple[str, ...]
    out: Path
    status: str  # "written" or "skipped" (it existed: a rerun resumes)


def fuse_site(site_folder: str | os.PathLike, out_dir: str | os.PathLike, *, method_name: str | None = None,
              weights: str | os.PathLike | None = None, targets: list[str] | None = None,
              min_clear: float = DEFAULT_MIN_CLEAR, window: int | None = None, tile: int | None = None,
              samples: int | None = None, seed: int = 0, device: str | None = None, block: int | None = None,
              overwrite: bool = False, progress: bool = True) -> list[SeriesResult]:
    """Predict every target date of the site in ``site_folder`` (default: the dates with a coarse file only);
    targets already written are skipped unless ``overwrite``. A scene wider or taller than ``block`` pixels
    (default 4096) is fused block by block, so memory holds one block of each input, not the scene."""
    if weights is None and method_name is None:
        raise ConfigError("--method or --weights: say which method fuses the images")
    if not 0 <= min_clear <= 1:
        raise ConfigError(f"--min-clear: expected a share in [0, 1], got {min_clear}")
    site = load_site(site_folder)
    fine = site.fine.dates(site.folder, "fine.files")
    coarse = site.coarse.dates(site.folder, "coarse.files")
    masks = match_dates(site.folder, site.mask, what="mask.files") if site.mask else {}
    pairs = sorted(set(fine) & set(coarse))
    if not pairs:
        raise InputError(f"{site.path}: no date has both a fine and a coarse file; a reference pair is needed")
    targets = _targets(site.path, targets, coarse, fine)
    inputs = [site.path, *fine.values(), *coarse.values(), *masks.values(), *([Path(weights)] if weights else [])]
    outputs = _planned_outputs(Path(out_dir), targets, inputs, overwrite)
    if weights is None:
        predict, info = untrained_predictor(method_name, window)
    else:
        predict, info = trained_predictor(weights, method_name, window=window, tile=tile, samples=samples, seed=seed,
                                 device=device)
    side = block_side(block)
    with open_windows(fine[pairs[0]]) as first_fine, open_windows(coarse[pairs[0]]) as first_coarse:
        grid, ratio = first_fine.grid, coarse_ratio(site, first_fine, first_coarse)
    if info.get("ratio") is not None and info["ratio"] != ratio:
        raise ConfigError(f"--weights: {info['method']} was built for coarse pixels {info['ratio']} fine pixels wide; "
                          f"the site's are {ratio}")
    if info.get("bands") is not None and info["bands"] != len(site.bands):
        raise InputError(f"{site.path}: the site has {len(site.bands)} bands; the model was trained on {info['bands']}")
    blockwise = grid.height > side or grid.width > side

    @lru_cache(maxsize=4)
    def fine_at(date: str) -> np.ndarray:
        return fine_reflectance(site, fine[date], grid, masks.get(date))

    @lru_cache(maxsize=8)
    def coarse_at(date: str) -> np.ndarray:
        return coarse_reflectance(site, coarse[date], grid)

    @lru_cache(maxsize=None)
    def usable(date: str) -> bool:
        if not blockwise:
            return float(np.isfinite(fine_at(date)).all(axis=0).mean()) >= min_clear
        return _clear_share(site, fine[date], masks.get(date), grid, side) >= min_clear

    results = []
    for target in tqdm(targets, desc=f"{info['method']} on {site.folder.name}", disable=not progress):
        references = _references(target, pairs, info["pairs"], usable)
        out, keep = outputs[target]
        if keep:
            results.append(SeriesResult(target, references, out, "skipped"))
            continue
        if blockwise:
            layers = _fuse_target_blocks(predict, site, grid, ratio, {"fine": fine, "coarse": coarse, "mask": masks},
                                         target, references, out, side=side, halo=block_halo(window))
        else:
            roles = {"coarse_target": coarse_at(target)}
            for suffix, date in zip(("", "_after"), references):
                roles.update({f"fine_ref{suffix}": fine_at(date), f"coarse_ref{suffix}": coarse_at(date)})
            layers = _fuse_target(predict, roles, ratio, grid, out, site, f"{coarse[target]}", references,
                                  fine[references[0]])
        remove_stale_std(out, layers)
        results.append(SeriesResult(target, references, out, "written"))
    return results


def _fuse_target(predict, roles: dict[str, np.ndarray], ratio: int, grid, out: Path, site: Site, target_file: str,
                 references: tuple[str, ...], fine_ref: Path) -> dict[str, np.ndarray]:
    """One target predicted from its inputs in memory, by role."""
    layers, coarse_valid, holes = predict_layers(
        predict, roles, ratio, empty=f"{target_file}: no pixel is valid in it and in the reference pair(s) {references}")
    write_layers(layers, grid, coarse_valid, out, fine_ref, band_names=site.bands, fallback=int(holes.sum()))
    return layers


def _opened(stack: ExitStack, path: Path, grid, what: str):
    """``path`` opened window by window on ``stack``, its grid checked against the fine grid (None: None)."""
    if path is None:
        return None
    source = stack.enter_context(open_windows(path))
    if grid is not None:
        grid.require_same(source.grid, what=f"{path} ({what})")
    return source


def _clear_share(site: Site, path: Path, mask: Path | None, grid, side: int) -> float:
    """The share of the fine image at ``path`` that is valid and clear, read block by block."""
    with ExitStack() as stack:
        fine, qa = _opened(stack, path, grid, "fine"), _opened(stack, mask, grid, "mask")
        clear = sum(int(np.isfinite(fine_box(site, fine, slice(r0, r1), slice(c0, c1), qa)).all(axis=0).sum())
                    for r0, r1, c0, c1 in block_boxes(grid.height, grid.width, side))
    return clear / (grid.height * grid.width)


def _fuse_target_blocks(predict, site: Site, grid, ratio: int, files: dict[str, dict[str, Path]], target: str,
                        references: tuple[str, ...], out: Path, *, side: int, halo: int) -> list[str]:
    """One target predicted block by block: each input read (the coarse ones warped) one box at a time."""
    with ExitStack() as stack:
        coarse = lambda date: _opened(stack, files["coarse"][date], None, "coarse")  # noqa: E731
        readers = {"coarse_target": partial(coarse_box, site, coarse(target), grid)}
        for suffix, date in zip(("", "_after"), references):
            mask = _opened(stack, files["mask"].get(date), grid, "mask")
            readers[f"fine_ref{suffix}"] = partial(fine_box, site, _opened(stack, files["fine"][date], grid, "fine"),
                                                   mask=mask)
            readers[f"coarse_ref{suffix}"] = partial(coarse_box, site, coarse(date), grid)
        _, _, layers = fuse_blocks(predict, lambda rows, cols: {role: read(rows, cols) for role, read in readers.items()},
                                grid, out, ratio=ratio, side=side, halo=halo, band_names=site.bands,
                                what=f"{files['coarse'][target]} and the reference pair(s) {references}",
                                progress=False)
    return layers


def _planned_outputs(out_dir: Path, targets: list[str], inputs: list[Path],
                     overwrite: bool) -> dict[str, tuple[Path, bool]]:
    """Each target's output and whether an existing one is kept (a rerun resumes), all checked before any
    target is predicted: none may be a site file (stfusion.inference.outputs)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out-dir: {out_dir} is a file; expected a folder (one file per target date goes there)")
    plan = {}
    for target in targets:
        out = out_dir / f"{target}.tif"
        keep = out.is_file() and not overwrite
        plan[target] = check_output(out, inputs, overwrite=overwrite or keep, key="--out-dir"), keep
    return plan


def _references(target: str, pairs: list[str], takes: tuple[int, ...], usable) -> tuple[str, ...]:
    """A two-pair method's pairs on either side; a method that takes one or two (STARFM) uses both where
    the target has them, else its nearest; any other its nearest."""
    if 2 not in takes:
        return reference_dates(target, pairs, 1, usable)
    if 1 not in takes:
        return reference_dates(target, pairs, 2, usable)
    try:
        return reference_dates(target, pairs, 2, usable)
    except InputError:
        return reference_dates(target, pairs, 1, usable)


def _targets(path: Path, targets: list[str] | None, coarse: dict[str, Path], fine: dict[str, Path]) -> list[str]:
    if targets is None:
        chosen = sorted(set(coarse) - set(fine))
        if not chosen:
            raise InputError(f"{path}: every coarse date has a fine image; name the dates to predict with --targets")
        return chosen
    for date in targets:
        try:
            dt.date.fromisoformat(date)
        except ValueError:
            raise ConfigError(f"--targets: {date!r} is not an ISO date (YYYY-MM-DD)") from None
        if date not in coarse:
            raise InputError(f"{path}: no coarse file for target {date}; coarse dates are {sorted(coarse)}")
    return sorted(set(targets))
