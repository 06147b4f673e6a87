"""Methods that need no training: the reference predictors, STARFM and FSDAF."""

from __future__ import annotations

import numpy as np

from stfusion.errors import InputError


def check_window(window, *, key: str = "window") -> int:
    """A search-window side in fine pixels: an odd integer >= 3 (so the window has a centre)."""
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 3 or window % 2 == 0:
        raise InputError(f"{key}: expected an odd number of pixels >= 3, got {window!r}")
    return int(window)
