"""How methods look in every figure, and how figures are saved: shared by the study's figures and
the robustness stage, so an edit to one kind of figure does not rerun the other's stage.

Methods of one family share the family's colour (:data:`stfusion.methods.registry.FAMILY_COLOURS`)
and are told apart by marker (points) or hatch (bars).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: DVC, CI and papermill have no display

import matplotlib.pyplot as plt
from PIL import Image

from stfusion.io import atomic_path
from stfusion.methods.registry import FAMILY_COLOURS, get_method

PNG_WIDTH = 1400  # pixels: the committed PNGs are for screens
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # methods of one family, in the order given
HATCHES = ("", "//", "..", "xx", "\\\\", "oo", "--", "++")


@dataclass(frozen=True)
class Style:
    name: str
    family: str
    colour: str
    marker: str
    hatch: str


def method_styles(methods: list[str]) -> dict[str, Style]:
    """Style of every method, ordered by family (as in FAMILY_COLOURS), then as given."""
    registered = [get_method(m) for m in dict.fromkeys(methods)]
    ordered = sorted(registered, key=lambda m: list(FAMILY_COLOURS).index(m.family))
    styles, seen = {}, {}
    for method in ordered:
        k = seen[method.family] = seen.get(method.family, -1) + 1
        styles[method.name] = Style(method.name, method.family, method.colour,
                                    MARKERS[k % len(MARKERS)], HATCHES[k % len(HATCHES)])
    return styles


def save_png(fig: plt.Figure, path: Path, dpi: int) -> None:
    """A PNG for screens: at most ``PNG_WIDTH`` pixels wide, in 256 colours (the figures are committed
    to git at every study run; the PDF keeps the full resolution)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=min(dpi, PNG_WIDTH / fig.get_figwidth()))
    image = Image.open(buffer).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", optimize=True)
