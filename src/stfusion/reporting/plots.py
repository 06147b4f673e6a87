"""The study's figures, for people: labelled axes with units, one colour per method family.

Every figure is written as PNG and PDF (``reports/figures/png/`` and ``reports/figures/pdf/``),
named ``<kind>_<dataset>``, and carries the provenance label of its data and profile. Methods of
one family share the family's colour (:data:`stfusion.methods.FAMILY_COLOURS`) and are told apart
by marker (points) or hatch (bars). Images use fixed reflectance stretches, so the same surface
looks the same in every panel. How to read each figure (:data:`FIGURE_GUIDE`, reused by the
report):
"""

from __future__ import annotations

import numbers
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: DVC, CI and papermill have no display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from stfusion import BANDS
from stfusion.data.datacube import date_index, open_cube
from stfusion.data.images import (DIFFERENCE_PERCENTILE, TRUE_COLOUR_MAX, band_index, composite, difference, ndvi,
                                  symmetric_limit)
from stfusion.data.raster import read_geotiff
from stfusion.data.splits import Pair, Splits
from stfusion.data.datasets import PAPER_NAMES, get_dataset
from stfusion.errors import ConfigError, InputError
from stfusion.evaluation.scores import COLUMNS as SCORES_COLUMNS
from stfusion.evaluation.scores import REGIONS, change_regions, method_folder
from stfusion.evaluation.significance import REFERENCE
from stfusion.io import atomic_path
from stfusion.methods.registry import FAMILY_COLOURS, get_method
from stfusion.inference.predict import prediction_name, uncertainty_name
from stfusion.reporting.published import load_published
from stfusion.reporting.styles import Style, method_styles, save_png
from stfusion.units import to_reflectance

FIGURE_GUIDE = {
    "boxplots": (
        "Overall scores (all bands and valid pixels at once) of every test pair, one panel per metric. "
        "Each box pools the methods of one family over the test pairs (line: median; box: quartiles; "
        "whiskers: 1.5 times the interquartile range); the points are single methods on single test pairs, "
        "one marker per method, so each box can be traced back to its members. The y-axis label gives the "
        "unit and the better direction: RMSE (reflectance, 0-1), SAM (radians) and ERGAS are errors (lower "
        "is better); SSIM and CC (1 = perfect) and PSNR (dB) are similarities (higher is better). With a "
        "few test pairs a box is a range, not a significance test (the differences figure is one). A deep model "
        "has one point per test pair and seed."
    ),
    "differences": (
        "Which differences are real. Each row is one method: the dot is its mean RMSE minus that of "
        "temporal-difference (F1 plus the coarse change), the bar the paired bootstrap interval of that "
        "difference (test pairs, seeds and spatial blocks resampled together), coloured by family. Left of the "
        "dashed line the method is better than temporal-difference; a filled dot marks an interval that excludes "
        "0, an open dot a difference the data cannot tell from none. `<model>-ensemble` is the per-pixel mean "
        "of a model's seeds. Left panel all valid pixels, right panel the pixels whose land cover changed."
    ),
    "change": (
        "RMSE and SSIM over all bands in three pixel regions: all valid pixels, the changed pixels (whose "
        "land cover differs between the reference and the target date) and the unchanged ones. Bars are "
        "the mean over the test pairs, whiskers the range. A method that merely copies the reference image "
        "does well on unchanged pixels and badly on changed ones, so the gap between the two says how much "
        "of the real change a method recovers. The changed region is often small (its share per test pair "
        "is in the title), which makes its scores noisier. Land-cover truth exists for the synthetic scenes only."
    ),
    "scatter": (
        "Predicted against observed reflectance of every valid pixel of the showcase test pair: one row "
        "per method, one column per band. Colour counts pixels per bin on a log scale shared by all panels, "
        "so the dense core and the rare outliers both show. A perfect prediction lies on the dashed 1:1 "
        "line; a cloud bent below it at high values underestimates bright surfaces, a wide cloud means "
        "large pixel errors. Each panel gives the band's RMSE (reflectance) and Pearson's r over the pixels shown."
    ),
    "scene": (
        "The full scene of the showcase test pair: the observed fine image on the target date in the first "
        "column, each method's prediction in the others. Rows: true colour (red, green, blue), NIR false "
        "colour (NIR, red, green: vegetation shows red), the difference in one band (NIR unless stated) "
        "and NDVI. The images of a row share one fixed reflectance stretch (in the row label), so equal "
        "colours mean equal reflectance. In the difference row the observed column shows the real change (target minus "
        "reference observation) and each method its error (predicted minus observed), all on one symmetric "
        "scale: white is no difference, red brighter, blue darker. A good method is pale where the real "
        "change is strong. Magenta marks pixels without valid data and, in the NDVI row, pixels where "
        "NIR + red is not positive, which only a prediction with negative reflectance produces."
    ),
    "crop": (
        "The four rows of the scene figure on a zoomed window (pixels of 25 m), where field edges, small "
        "fields and the texture of the change become visible. The panel on the left shows the observed "
        "true-colour scene with the window outlined. Stretches and the NDVI scale are those of the scene "
        "figure; the difference scale is set from this window."
    ),
    "ablation": (
        "The MCBAM-GAN paper's ablation: one row per metric of its Tables 2 to 4, one column for this study's "
        "runs and one for the published values of the matching paper dataset (real CIA or LGC, paper tier). "
        "The x-axis lists the configurations in the paper's order: Table 2's depths (reconstruction scales), "
        "then Tables 3 and 4's module sets (MS = multi-scale, CBAM, AFF fusion, ML = multi-loss); depth 3 "
        "and the full module set are the same model. This study's points are single test pairs and the "
        "bar marks their mean, so the spread shows how much of a difference between two configurations "
        "is noise; at the quick tier the differences are not significant. The y-axis label gives the "
        "better direction."
    ),
    "uncertainty": (
        "How well the spread of a diffusion model's samples predicts its error (its run with the study's seed). "
        "STFDiff draws several samples "
        "from different noise; the prediction is their mean and the uncertainty their per-pixel standard "
        "deviation. Left: band-pixels of each test pair sorted into ten equal-count bins (deciles) by that "
        "std; per bin the actual RMSE (solid) and MAE (dashed) of the prediction against the mean std. A "
        "useful uncertainty rises from left to right; a calibrated one lies on the dotted line (RMSE = std), "
        "below it the model is under-confident, above it over-confident. Right: the std and the absolute "
        "error of the showcase pair in one band, on one colour scale, to see whether they pick out the same places."
    ),
    "training": (
        "Loss (and any other logged metric) per epoch of each trainable method: solid line training, "
        "dashed line validation (held-out dates, never test dates). A training curve that keeps falling "
        "while the validation curve rises is overfitting; the dotted vertical line marks the epoch with "
        "the lowest validation value. The figure exists only when a method in the study has a training history."
    ),
}
# One text for help(), the API docs and the report: the module docstring gets the guide appended.
__doc__ = (__doc__ or "") + "".join(f"\n{kind}\n{textwrap.fill(text, 96, initial_indent='    ', subsequent_indent='    ')}\n"
                                    for kind, text in FIGURE_GUIDE.items())

