"""Figures for people: labelled axes, units, one colour per method family.

Images are shown as true colour (red, green, blue) with a fixed reflectance stretch, so the same
surface looks the same in every panel; errors use one symmetric diverging scale per figure.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: DVC, CI and papermill have no display

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from stfusion import REFLECTANCE_SCALE
from stfusion.data.datacube import date_index, open_cube, reflectance
from stfusion.data.raster import read_geotiff
from stfusion.data.splits import Splits
from stfusion.io import atomic_path
from stfusion.methods import get_method
from stfusion.predict import prediction_name

TRUE_COLOUR_MAX = 0.25  # reflectance shown as white: keeps fields and soil readable, clips clouds


def true_colour(image: np.ndarray, vmax: float = TRUE_COLOUR_MAX) -> np.ndarray:
    """(band, y, x) int16 reflectance x 10000 -> (y, x, 3) RGB in [0, 1] from bands red, green, blue."""
    rgb = np.asarray(image[[2, 1, 0]], dtype=np.float32) / REFLECTANCE_SCALE
    return np.clip(np.moveaxis(rgb, 0, -1) / vmax, 0, 1)


def _save(fig: plt.Figure, folder, name: str, dpi: int) -> list:
    """Save ``fig`` as ``folder/png/name.png`` and ``folder/pdf/name.pdf`` (DVC shows the PNGs as plots)."""
    paths = []
    for suffix in (".png", ".pdf"):
        path = folder / suffix[1:] / f"{name}{suffix}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=dpi)
        paths.append(path)
    plt.close(fig)
    return paths


def _panel(ax: plt.Axes, image: np.ndarray, title: str, **imshow) -> matplotlib.image.AxesImage:
    """Show one image on ``ax`` with a small title and no axes; return the image for a colour bar."""
    shown = ax.imshow(image, **imshow)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return shown


def overview_figure(cube, splits: Splits, predictions: dict[str, np.ndarray], scores: pd.DataFrame, label: str) -> plt.Figure:
    """Reference, observation, predictions, their NIR errors and the RMSE per band of one dataset."""
    pair = splits.test[0]
    ref, target = date_index(cube, pair[0]), date_index(cube, pair[1])
    observed = reflectance(cube["fine"][target].values)
    n = len(predictions)
    fig = plt.figure(figsize=(3.2 * (n + 2), 9.2), constrained_layout=True)
    grid = fig.add_gridspec(3, n + 2, height_ratios=[1, 1, 0.9])
    panels = [(f"reference fine · {pair[0]}", cube["fine"][ref].values), (f"observed fine · {pair[1]}", cube["fine"][target].values)]
    panels += [(f"{name} · {pair[1]}", np.nan_to_num(p) * REFLECTANCE_SCALE) for name, p in predictions.items()]
    for col, (title, image) in enumerate(panels):
        _panel(fig.add_subplot(grid[0, col]), true_colour(image), title)
    _panel(fig.add_subplot(grid[1, 0]), true_colour(cube["coarse"][target].values), f"coarse input · {pair[1]}")
    if "cover" in cube:  # synthetic truth: where the land cover changed between the two dates
        changed = cube["cover"][ref].values != cube["cover"][target].values
        _panel(fig.add_subplot(grid[1, 1]), changed, f"true land-cover change ({changed.mean():.1%} of pixels)",
               cmap="Greys", vmin=0, vmax=1)
    errors = {name: p[3] - observed[3] for name, p in predictions.items()}
    limit = max(float(np.nanpercentile(np.abs(e), 99)) for e in errors.values()) or 0.01
    error_axes = [fig.add_subplot(grid[1, col]) for col in range(2, n + 2)]
    for ax, (name, error) in zip(error_axes, errors.items()):
        shown = _panel(ax, error, f"{name}: NIR error", cmap="RdBu_r", vmin=-limit, vmax=limit)
    fig.colorbar(shown, ax=error_axes, location="right", shrink=0.9, label="predicted − observed NIR\n(reflectance, unitless)")
    ax = fig.add_subplot(grid[2, :])
    per_band = scores[(scores["band"] != "all") & (scores["metric"] == "rmse")]
    palette = {m: get_method(m).colour for m in per_band["method"].unique()}
    sns.barplot(per_band, x="band", y="value", hue="method", palette=palette, errorbar=("pi", 100), ax=ax)
    hatches = ["", "//", "..", "xx", "\\\\", "oo"]
    for bars, hatch in zip(ax.containers, hatches):
        for bar in bars:
            bar.set_hatch(hatch)  # methods of one family share a colour; hatches tell them apart
    ax.set(xlabel="band", ylabel="RMSE (reflectance, unitless)", title="RMSE per band over test pairs (bars: mean; whiskers: range)")
    legend = ax.legend(title="method", fontsize=8)
    for handle, hatch in zip(legend.legend_handles, hatches):
        handle.set_hatch(hatch)
    fig.suptitle(f"{splits.dataset}: first test pair {pair[0]} → {pair[1]}\n{label}", fontsize=11)
    return fig


def figures_study(workspace, datasets: list[str], methods: list[str], profile: str, *, dpi: int = 150) -> list:
    """Draw one overview figure per dataset into ``reports/figures/png`` and ``reports/figures/pdf``."""
    from stfusion.report import study_label

    scores = pd.read_csv(workspace.tables / "scores.csv")
    paths = []
    for dataset in datasets:
        cube = open_cube(workspace.cube(dataset))
        splits = Splits.load(workspace.splits(dataset))
        pair = splits.test[0]
        predictions = {m: read_geotiff(workspace.predictions(dataset, m) / prediction_name(pair)).data for m in methods}
        fig = overview_figure(cube, splits, predictions, scores[scores["dataset"] == dataset], study_label(dataset, profile))
        paths += _save(fig, workspace.figures, f"overview_{dataset}", dpi)
    return paths
