"""Tiled full-scene inference for the fusion models, equal to whole-scene inference where it can be.

A fusion model maps ``(fine_ref, coarse_ref, coarse_target)``, float32 tensors ``(N, bands, H, W)`` on
one fine grid, to a prediction of the same height and width. A whole CIA or LGC scene does not always
fit on the device at once, so :func:`predict_scene` cuts it into windows and stitches the predictions.

Model contract: a :class:`~stfusion.methods.models.base.FusionModel` whose ``traits`` give

- ``receptive_field`` (int): an output pixel does not depend on inputs further than this many
  pixels away, in either axis, including the effect of any padding inside the model.
- ``alignment`` (int): the model's output at a pixel depends on the pixel's position modulo
  ``alignment`` (one 2x down/up-sampling gives 2), so windows must start at multiples of it.
- ``input_statistics`` (bool): True when the output depends on statistics of the whole
  input (instance, layer or switchable normalisation, global attention). Not read: such models are
  tiled the same way, and the caller chooses ``tile`` for them (see below).

Tiling scheme, per axis (rows and columns are planned independently; windows are their product):

1. Window size. An axis shorter than or equal to ``tile`` is one window covering it. A longer axis uses
   windows of ``S = tile - ((extent - tile) mod alignment)`` pixels, so that a window ending at the far
   scene edge still starts at a multiple of ``alignment`` (S has the parity of the extent; it is a
   multiple of the alignment whenever the extent is). All windows have the same shape, so they batch.
2. Core. A window's prediction is trusted only ``margin`` pixels or more away from each of its edges that
   is not a scene edge: there the model's padding saw invented values. At a scene edge the window pads
   exactly as whole-scene inference does, so the core reaches the scene edge. ``margin`` defaults to,
   and may not be smaller than, the model's receptive field.
3. Placement. Origins step by ``stride = S - 2 margin - blend`` rounded down to a multiple of the
   alignment; the last window is shifted inward to end at the scene edge (it overlaps its neighbour more,
   which is harmless). Adjacent cores then overlap by at least ``blend`` pixels, which needs
   ``tile >= 2 margin + blend + 2 alignment - 1`` (``tile > 2 margin + blend`` for alignment 1); this is
   checked even when the scene fits in one window, so that a setting valid for one scene is valid for all.
4. Blending. Inside its core a window's weight ramps linearly over ``blend`` pixels from each core edge
   that is not a scene edge (values ``(k + 0.5) / blend``, so a rising and a falling ramp over the same
   pixels sum to exactly 1), and is 1 beyond; outside the core it is 0. 2-D weights are the product of
   the row and column weights. The scene is ``sum(w * prediction) / sum(w)``; every pixel lies in some
   window's core with a weight > 0, which is checked.

Consequence: for a model with ``input_statistics`` False whose attributes are honest, every core pixel
of every window equals the whole-scene prediction, so the result does not depend on ``tile`` (within
float32 rounding on the CPU; under bf16 autocast or with non-deterministic GPU kernels, within their
precision). Blending then changes nothing; it is there for models whose windows disagree. This is what
the public code got wrong: EDCSTFN and GAN-STFM
replicate-pad at every tile edge and stitch tiles without overlap, SwinSTFM keeps tile centres without
blending, so seams and tile-size dependence appear.

Models with ``input_statistics`` True (GAN-STFM's switchable normalisation, for one): their prediction
depends on the content of each window, and no tiling can reproduce whole-scene inference. The choice for
them is whole-scene inference when the scene fits in one tile (pass ``tile`` >= the scene's larger side;
the result is then exactly the model's forward pass), otherwise large tiles with margins and blending,
which hides the seams but not the dependence. Tiled and whole-scene numbers must never be compared, and
the run record must store the tile size (and margin and blend) used. :func:`predict_scene` treats these
models like any other and emits no warning. A stochastic model (diffusion) is in the same position unless
its noise is a fixed function of the scene position (one noise field per scene, cut like the inputs).

Memory: at most ``batch_size`` windows, and no more than ``batch_pixels`` pixels of them (but always one
window), are on the device at a time. A model's activations grow with the pixels of a batch, not with its
window count: GAN-STFM's paper generator takes about 4.5 GiB per 1024 px window on a CPU in float32, so the
default budget of one such window keeps a 2048 px tile scene from asking for four at once. The host keeps the inputs, one
float32 accumulator of the output's size and one float64 weight sum of the scene's size. Non-finite input
values (nodata) are set to 0 window by window, so the inputs are never copied whole; the caller masks the
output afterwards.

Device: ``device=None`` uses CUDA when available, else the CPU. On CUDA the model and the batches are in
channels_last memory format and, with ``autocast``, the forward pass runs under bf16 autocast; the output
is cast back to float32. On the CPU everything is float32. The model is moved to the device (on CUDA
also to channels_last) and left there; its training flags are restored after the call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from stfusion.errors import ConfigError, InputError
from stfusion.methods.models.base import FusionModel

__all__ = ["Window", "predict_scene", "tile_windows", "window_weights"]

INPUT_NAMES = ("fine_ref", "coarse_ref", "coarse_target")


@dataclass(frozen=True)
class Window:
    """One window of the scene, in scene coordinates.

    ``rows``/``cols`` is what the model sees; ``core_rows``/``core_cols`` is the part of its prediction
    that is used. ``ramp_*`` tell which core edges lie inside the scene (their weight ramps up from 0);
    a core edge on the scene edge has none.
    """

    rows: slice
    cols: slice
    core_rows: slice
    core_cols: slice
    ramp_top: bool
    ramp_bottom: bool
    ramp_left: bool
    ramp_right: bool

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.stop - self.rows.start, self.cols.stop - self.cols.start

    @property
    def core_local(self) -> tuple[slice, slice]:
        """The core as slices of the window's own prediction."""
        return (slice(self.core_rows.start - self.rows.start, self.core_rows.stop - self.rows.start),
                slice(self.core_cols.start - self.cols.start, self.core_cols.stop - self.cols.start))