FALSE_COLOUR_MAX = (0.5, 0.25, 0.25)  # NIR, red, green: vegetation is twice as bright in the NIR
NDVI_RANGE = (-0.2, 0.9)  # water and bare soil at the low end, dense crops at the high end
NODATA_COLOUR = "#ff00ff"  # magenta occurs in none of the colour maps and composites used here
BOX_METRICS = ("rmse", "ssim", "cc", "sam", "ergas", "psnr")
HISTORY_COLUMNS = ("epoch", "split", "metric", "value")


@dataclass(frozen=True)
class Metric:
    label: str
    unit: str
    lower_is_better: bool

    @property
    def axis_label(self) -> str:
        direction = "lower is better ↓" if self.lower_is_better else "higher is better ↑"
        return f"{self.label} ({self.unit})\n{direction}"


METRICS = {
    "rmse": Metric("RMSE", "reflectance, 0-1", True),
    "mae": Metric("MAE", "reflectance, 0-1", True),
    "ssim": Metric("SSIM", "unitless, 1 = identical", False),
    "cc": Metric("CC", "Pearson r, 1 = perfect", False),
    "uiqi": Metric("UIQI", "unitless, 1 = identical", False),
    "sam": Metric("SAM", "radians", True),
    "ergas": Metric("ERGAS", "unitless", True),
    "psnr": Metric("PSNR", "dB", False),
}


def showcase_pair(splits: Splits, pair=None) -> Pair:
    """The given pair (dates as strings, YAML dates too) if it is a test pair; the first test pair if None."""
    if pair is None:
        return splits.test[0]
    chosen = tuple(str(d) for d in pair) if isinstance(pair, (list, tuple)) else None
    if chosen not in splits.test:
        raise ConfigError(f"figures.pairs.{splits.dataset}: {pair!r} is not a test pair; expected one of "
                          f"{[list(p) for p in splits.test]} as [reference_date, target_date]")
    return chosen


def default_crop(height: int, width: int) -> dict[str, int]:
    """A centred square, a quarter of the shorter side: small enough to show single fields."""
    side = max(1, min(height, width) // 4)
    return {"row": (height - side) // 2, "col": (width - side) // 2, "height": side, "width": side}


def crop_window(region, height: int, width: int, dataset: str) -> tuple[slice, slice]:
    """Validate a crop region ``{"row", "col", "height", "width"}`` (pixels) against the scene; return slices."""
    key = f"figures.crop.{dataset}"
    keys = ("row", "col", "height", "width")
    if not isinstance(region, dict) or set(region) != set(keys) or not all(
            isinstance(region[k], numbers.Integral) and not isinstance(region[k], bool) for k in keys):
        raise ConfigError(f"{key}: expected a mapping of integers row, col, height, width (pixels from the "
                          f"top-left corner), got {region!r}")
    r, c, h, w = (int(region[k]) for k in keys)
    if h < 1 or w < 1 or r < 0 or c < 0 or r + h > height or c + w > width:
        raise ConfigError(f"{key}: {region} is not inside the {height} x {width} scene; expected height, width >= 1, "
                          f"0 <= row, row + height <= {height}, 0 <= col, col + width <= {width}")
    return slice(r, r + h), slice(c, c + w)


def _per_dataset(values: dict | None, key: str, datasets: list[str]) -> dict:
    """A per-dataset parameter, for the study's datasets. A name no dataset has is a typo; a known dataset outside
    the study is left out (a profile's mappings merge over params.yaml's and cannot drop its keys)."""
    values = dict(values or {})
    for name in values:
        get_dataset(name, key=f"{key}.{name}")
    return {name: value for name, value in values.items() if name in datasets}


# --- inputs ----------------------------------------------------------------------------------------

@dataclass
class Scene:
    """What the image figures of one dataset show: the showcase pair, observed and predicted."""

    dataset: str
    label: str
    bands: list[str]
    pair: Pair
    reference: np.ndarray  # observed fine image on the reference date, float, NaN = invalid
    observed: np.ndarray  # observed fine image on the target date
    predictions: dict[str, np.ndarray]


def _observed(cube: xr.Dataset, date: str) -> np.ndarray:
    t = date_index(cube, date)
    image = to_reflectance(cube["fine"][t].values)
    image[:, cube["valid"][t].values == 0] = np.nan
    return image


def load_scene(workspace, cube: xr.Dataset, dataset: str, methods: list[str], pair: Pair, label: str,
               seed: int) -> Scene:
    """The observed images and each method's prediction of ``pair`` (a deep model's run with ``seed``)."""
    predictions = {}
    for m in methods:
        path = method_folder(workspace, dataset, m, seed) / prediction_name(pair)
        data = read_geotiff(path, bands=cube.sizes["band"]).data
        predictions[m] = data.astype(np.float32, copy=False)
    bands = [str(b) for b in cube["band"].values]
    return Scene(dataset, label, bands, pair, _observed(cube, pair[0]), _observed(cube, pair[1]), predictions)


def read_scores(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"{path}: scores not found; run the evaluate stage first")
    scores = pd.read_csv(path, dtype={c: str for c in SCORES_COLUMNS[:-1]})
    missing = set(SCORES_COLUMNS) - set(scores.columns)
    if missing:
        raise InputError(f"{path}: lacks the columns {sorted(missing)}; expected {list(SCORES_COLUMNS)}")
    return scores


def read_history(path: Path) -> pd.DataFrame | None:
    """A method's tidy training history, or None when it has none (methods without training)."""
    if not path.is_file():
        return None
    history = pd.read_csv(path)
    missing = set(HISTORY_COLUMNS) - set(history.columns)
    if missing:
        raise InputError(f"{path}: lacks the columns {sorted(missing)}; expected {list(HISTORY_COLUMNS)}")
    return history


def changed_shares(cube: xr.Dataset, pairs) -> list[float] | None:
    """Share of valid pixels whose true land cover changed, per pair (None without truth)."""
    if "cover" not in cube:
        return None
    shares = []
    for ref, target in pairs:
        r, t = date_index(cube, ref), date_index(cube, target)
        valid = (cube["valid"][r].values > 0) & (cube["valid"][t].values > 0)
        shares.append(float(change_regions(cube, (ref, target))[0]["changed"][valid].mean()))
    return shares


# --- drawing helpers --------------------------------------------------------------------------------

def _save(fig: plt.Figure, folder, name: str, dpi: int) -> list:
    """Save ``fig`` as ``folder/png/name.png`` and ``folder/pdf/name.pdf`` (DVC shows the PNGs as plots)."""
    png, pdf = folder / "png" / f"{name}.png", folder / "pdf" / f"{name}.pdf"
    save_png(fig, png, dpi)
    with atomic_path(pdf) as tmp:
        fig.savefig(tmp, format="pdf", dpi=dpi)
    plt.close(fig)
    return [png, pdf]


def _image(ax: plt.Axes, image: np.ndarray, **imshow):
    """An image without ticks (the frame and y label stay, for row names); no data shows as magenta."""
    shown = ax.imshow(image, **imshow)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_facecolor(NODATA_COLOUR)  # NaN pixels and transparent composite pixels let it through
    return shown


def _method_legend(styles: dict[str, Style], *, bars: bool) -> list:
    """Legend handles: a family-coloured marker (points) or hatched patch (bars) per method."""
    if bars:
        return [Patch(facecolor=s.colour, hatch=s.hatch, edgecolor="black", label=f"{s.name} ({s.family})")
                for s in styles.values()]
    return [Line2D([], [], ls="", marker=s.marker, markerfacecolor=s.colour, markeredgecolor="black",
                   markersize=7, label=f"{s.name} ({s.family})") for s in styles.values()]


def _pairs_text(pairs) -> str:
    return ", ".join(f"{r} → {t}" for r, t in pairs)


def _not_available(ax: plt.Axes, title: str, why: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


# --- 1. boxplots ------------------------------------------------------------------------------------

def boxplots_figure(scores: pd.DataFrame, styles: dict[str, Style], dataset: str, label: str) -> plt.Figure:
    """One panel per metric: overall scores over test pairs, boxes per family, points per method."""
    overall = scores[(scores["band"] == "all") & (scores["region"] == "all") & np.isfinite(scores["value"])]
    families = list(dict.fromkeys(s.family for s in styles.values()))  # FAMILY_COLOURS order
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.5), constrained_layout=True)
    for ax, metric in zip(axes.flat, BOX_METRICS):
        info, data = METRICS[metric], overall[overall["metric"] == metric]
        if data.empty:
            _not_available(ax, info.label, f"{metric} not in scores.csv")
            continue
        with warnings.catch_warnings():  # seaborn 0.13.2 still passes matplotlib 3.11's deprecated `vert`
            warnings.filterwarnings("ignore", "vert: bool", matplotlib.MatplotlibDeprecationWarning)
            sns.boxplot(data, x="family", y="value", hue="family", order=families, hue_order=families,
                        palette=FAMILY_COLOURS, legend=False, showfliers=False, width=0.6, ax=ax)
        for patch in ax.patches:
            patch.set_alpha(0.45)  # lighter boxes, so the method points on top stay visible
        _method_points(ax, data, styles, families)
        ax.set(title=info.label, xlabel="method family", ylabel=info.axis_label)
        if len(families) > 3:  # six family names side by side overlap
            plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
    pairs = overall[["reference_date", "target_date"]].drop_duplicates().itertuples(index=False)
    fig.legend(handles=_method_legend(styles, bars=False), loc="outside lower center",
               ncols=min(4, len(styles)), title="method", fontsize=8)
    fig.suptitle(f"{dataset}: overall scores (all bands, all valid pixels) per test pair\n"
                 f"test pairs {_pairs_text(pairs)}\n{label}", fontsize=11)
    return fig


def _method_points(ax: plt.Axes, data: pd.DataFrame, styles: dict[str, Style], families: list[str]) -> None:
    """Each method's values beside the others of its family (spread over the box width), marker per method."""
    for family_x, family in enumerate(families):
        members = [s for s in styles.values() if s.family == family]
        offsets = np.linspace(-0.18, 0.18, len(members)) if len(members) > 1 else [0.0]
        for offset, style in zip(offsets, members):
            values = data.loc[data["method"] == style.name, "value"]
            ax.scatter(np.full(len(values), family_x + offset), values, marker=style.marker, s=36,
                       color=style.colour, edgecolor="black", linewidth=0.7, zorder=3)


# --- 2. change-aware scores -------------------------------------------------------------------------

def change_figure(scores: pd.DataFrame, styles: dict[str, Style], dataset: str, label: str,
                  shares: list[float] | None) -> plt.Figure:
    """RMSE and SSIM per region (all, changed, unchanged): mean over test pairs, range as whiskers."""
    overall = scores[(scores["band"] == "all") & np.isfinite(scores["value"])]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), constrained_layout=True)
    for ax, metric in zip(axes, ("rmse", "ssim")):
        data = overall[overall["metric"] == metric]
        if data.empty:
            _not_available(ax, METRICS[metric].label, f"{metric} not in scores.csv")
            continue
        _region_bars(ax, data, styles)
        only_all = set(data["region"]) == {"all"}  # real data has no land-cover truth to split by
        ax.set(title=METRICS[metric].label, ylabel=METRICS[metric].axis_label,
               xlabel="pixel region" + (" (no changed/unchanged scores in scores.csv)" if only_all else ""))
    fig.legend(handles=_method_legend(styles, bars=True), loc="outside right center", title="method", fontsize=8)
    pairs = overall[["reference_date", "target_date"]].drop_duplicates()
    share = ("" if shares is None else
             "; changed pixels per test pair: " + ", ".join(f"{s:.1%}" for s in shares))
    fig.suptitle(f"{dataset}: change-aware scores over test pairs {_pairs_text(pairs.itertuples(index=False))}\n"
                 f"changed = pixels whose land cover changed between reference and target{share}\n"
                 f"bars: mean over test pairs; whiskers: range · {label}", fontsize=10)
    return fig