class _Span(NamedTuple):
    """A window along one axis."""

    start: int
    stop: int
    core_start: int
    core_stop: int
    ramp_low: bool
    ramp_high: bool


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _check_plan(tile: int, margin: int, blend: int, alignment: int) -> None:
    """Refuse windows whose cores could not overlap by ``blend`` with an aligned stride."""
    for name, value, minimum in (("tile", tile, 1), ("margin", margin, 0), ("blend", blend, 0),
                                 ("alignment", alignment, 1)):
        _check_int(name, value, minimum)
    # The stride must be >= alignment after the window shrinks by up to alignment - 1 for parity.
    needed = 2 * margin + blend + 2 * alignment - 1
    if tile < needed:
        raise ConfigError(
            f"tile must be > 2*margin + blend{' + 2*(alignment-1)' if alignment > 1 else ''} so that window "
            f"cores overlap; got tile={tile}, margin={margin}, blend={blend}, alignment={alignment}: "
            f"use tile >= {needed} or a smaller blend")


def _axis_spans(extent: int, tile: int, margin: int, blend: int, alignment: int) -> list[_Span]:
    """Plan the windows along one axis (module docstring, steps 1-3)."""
    if extent <= tile:
        return [_Span(0, extent, 0, extent, False, False)]
    size = tile - (extent - tile) % alignment
    stride = (size - 2 * margin - blend) // alignment * alignment
    starts = list(range(0, extent - size, stride)) + [extent - size]
    spans = []
    for start in starts:
        stop = start + size
        low, high = start > 0, stop < extent
        spans.append(_Span(start, stop, start + margin * low, stop - margin * high, low, high))
    return spans


def tile_windows(height: int, width: int, *, tile: int, margin: int, blend: int, alignment: int = 1) -> list[Window]:
    """Windows covering a ``height`` x ``width`` scene, row-major (module docstring, tiling scheme)."""
    _check_int("height", height, 1)
    _check_int("width", width, 1)
    _check_plan(tile, margin, blend, alignment)
    rows = _axis_spans(height, tile, margin, blend, alignment)
    cols = _axis_spans(width, tile, margin, blend, alignment)
    return [Window(slice(r.start, r.stop), slice(c.start, c.stop), slice(r.core_start, r.core_stop),
                   slice(c.core_start, c.core_stop), r.ramp_low, r.ramp_high, c.ramp_low, c.ramp_high)
            for r in rows for c in cols]


def _profile(size: int, core: slice, blend: int, ramp_low: bool, ramp_high: bool) -> np.ndarray:
    """1-D weights of a window: 0 outside the core, linear ramps at inner core edges, 1 elsewhere."""
    weights = np.zeros(size, dtype=np.float64)
    length = core.stop - core.start
    inside = np.ones(length)
    if blend > 0:
        ramp = (np.arange(length) + 0.5) / blend  # (k + 0.5) / blend: rising + falling ramps sum to 1
        if ramp_low:
            inside = np.minimum(inside, ramp)
        if ramp_high:
            inside = np.minimum(inside, ramp[::-1])
    weights[core] = inside
    return weights