def _region_bars(ax: plt.Axes, data: pd.DataFrame, styles: dict[str, Style]) -> None:
    """Grouped bars: a group per region, a bar per method (family colour, method hatch)."""
    regions = [r for r in REGIONS if r in set(data["region"])]
    stats = data.groupby(["method", "region"])["value"].agg(["mean", "min", "max"])
    width = 0.8 / max(1, len(styles))
    for k, style in enumerate(styles.values()):
        if style.name not in stats.index.get_level_values("method"):
            continue
        own = stats.loc[style.name].reindex(regions).dropna()
        xs = [regions.index(r) + (k - (len(styles) - 1) / 2) * width for r in own.index]
        ax.bar(xs, own["mean"], width, yerr=[own["mean"] - own["min"], own["max"] - own["mean"]], capsize=3,
               color=style.colour, hatch=style.hatch, edgecolor="black", linewidth=0.6, error_kw={"linewidth": 0.9})
    ax.set_xticks(range(len(regions)), regions)


# --- 3. density scatter -----------------------------------------------------------------------------

def scatter_figure(scene: Scene, styles: dict[str, Style], bins: int = 100) -> plt.Figure:
    """Rows = methods, columns = bands: 2-D histogram of predicted against observed, log colour, 1:1 line."""
    names = [m for m in styles if m in scene.predictions]
    counts, limits, stats = _scatter_counts(scene, names, bins)
    vmax = max([c.max() for c in counts.values()] + [1])
    norm = LogNorm(vmin=1, vmax=max(vmax, 2))  # one colour scale for all panels: counts compare
    # Axes are shared per band, so only the outer panels need tick labels; x and y have equal limits,
    # so the x ticks read both. Fixed margins instead of constrained layout: laying out the tick text
    # of ~50 panels twice (PNG and PDF) is what made this figure slow.
    rows, cols, cell = len(names), len(scene.bands), 1.8
    width, height = cell * cols + 2.2, cell * rows + 1.7
    fig = plt.figure(figsize=(width, height))
    grid = fig.add_gridspec(rows, cols, left=1.0 / width, right=1 - 1.2 / width, bottom=0.7 / height,
                            top=1 - 1.0 / height, wspace=0.1, hspace=0.1)
    axes = grid.subplots(sharex="col", sharey="col", squeeze=False)
    shown = None
    for (i, name), (j, band) in ((a, b) for a in enumerate(names) for b in enumerate(scene.bands)):
        ax, (lo, hi) = axes[i, j], limits[band]
        shown = ax.imshow(np.ma.masked_equal(counts[name, band].T, 0), origin="lower", extent=(lo, hi, lo, hi),
                          norm=norm, cmap="viridis", interpolation="nearest")
        ax.plot([lo, hi], [lo, hi], ls="--", color="black", lw=0.8)
        ax.set(xlim=(lo, hi), ylim=(lo, hi), aspect="equal")
        ax.tick_params(labelsize=7, labelleft=j == 0, labelbottom=i == len(names) - 1)
        # Same ticks on x and y; none near the top, where its label would run into the next panel.
        ticks = [t for t in MaxNLocator(4).tick_values(lo, hi) if lo <= t <= lo + 0.85 * (hi - lo)]
        ax.set(xticks=ticks, yticks=ticks)
        ax.text(0.04, 0.96, "RMSE {:.4f}\nr {:.3f}".format(*stats[name, band]), transform=ax.transAxes,
                va="top", fontsize=7, bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1})
        if i == 0:
            ax.set_title(band, fontsize=10)
        if i == len(names) - 1:
            ax.set_xlabel("observed reflectance", fontsize=8)
        if j == 0:
            ax.set_ylabel(f"{name}\npredicted reflectance", fontsize=8, color=styles[name].colour)
    colour_bar = fig.add_axes((1 - 0.95 / width, 0.25, 0.18 / width, 0.5))
    fig.colorbar(shown, cax=colour_bar, label="pixels per bin (log scale)")
    fig.suptitle(f"{scene.dataset}: predicted against observed reflectance (unitless, 0-1), test pair "
                 f"{scene.pair[0]} → {scene.pair[1]}\n{scene.label}", fontsize=11)
    return fig