def window_weights(window: Window, blend: int) -> np.ndarray:
    """Blending weights over the whole window, float32 (h, w): 0 in the margins, ramps, 1 inside."""
    _check_int("blend", blend, 0)
    core_rows, core_cols = window.core_local
    height, width = window.shape
    rows = _profile(height, core_rows, blend, window.ramp_top, window.ramp_bottom)
    cols = _profile(width, core_cols, blend, window.ramp_left, window.ramp_right)
    return np.outer(rows, cols).astype(np.float32)


def _model_geometry(model: nn.Module) -> tuple[int, int]:
    """The model's receptive field and alignment (checked when its traits were made)."""
    if not isinstance(model, FusionModel):
        raise ConfigError(f"model {type(model).__name__} is not a FusionModel: predict_scene needs its traits "
                          "(receptive field: the radius in pixels beyond which an input cannot affect an output)")
    return model.traits.receptive_field, model.traits.alignment


def _check_inputs(arrays: Sequence) -> tuple[int, int, int]:
    """All three inputs: 3-D float arrays (bands, H, W) of one shape. Returns that shape."""
    for name, array in zip(INPUT_NAMES, arrays, strict=True):
        if not isinstance(array, np.ndarray) or array.ndim != 3:
            shape = getattr(array, "shape", type(array).__name__)
            raise InputError(f"{name} must be a 3-D numpy array (bands, H, W); got {shape}")
        if not np.issubdtype(array.dtype, np.floating):
            raise InputError(f"{name} must hold float reflectance (bands, H, W) float32; got dtype {array.dtype}")
    shape = arrays[0].shape
    for name, array in zip(INPUT_NAMES[1:], arrays[1:], strict=True):
        if array.shape != shape:
            raise InputError(f"{name} has shape {array.shape} but fine_ref has {shape}; all three inputs must "
                             "be (bands, H, W) on the same fine grid")
    if min(shape) == 0:
        raise InputError(f"the inputs are empty: shape {shape}, expected (bands, H, W) with all sizes > 0")
    return shape


def resolve_device(device, key: str = "device") -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{key}: expected a torch device such as cpu, cuda or cuda:1, got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}: {device!r} asked for CUDA, but torch finds no CUDA device here")
    return resolved


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """model.eval() for the call; restores every submodule's own flag (they may differ)."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _batch_tensor(arrays: Sequence[np.ndarray], windows: Sequence[Window], device: torch.device,
                  memory_format: torch.memory_format) -> list[torch.Tensor]:
    """One (N, bands, h, w) float32 tensor per input; nodata set to 0 here, on the copy."""
    tensors = []
    for array in arrays:
        batch = np.stack([array[:, w.rows, w.cols] for w in windows]).astype(np.float32, copy=False)
        np.nan_to_num(batch, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        tensor = torch.from_numpy(batch).to(device)
        tensors.append(tensor.contiguous(memory_format=memory_format))
    return tensors


def _forward(model: nn.Module, inputs: list[torch.Tensor], use_amp: bool,
             extra: dict[str, torch.Tensor] | None = None) -> np.ndarray:
    device_type = inputs[0].device.type
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=use_amp):
        output = model(*inputs, **(extra or {}))
    if output.ndim != 4 or output.shape[0] != inputs[0].shape[0] or output.shape[2:] != inputs[0].shape[2:]:
        raise ConfigError(f"model {type(model).__name__} returned shape {tuple(output.shape)} for inputs of shape "
                          f"{tuple(inputs[0].shape)}; expected (N, bands, H, W) with the inputs' N, H and W")
    return output.float().cpu().numpy()


def _accumulate(total: np.ndarray, weight_sum: np.ndarray, prediction: np.ndarray, window: Window,
                blend: int) -> None:
    """Add one window's weighted core; margins are skipped, not multiplied by 0 (a NaN there stays out)."""
    local = window.core_local
    weights = window_weights(window, blend)[local]
    total[:, window.core_rows, window.core_cols] += prediction[:, local[0], local[1]] * weights
    weight_sum[window.core_rows, window.core_cols] += weights