def _scatter_counts(scene: Scene, names: list[str], bins: int):
    """Histograms, axis limits per band (shared by the methods) and (RMSE, r) per panel."""
    limits = {}
    for k, band in enumerate(scene.bands):
        stack = np.concatenate([scene.observed[k].ravel()] + [scene.predictions[m][k].ravel() for m in names])
        stack = stack[np.isfinite(stack)]
        hi = float(stack.max()) if stack.size else 1.0
        lo = min(0.0, float(stack.min())) if stack.size else 0.0  # 0 unless a prediction is negative
        limits[band] = (lo, hi + 0.02 * (hi - lo) or 1.0)
    counts, stats = {}, {}
    for name in names:
        for k, band in enumerate(scene.bands):
            obs, pred = scene.observed[k], scene.predictions[name][k]
            ok = np.isfinite(obs) & np.isfinite(pred)
            o, p = obs[ok].astype(np.float64), pred[ok].astype(np.float64)
            counts[name, band] = np.histogram2d(o, p, bins=bins, range=[limits[band]] * 2)[0]
            r = np.corrcoef(o, p)[0, 1] if o.size > 1 and o.std() > 0 and p.std() > 0 else np.nan
            stats[name, band] = (float(np.sqrt(np.mean((p - o) ** 2))) if o.size else np.nan, r)
    return counts, limits, stats


# --- 4./5. scene and crop ---------------------------------------------------------------------------

ROW_LABELS = (f"true colour (red, green, blue)\nwhite = reflectance {TRUE_COLOUR_MAX}",
              "false colour (NIR, red, green)\nwhite = {:g}, {:g}, {:g}".format(*FALSE_COLOUR_MAX),
              "{band} difference", "NDVI")


def _band_label(band: str) -> str:
    return {"nir": "NIR", "swir1": "SWIR1", "swir2": "SWIR2"}.get(band, band)


def _image_grid(fig, scene: Scene, styles: dict[str, Style], window, band: str, *, nearest: bool) -> None:
    """Four rows (true colour, false colour, difference, NDVI) x (observed + methods) on ``fig`` (or a subfigure)."""
    ys, xs = window
    columns = [("observed", scene.observed)] + [(m, scene.predictions[m]) for m in styles if m in scene.predictions]
    cut = {name: image[:, ys, xs] for name, image in columns}
    # The observed column's difference is the real change since the reference date; the others are errors.
    diffs = {name: difference(image, scene.reference[:, ys, xs] if name == "observed" else cut["observed"],
                              band, scene.bands) for name, image in cut.items()}
    limit = symmetric_limit(diffs.values())
    axes = fig.subplots(4, len(columns), squeeze=False)
    options = {"interpolation": "nearest"} if nearest else {}
    for j, name in enumerate(cut):
        image = cut[name]
        _image(axes[0, j], composite(image, ("red", "green", "blue"), TRUE_COLOUR_MAX, scene.bands), **options)
        _image(axes[1, j], composite(image, ("nir", "red", "green"), FALSE_COLOUR_MAX, scene.bands), **options)
        diff_shown = _image(axes[2, j], diffs[name], cmap="RdBu_r", vmin=-limit, vmax=limit, **options)
        ndvi_shown = _image(axes[3, j], ndvi(image, scene.bands), cmap="RdYlGn", vmin=NDVI_RANGE[0],
                            vmax=NDVI_RANGE[1], **options)
        axes[2, j].set_xlabel(_difference_note(name, diffs[name]), fontsize=7)
        title = f"observed · {scene.pair[1]}" if name == "observed" else f"{name}\n({styles[name].family})"
        axes[0, j].set_title(title, fontsize=9, color="black" if name == "observed" or styles[name].family == "reference"
                             else styles[name].colour)
    for i, text in enumerate(ROW_LABELS):
        axes[i, 0].set_ylabel(text.format(band=_band_label(band)), fontsize=9)
    pad = 0.1 / len(columns)  # colour bar pads are fractions of the whole row: keep them narrow
    fig.colorbar(diff_shown, ax=axes[2, :], shrink=0.9, pad=pad, label=f"{_band_label(band)} difference\n(reflectance, unitless)")
    fig.colorbar(ndvi_shown, ax=axes[3, :], shrink=0.9, pad=pad, label="NDVI (unitless)")


def _difference_note(name: str, diff: np.ndarray) -> str:
    """Under each difference panel: the real change's mean size, or the method's RMSE in this band."""
    values = diff[np.isfinite(diff)]
    if not values.size:
        return "no valid pixel"
    if name == "observed":
        return f"real change: mean |Δ| {np.mean(np.abs(values)):.4f}"
    return f"error: RMSE {np.sqrt(np.mean(values.astype(np.float64) ** 2)):.4f}"


def scene_figure(scene: Scene, styles: dict[str, Style], difference_band: str = "nir") -> plt.Figure:
    height, width = scene.observed.shape[1:]
    n = 1 + len(scene.predictions)
    panel = 2.3  # inches per panel width; the height follows the scene's aspect
    # Room for the titles, labels and colour bars around the 4 x n panels, so the panels fill their cells.
    fig = plt.figure(figsize=(panel * n + 1.8, 4 * panel * height / width + 1.5), constrained_layout=True)
    _image_grid(fig, scene, styles, (slice(None), slice(None)), difference_band, nearest=False)
    fig.suptitle(f"{scene.dataset}: full scene ({height} x {width} pixels of 25 m), test pair "
                 f"{scene.pair[0]} (reference) → {scene.pair[1]} (target)\n{scene.label}", fontsize=11)
    return fig


def crop_figure(scene: Scene, styles: dict[str, Style], window, difference_band: str = "nir") -> plt.Figure:
    ys, xs = window
    height, width = scene.observed.shape[1:]
    n = 1 + len(scene.predictions)
    fig = plt.figure(figsize=(2.2 * n + 4.4, 4 * 2.2 * (ys.stop - ys.start) / (xs.stop - xs.start) + 1.5),
                     constrained_layout=True)
    where, grid = fig.subfigures(1, 2, width_ratios=[2.6, 2.2 * n + 1.8])
    ax = where.subplots()
    _image(ax, composite(scene.observed, ("red", "green", "blue"), TRUE_COLOUR_MAX, scene.bands))
    ax.add_patch(Rectangle((xs.start - 0.5, ys.start - 0.5), xs.stop - xs.start, ys.stop - ys.start,
                           fill=False, edgecolor="cyan", linewidth=1.8))
    ax.set_title(f"where: observed, {height} x {width}", fontsize=9)
    ax.set_xlabel(f"window: rows {ys.start}-{ys.stop - 1}, columns {xs.start}-{xs.stop - 1}", fontsize=8)
    _image_grid(grid, scene, styles, window, difference_band, nearest=True)
    fig.suptitle(f"{scene.dataset}: zoom ({ys.stop - ys.start} x {xs.stop - xs.start} pixels of 25 m), test pair "
                 f"{scene.pair[0]} (reference) → {scene.pair[1]} (target)\n{scene.label}", fontsize=11)
    return fig


# --- 6. training history ----------------------------------------------------------------------------

def training_figure(histories: dict[str, pd.DataFrame], styles: dict[str, Style], dataset: str, label: str) -> plt.Figure:
    """Rows = logged metrics (loss first), columns = methods; train solid, validation dashed."""
    metrics = sorted({m for h in histories.values() for m in h["metric"].unique()}, key=lambda m: (m != "loss", m))
    fig, axes = plt.subplots(len(metrics), len(histories), figsize=(4 * len(histories) + 0.5, 3 * len(metrics) + 1),
                             squeeze=False, constrained_layout=True)
    for j, (name, history) in enumerate(histories.items()):
        for i, metric in enumerate(metrics):
            _history_panel(axes[i, j], history[history["metric"] == metric], styles[name], metric)
            axes[i, j].set_title(f"{name} ({styles[name].family})" if i == 0 else "", fontsize=10)
    fig.legend(handles=[Line2D([], [], color="black", ls=ls, label=split) for split, ls in
                        (("train", "-"), ("val", "--"), ("best val epoch", ":"))], loc="outside lower center", ncols=3)
    fig.suptitle(f"{dataset}: training history (validation = held-out dates, test pairs never seen)\n{label}", fontsize=11)
    return fig


def _history_panel(ax: plt.Axes, history: pd.DataFrame, style: Style, metric: str) -> None:
    if history.empty:
        _not_available(ax, "", f"no {metric} logged")
        return
    for split, ls in (("train", "-"), ("val", "--")):
        curve = history[history["split"] == split].sort_values("epoch")
        ax.plot(curve["epoch"], curve["value"], ls=ls, color=style.colour, marker=style.marker, markersize=3)
    val = history[history["split"] == "val"]
    if not val.empty:  # the epoch a checkpoint selection on validation would keep
        lower_is_better = metric not in METRICS or METRICS[metric].lower_is_better  # losses are
        best = val.loc[val["value"].idxmin() if lower_is_better else val["value"].idxmax(), "epoch"]
        ax.axvline(best, ls=":", color="0.3")
    if (history["value"] > 0).all() and metric == "loss":
        ax.set_yscale("log")  # losses fall over orders of magnitude
    ax.set(xlabel="epoch", ylabel=METRICS[metric].axis_label if metric in METRICS else f"{metric} (unitless)")


# --- 7. ablation -------------------------------------------------------------------------------------

ABLATION_METRICS = ("psnr", "sam", "ssim", "ergas", "cc", "rmse")  # the paper tables' order
ABLATION_ORDER = ("depth-1", "depth-2", "depth-3", "multi-scale", "cbam", "multi-scale+cbam", "multi-scale+aff",
                  "multi-scale+cbam+aff", "multi-scale+cbam+aff+multi-loss")
ABLATION_TICKS = {"multi-scale": "MS", "cbam": "CBAM", "aff": "AFF", "multi-loss": "ML"}


def _ablation_tick(variant: str) -> str:
    if variant.startswith("depth-"):
        return f"depth {variant.removeprefix('depth-')}"
    return "+".join(ABLATION_TICKS.get(part, part) for part in variant.split("+"))


def ablation_figure(ablation_scores: pd.DataFrame, published: pd.DataFrame, dataset: str, label: str) -> plt.Figure:
    """Rows = the paper tables' metrics; columns = this study (points per test pair, bar = mean) and published."""
    ours = ablation_scores[(ablation_scores["dataset"] == dataset) & (ablation_scores["band"] == "all")
                           & (ablation_scores["region"] == "all")]
    paper_dataset = get_dataset(dataset).paper
    theirs = published[(published["source"] == "mcbam-gan") & (published["dataset"] == paper_dataset)
                       & published["table"].isin(["table2", "table3", "table4"])]
    order = [v for v in ABLATION_ORDER if v in set(ours["method"]) | set(theirs["method"])]
    order += sorted(set(ours["method"]) - set(order))  # variants of the user's own, after the paper's
    colour = FAMILY_COLOURS["gan"]
    fig, axes = plt.subplots(len(ABLATION_METRICS), 2, figsize=(12, 2.3 * len(ABLATION_METRICS) + 1.2),
                             sharex=True, squeeze=False, constrained_layout=True)
    x = {v: i for i, v in enumerate(order)}
    for row, metric in enumerate(ABLATION_METRICS):
        info = METRICS[metric]
        mine, paper = ours[ours["metric"] == metric], theirs[theirs["metric"] == metric].drop_duplicates("method")
        ax = axes[row, 0]
        ax.scatter(mine["method"].map(x), mine["value"], color=colour, edgecolor="black", linewidth=0.5, s=22, zorder=3)
        means = mine.groupby("method")["value"].mean()
        ax.scatter(means.index.map(x), means.values, marker="_", s=500, color="black", linewidth=2, zorder=4)
        axes[row, 1].scatter(paper["method"].map(x), paper["value"], marker="D", color=colour, edgecolor="black", s=30)
        for j, axis in enumerate(axes[row]):
            axis.set_ylabel(info.axis_label if j == 0 else f"{info.label} ({info.unit})", fontsize=8)
            axis.axvline(2.5, color="0.6", lw=0.8, ls=":")  # Table 2 | Tables 3 and 4
            axis.grid(axis="y", color="0.9")
    axes[0, 0].set_title(f"this study: {dataset} (points = test pairs, bar = mean)", fontsize=10)
    axes[0, 1].set_title(f"published: {PAPER_NAMES[paper_dataset]} (paper tier)", fontsize=10)
    for ax in axes[-1]:
        ax.set_xticks(range(len(order)), [_ablation_tick(v) for v in order], rotation=35, ha="right", fontsize=8)
        ax.set_xlabel("configuration (Table 2: depth | Tables 3-4: modules)")
    fig.suptitle(f"{dataset}: MCBAM-GAN ablation, each metric against configuration\n{label}", fontsize=11)
    return fig