BATCH_PIXELS = 1024 * 1024


def _batches(windows: list[Window], batch_size: int, batch_pixels: int) -> Iterator[list[Window]]:
    """Groups of up to ``batch_size`` windows holding at most ``batch_pixels`` pixels (windows share a shape)."""
    height, width = windows[0].shape
    size = max(1, min(batch_size, batch_pixels // (height * width)))
    for start in range(0, len(windows), size):
        yield windows[start:start + size]


def predict_scene(model: nn.Module, fine_ref: np.ndarray, coarse_ref: np.ndarray, coarse_target: np.ndarray, *,
                  tile: int = 256, margin: int | None = None, blend: int = 16, batch_size: int = 4,
                  batch_pixels: int = BATCH_PIXELS, device=None,
                  autocast: bool = True, progress: bool = False,
                  extra_inputs: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Predict a whole scene window by window; float32 (bands_out, H, W). See the module docstring.

    Inputs are float reflectance (bands, H, W) on one fine grid, NaN for nodata (set to 0 for the model;
    mask the output afterwards). ``margin`` defaults to ``model.receptive_field`` and may not be smaller.
    ``extra_inputs``: more (channels, H, W) arrays on the same grid, cut like the inputs and passed to the
    model as keyword arguments (a diffusion model's noise field, so that tiles share one per scene).
    """
    arrays = (fine_ref, coarse_ref, coarse_target)
    _, height, width = _check_inputs(arrays)
    extra_inputs = dict(extra_inputs or {})
    for name, array in extra_inputs.items():
        if not isinstance(array, np.ndarray) or array.ndim != 3 or array.shape[1:] != (height, width):
            raise InputError(f"extra input {name!r} must be a (channels, {height}, {width}) array on the inputs' "
                             f"grid; got {getattr(array, 'shape', type(array).__name__)}")
    receptive_field, alignment = _model_geometry(model)
    margin = receptive_field if margin is None else _check_int("margin", margin, 0)
    if margin < receptive_field:
        raise ConfigError(f"margin={margin} is smaller than the model's receptive field ({receptive_field} px); "
                          "window edges would leak into the result: use margin >= receptive_field or leave it None")
    batch_size = _check_int("batch_size", batch_size, 1)
    batch_pixels = _check_int("batch_pixels", batch_pixels, 1)
    windows = tile_windows(height, width, tile=tile, margin=margin, blend=blend, alignment=alignment)
    device = resolve_device(device)
    on_cuda = device.type == "cuda"
    memory_format = torch.channels_last if on_cuda else torch.contiguous_format
    model.to(device)
    if on_cuda:  # only then: channels_last on the CPU would just reorder the caller's weights for nothing
        model.to(memory_format=memory_format)
    return _run(model, arrays, windows, blend=blend, batch_size=batch_size, batch_pixels=batch_pixels,
                device=device, memory_format=memory_format, use_amp=on_cuda and autocast, progress=progress,
                extra=extra_inputs)


def _run(model: nn.Module, arrays, windows: list[Window], *, blend: int, batch_size: int, batch_pixels: int,
         device: torch.device, memory_format: torch.memory_format, use_amp: bool, progress: bool,
         extra: dict[str, np.ndarray]) -> np.ndarray:
    """The window loop: forward passes in batches, weighted accumulation, normalisation."""
    height, width = arrays[0].shape[1:]
    total = weight_sum = None
    with _eval_mode(model), torch.inference_mode(), tqdm(total=len(windows), disable=not progress,
                                                         unit="window", desc="predict_scene") as bar:
        for group in _batches(windows, batch_size, batch_pixels):
            extra_batch = dict(zip(extra, _batch_tensor(list(extra.values()), group, device, memory_format)))
            predictions = _forward(model, _batch_tensor(arrays, group, device, memory_format), use_amp, extra_batch)
            if total is None:  # the output band count is known only now
                total = np.zeros((predictions.shape[1], height, width), dtype=np.float32)
                weight_sum = np.zeros((height, width), dtype=np.float64)
            for window, prediction in zip(group, predictions, strict=True):
                _accumulate(total, weight_sum, prediction, window, blend)
            bar.update(len(group))
    if not (weight_sum > 0).all():
        raise AssertionError("tiling left pixels with no weight; tile_windows is broken")
    # In place, through numpy's buffered casting: no float64 copy of the whole output.
    np.divide(total, weight_sum, out=total, casting="unsafe")
    return total