def ablation_figures(workspace, datasets: list[str], profile: str, *, dpi: int = 150) -> list[Path]:
    """``ablation_<dataset>`` for every dataset with ablation scores; stale ones removed otherwise."""
    path = workspace.tables / "ablation_scores.csv"
    scores = read_scores(path) if path.is_file() else pd.DataFrame(columns=SCORES_COLUMNS)
    published, paths = load_published(), []
    for dataset in datasets:
        if (scores["dataset"] == dataset).any():
            fig = ablation_figure(scores, published, dataset, get_dataset(dataset).label(profile))
            paths += _save(fig, workspace.figures, f"ablation_{dataset}", dpi)
        else:
            for suffix in ("png", "pdf"):
                (workspace.figures / suffix / f"ablation_{dataset}.{suffix}").unlink(missing_ok=True)
    return paths


# --- 8. uncertainty of a sampling model ---------------------------------------------------------------


def uncertainty_figure(deciles: pd.DataFrame, method: str, dataset: str, label: str, std_map: np.ndarray,
                       error_map: np.ndarray, band: str, pair: Pair) -> plt.Figure:
    """Left: actual error against predicted std per decile of the std (a line per test pair); right: the
    std and |error| maps of the showcase pair in one band, on one colour scale."""
    colour = FAMILY_COLOURS[get_method(method).family]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4), constrained_layout=True,
                             gridspec_kw={"width_ratios": [1.2, 1, 1]})
    ax = axes[0]
    markers = ["o", "s", "^", "D", "v", "P"]
    for k, ((ref, target), rows) in enumerate(deciles.groupby(["reference_date", "target_date"], sort=True)):
        rows = rows.sort_values("decile")
        ax.plot(rows["std_mean"], rows["rmse"], marker=markers[k % len(markers)], color=colour, lw=1.2,
                label=f"RMSE, {ref} → {target}")
        ax.plot(rows["std_mean"], rows["mae"], marker=markers[k % len(markers)], color=colour, lw=0.8, ls="--",
                alpha=0.6, label=f"MAE, {ref} → {target}")
    top = float(np.nanmax(deciles[["std_mean", "rmse"]].to_numpy())) * 1.05
    ax.plot([0, top], [0, top], color="0.4", ls=":", lw=1, label="error = std (calibrated)")
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="predicted std of the samples, per decile (reflectance, 0-1)",
           ylabel="actual error in the decile (reflectance, 0-1)")
    ax.set_title("error against uncertainty, by decile of the std", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    vmax = float(np.nanpercentile(np.concatenate([std_map[np.isfinite(std_map)], np.abs(error_map[np.isfinite(error_map)])]),
                                  DIFFERENCE_PERCENTILE)) or 0.01
    for ax, image, title in ((axes[1], std_map, f"predicted std, {band}"), (axes[2], np.abs(error_map), f"|error|, {band}")):
        shown = _image(ax, image, cmap="magma", vmin=0, vmax=vmax)
        ax.set_title(f"{title} ({pair[0]} → {pair[1]})", fontsize=10)
    fig.colorbar(shown, ax=axes[1:], shrink=0.8, label=f"{band} reflectance (0-1)")
    fig.suptitle(f"{dataset}: {method} uncertainty from its samples against its actual error\n{label}", fontsize=11)
    return fig


def uncertainty_figures(workspace, dataset: str, methods: list[str], cube: xr.Dataset, pair: Pair, band: str,
                        label: str, dpi: int, seed: int) -> list[Path]:
    """``uncertainty_<dataset>`` for the first method with uncertainty deciles (its run with the study's
    ``seed``); a stale one is removed otherwise."""
    path = workspace.tables / "uncertainty.csv"
    table = pd.read_csv(path, dtype={"reference_date": str, "target_date": str}) if path.is_file() else pd.DataFrame()
    if not table.empty:
        table = table[(table["dataset"] == dataset) & table["method"].isin(methods) & (table["seed"] == seed)]
    rows = table
    if rows.empty:
        for suffix in ("png", "pdf"):
            (workspace.figures / suffix / f"uncertainty_{dataset}.{suffix}").unlink(missing_ok=True)
        return []
    method = rows["method"].iloc[0]
    folder = method_folder(workspace, dataset, method, seed)
    b = band_index(BANDS, band)
    std_map = read_geotiff(folder / uncertainty_name(pair), bands=cube.sizes["band"]).data[b]
    error_map = read_geotiff(folder / prediction_name(pair), bands=cube.sizes["band"]).data[b] - _observed(cube, pair[1])[b]
    fig = uncertainty_figure(rows[rows["method"] == method], method, dataset, label, std_map, error_map, band, pair)
    return _save(fig, workspace.figures, f"uncertainty_{dataset}", dpi)


# --- 9. which differences are real ---------------------------------------------------------------------


def differences_figure(rows: pd.DataFrame, families: dict[str, str], dataset: str, label: str) -> plt.Figure:
    """Forest plot: each method's RMSE difference from temporal-difference with its bootstrap interval,
    one panel per region; filled markers where the interval excludes 0."""
    regions = [r for r in ("all", "changed") if r in set(rows["region"])]
    order = (rows[rows["region"] == regions[0]].sort_values("difference")["method"].tolist())
    fig, axes = plt.subplots(1, len(regions), figsize=(4.6 * len(regions), 0.32 * len(order) + 1.6),
                             sharey=True, squeeze=False)
    for ax, region in zip(axes[0], regions):
        data = rows[rows["region"] == region].set_index("method").reindex(order)
        y = np.arange(len(order))
        for k, (method, row) in enumerate(data.iterrows()):
            colour = FAMILY_COLOURS.get(families.get(method, ""), "#000000")
            ax.plot([row["low"], row["high"]], [k, k], color=colour, lw=2)
            ax.plot(row["difference"], k, "o", color=colour, mfc=colour if row["significant"] else "white", ms=6)
        ax.axvline(0, color="#444444", lw=0.8, ls="--")
        ax.set_yticks(y, order)
        ax.invert_yaxis()
        ax.set_xlabel(f"RMSE difference from {REFERENCE} (reflectance)")
        ax.set_title(f"{region} pixels", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    legend = [Line2D([], [], color=c, lw=2, label=f) for f, c in FAMILY_COLOURS.items()
              if f in {families.get(m) for m in order}]
    fig.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=8, frameon=False)
    level = rows["level"].iloc[0] if "level" in rows else 0.95
    fig.suptitle(f"{dataset}: RMSE difference from {REFERENCE} with {level:.0%} bootstrap intervals "
                 f"(left of 0: better; filled: interval excludes 0)\n{label}", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def differences_figures(workspace, dataset: str, label: str, dpi: int) -> list[Path]:
    """``differences_<dataset>`` from ``differences.csv``; a stale one is removed when there is nothing to draw."""
    path, scores = workspace.tables / "differences.csv", workspace.tables / "scores.csv"
    table = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["dataset", "comparison"])
    rows = table[(table["dataset"] == dataset) & (table["comparison"] == f"vs {REFERENCE}")]
    if rows.empty:
        for suffix in ("png", "pdf"):
            (workspace.figures / suffix / f"differences_{dataset}.{suffix}").unlink(missing_ok=True)
        return []
    families = dict(zip(*pd.read_csv(scores, usecols=["method", "family"]).drop_duplicates().values.T))
    families[REFERENCE] = "reference"
    return _save(differences_figure(rows, families, dataset, label), workspace.figures, f"differences_{dataset}", dpi)


# --- entry point ------------------------------------------------------------------------------------

def figures_study(workspace, datasets: list[str], methods: list[str], profile: str, *, seed: int, dpi: int = 150,
                  crop: dict | None = None, difference_band: str = "nir", pairs: dict | None = None) -> list[Path]:
    """Draw every figure of every dataset into ``reports/figures/{png,pdf}``; return the written paths.

    Maps and training curves show each deep model's run with the study's ``seed``; score figures show every run.
    ``crop`` maps a dataset to a crop region ``{"row", "col", "height", "width"}`` (pixels; default a
    centred square), ``pairs`` a dataset to its showcase test pair ``[reference, target]`` (default
    the first test pair). Every parameter is checked before the first figure is drawn.
    """
    crop, pairs = _per_dataset(crop, "figures.crop", datasets), _per_dataset(pairs, "figures.pairs", datasets)
    band_index(BANDS, difference_band)
    styles = method_styles(methods)
    scores = read_scores(workspace.tables / "scores.csv")
    plans = {ds: _plan(workspace, ds, crop.get(ds), pairs.get(ds), scores, list(styles)) for ds in datasets}
    paths = []
    for dataset, (splits, pair, window) in plans.items():
        paths += _dataset_figures(workspace, dataset, splits, pair, window, styles, scores, get_dataset(dataset).label(profile),
                                  difference_band, dpi, seed)
    return paths + ablation_figures(workspace, datasets, profile, dpi=dpi)


def _plan(workspace, dataset: str, region, pair, scores: pd.DataFrame, methods: list[str]):
    """Check a dataset's parameters cheaply (splits and the cube's header only) before drawing anything."""
    splits = Splits.load(workspace.splits(dataset))
    if not ((scores["dataset"] == dataset) & scores["method"].isin(methods)).any():
        raise InputError(f"{workspace.tables / 'scores.csv'}: no scores of {methods} on {dataset}; "
                         f"run the evaluate stage first")
    path = workspace.cube(dataset)
    if not path.is_file():
        raise InputError(f"{path}: datacube not found; run the preprocess stage first")
    with xr.open_dataset(path, engine="netcdf4", mask_and_scale=False) as header:
        height, width = header.sizes["y"], header.sizes["x"]
    window = crop_window(default_crop(height, width) if region is None else region, height, width, dataset)
    return splits, showcase_pair(splits, pair), window


def _dataset_figures(workspace, dataset, splits, pair, window, styles, scores, label, band, dpi, seed) -> list[Path]:
    cube = open_cube(workspace.cube(dataset))
    ours = scores[(scores["dataset"] == dataset) & scores["method"].isin(list(styles))]
    scene = load_scene(workspace, cube, dataset, list(styles), pair, label, seed)
    folder, paths = workspace.figures, []
    paths += _save(boxplots_figure(ours, styles, dataset, label), folder, f"boxplots_{dataset}", dpi)
    paths += _save(change_figure(ours, styles, dataset, label, changed_shares(cube, splits.test)), folder,
                   f"change_{dataset}", dpi)
    paths += _save(scatter_figure(scene, styles), folder, f"scatter_{dataset}", dpi)
    paths += _save(scene_figure(scene, styles, band), folder, f"scene_{dataset}", dpi)
    paths += _save(crop_figure(scene, styles, window, band), folder, f"crop_{dataset}", dpi)
    paths += uncertainty_figures(workspace, dataset, list(styles), cube, pair, band, label, dpi, seed)
    paths += differences_figures(workspace, dataset, label, dpi)
    histories = {m: h for m in styles
                 if (h := read_history(method_folder(workspace, dataset, m, seed) / "history.csv")) is not None}
    if histories:
        paths += _save(training_figure(histories, {m: styles[m] for m in histories}, dataset, label), folder,
                       f"training_{dataset}", dpi)
    else:  # no stale training figure from an earlier run with trainable methods
        for suffix in ("png", "pdf"):
            (folder / suffix / f"training_{dataset}.{suffix}").unlink(missing_ok=True)
    return paths
