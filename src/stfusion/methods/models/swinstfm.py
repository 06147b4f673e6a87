"""SwinSTFM (Chen et al. 2022, doi:10.1109/TGRS.2022.3182809): Swin Transformer encoders and a
cross-attention decoder that applies the coarse change to the fine reference's features.

Written from the public code's architecture (not copied); it takes any input size, with padded tokens
masked out of attention. docs/methods/swinstfm.md gives the architecture and the choices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stfusion.errors import ConfigError
from stfusion.methods.models.base import FusionModel, ModelTraits
from stfusion.methods.models.layers import check_positive_int, crop, pad_to_multiple

__all__ = ["CrossAttentionLayer", "SwinEncoder", "SwinSTFM", "SwinStage", "WindowAttention"]

MASKED = -100.0  # added to the logits of pairs that may not attend (the Swin convention; exp(-100) ~ 0)


# --------------------------------------------------------------------------- windows and masks


def _window_plan(size: int, window: int, shifted: bool) -> tuple[int, int]:
    """(window, shift) along one axis: the window shrinks to a grid no larger than it, unshifted."""
    if size <= window:
        return size, 0
    return window, window // 2 if shifted else 0


def _partition(x: Tensor, wh: int, ww: int) -> Tensor:
    """(N, H, W, C) -> (N * windows, wh * ww, C); H, W multiples of wh, ww."""
    n, h, w, c = x.shape
    x = x.view(n, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def _take(tokens: Tensor, index: Tensor, pad: bool) -> Tensor:
    """(N, T, C) tokens at ``index`` -> (N, len(index), C); with ``pad``, index T picks a zero token."""
    n, t, c = tokens.shape
    if pad:
        tokens, t = F.pad(tokens, (0, 0, 0, 1)), t + 1
    rows = (index[None] + torch.arange(n, device=index.device)[:, None] * t).flatten()
    return tokens.reshape(n * t, c).index_select(0, rows).view(n, -1, c)


class _TokenPermutation(torch.autograd.Function):
    """Tokens gathered by a permutation (plus padding); the gradient is gathered back by the inverse.

    One copy each way, where pad, roll and window partition make three or four (docs/performance.md).
    """

    @staticmethod
    def forward(ctx, tokens: Tensor, index: Tensor, inverse: Tensor, pad: bool, pad_inverse: bool) -> Tensor:
        ctx.save_for_backward(inverse)
        ctx.pad_inverse = pad_inverse
        return _take(tokens, index, pad)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (inverse,) = ctx.saved_tensors
        return _take(grad, inverse, ctx.pad_inverse), None, None, None, None


class WindowGeometry:
    """Padding, shift and attention mask of one block on one token grid (built once per forward)."""

    def __init__(self, h: int, w: int, window: int, shifted: bool, device: torch.device):
        self.h, self.w = h, w
        self.wh, self.sh = _window_plan(h, window, shifted)
        self.ww, self.sw = _window_plan(w, window, shifted)
        self.hp, self.wp = h + (-h) % self.wh, w + (-w) % self.ww
        self.padded = (self.hp, self.wp) != (h, w)
        self.order, self.position = self._token_order(device)
        self.mask = self._mask(device)

    def _token_order(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """Window order -> grid token (h * w for padding), and grid token -> window order.

        The window order is that of pad, cyclic shift by (-sh, -sw), then partition.
        """
        rows = (torch.arange(self.hp, device=device) + self.sh) % self.hp
        cols = (torch.arange(self.wp, device=device) + self.sw) % self.wp
        inside = (rows[:, None] < self.h) & (cols[None] < self.w)
        grid = torch.where(inside, rows[:, None] * self.w + cols[None], self.h * self.w)
        order = _partition(grid[None, :, :, None], self.wh, self.ww).flatten()
        # The inverse by arithmetic, not by indexing: nothing waits for the GPU, nothing is written twice.
        i = (torch.arange(self.h, device=device) - self.sh) % self.hp  # rows and columns in the shifted frame
        j = (torch.arange(self.w, device=device) - self.sw) % self.wp
        window = (i[:, None] // self.wh) * (self.wp // self.ww) + j[None] // self.ww
        position = window * (self.wh * self.ww) + (i[:, None] % self.wh) * self.ww + j[None] % self.ww
        return order, position.flatten()

    def _mask(self, device: torch.device) -> Tensor | None:
        """(windows, L, L) additive mask: 0 where a query may attend a key, MASKED elsewhere, or None."""
        if not (self.padded or self.sh or self.sw):
            return None
        region = torch.zeros(self.hp, self.wp, device=device)
        for k, rows in enumerate(self._bands(self.hp, self.wh, self.sh)):
            for j, cols in enumerate(self._bands(self.wp, self.ww, self.sw)):
                region[rows, cols] = k * 3 + j
        # The regions live in the rolled frame, like the features they mask; a key is valid unless padding.
        region = _partition(region[None, :, :, None], self.wh, self.ww)[..., 0]  # (windows, L)
        valid = (self.order < self.h * self.w).view(region.shape)
        allowed = (region[:, :, None] == region[:, None, :]) & valid[:, None, :]
        return torch.where(allowed, 0.0, MASKED)

    @staticmethod
    def _bands(size: int, window: int, shift: int) -> list[slice]:
        """The regions that a cyclic shift brings together (the Swin mask), along one axis."""
        if not shift:
            return [slice(0, size)]
        return [slice(0, size - window), slice(size - window, size - shift), slice(size - shift, size)]

    def split(self, x: Tensor) -> Tensor:
        """(N, H, W, C) -> windows (N * windows, L, C): pad, roll, partition, as one gather."""
        n, c = x.shape[0], x.shape[-1]
        windows = _TokenPermutation.apply(x.reshape(n, self.h * self.w, c), self.order, self.position,
                                          self.padded, False)
        return windows.view(-1, self.wh * self.ww, c)

    def join(self, windows: Tensor, n: int) -> Tensor:
        """Inverse of :meth:`split`: (N * windows, L, C) -> (N, H, W, C)."""
        c = windows.shape[-1]
        x = _TokenPermutation.apply(windows.reshape(n, -1, c), self.position, self.order,
                                    False, self.padded)
        return x.view(n, self.h, self.w, c)

    def masked(self, logits: Tensor) -> Tensor:
        """Add the mask to (N * windows, heads, L, L) logits."""
        if self.mask is None:
            return logits
        windows = self.mask.shape[0]
        logits = logits.view(-1, windows, *logits.shape[1:]) + self.mask[None, :, None].to(logits.dtype)
        return logits.flatten(0, 1)


Geometries = dict[tuple[int, int, int, bool], WindowGeometry]
"""The geometries of one forward pass by (h, w, window, shifted): its 57 block calls at the paper tier share
9 (4 grids x 2 shifts, and the bottom's)."""


def window_geometry(geometries: Geometries | None, h: int, w: int, window: int, shifted: bool,
                    device: torch.device) -> WindowGeometry:
    """The pass's geometry for this grid and shift, built on first use (None: a new one)."""
    if geometries is None:
        return WindowGeometry(h, w, window, shifted, device)
    key = (h, w, window, shifted)
    if key not in geometries:
        geometries[key] = WindowGeometry(h, w, window, shifted, device)
    return geometries[key]


class RelativePositionBias(nn.Module):
    """A learned bias per head and relative offset inside a window (Swin), for any window up to ``window``."""

    def __init__(self, window: int, heads: int):
        super().__init__()
        self.window = window
        self.table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.table, std=0.02)

    def forward(self, wh: int, ww: int) -> Tensor:
        """(heads, L, L) for a wh x ww window."""
        device = self.table.device  # built there: a copy from the host would wait for the GPU
        ys, xs = torch.meshgrid(torch.arange(wh, device=device), torch.arange(ww, device=device), indexing="ij")
        coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, L)
        rel = coords[:, :, None] - coords[:, None, :] + self.window - 1
        return self.table[rel[0] * (2 * self.window - 1) + rel[1]].permute(2, 0, 1)


# --------------------------------------------------------------------------- Swin blocks


def _heads(dim: int, head_dim: int) -> int:
    return max(1, dim // head_dim)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with relative position bias."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.bias = RelativePositionBias(window, heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, geometry: WindowGeometry) -> Tensor:
        b, length, c = x.shape
        # Unbound along the 3, the gradients stack straight back into the linear's layout (no extra copy).
        q, k, v = (t.transpose(1, 2) for t in self.qkv(x).view(b, length, 3, self.heads, c // self.heads).unbind(2))
        logits = (q * self.scale) @ k.transpose(-2, -1) + self.bias(geometry.wh, geometry.ww).to(q.dtype)
        attention = geometry.masked(logits).softmax(-1)
        return self.proj((attention @ v).transpose(1, 2).reshape(b, length, c))


def _mlp(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))  # hidden = dim, as the public code


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shifted: bool):
        super().__init__()
        self.window, self.shifted = window, shifted
        self.norm1, self.attention = nn.LayerNorm(dim), WindowAttention(dim, heads, window)
        self.norm2, self.mlp = nn.LayerNorm(dim), _mlp(dim)

    def forward(self, x: Tensor, geometries: Geometries | None = None) -> Tensor:
        """x: (N, H, W, C)."""
        geometry = window_geometry(geometries, x.shape[1], x.shape[2], self.window, self.shifted, x.device)
        windows = self.attention(geometry.split(self.norm1(x)), geometry)
        x = x + geometry.join(windows, x.shape[0])
        return x + self.mlp(self.norm2(x))


class SwinStage(nn.Module):
    """``depth`` Swin blocks, every second one shifted."""

    def __init__(self, dim: int, depth: int, heads: int, window: int):
        super().__init__()
        self.blocks = nn.ModuleList(SwinBlock(dim, heads, window, shifted=i % 2 == 1) for i in range(depth))

    def forward(self, x: Tensor, geometries: Geometries | None = None) -> Tensor:
        for block in self.blocks:
            x = block(x, geometries)
        return x


class PatchMerging(nn.Module):
    """2x2 neighbouring tokens concatenated, LayerNorm, linear (no bias): half the grid, ``out_dim`` wide."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm, self.reduction = nn.LayerNorm(4 * dim), nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class SwinEncoder(nn.Module):
    """Patch embedding and four Swin stages with merging; returns five (N, H, W, C) feature maps."""

    def __init__(self, bands: int, embed_dim: int, depths: Sequence[int], head_dim: int, window: int):
        super().__init__()
        self.embed = nn.Conv2d(bands, embed_dim, 2, stride=2)
        self.embed_norm = nn.LayerNorm(embed_dim)
        dims = [embed_dim * 2**i for i in range(len(depths))]
        self.stages = nn.ModuleList(SwinStage(d, n, _heads(d, head_dim), window) for d, n in zip(dims, depths))
        outs = dims[1:] + dims[-1:]  # the last merging keeps the width
        self.merges = nn.ModuleList(PatchMerging(d, o) for d, o in zip(dims, outs))

    def forward(self, x: Tensor, geometries: Geometries | None = None) -> list[Tensor]:
        x = self.embed_norm(self.embed(x).permute(0, 2, 3, 1))
        features = []
        for stage, merge in zip(self.stages, self.merges):
            x = stage(x, geometries)
            features.append(x)
            x = merge(x)
        return features + [x]


# --------------------------------------------------------------------------- cross-attention decoder


class ChangeAttention(nn.Module):
    """The two-map window cross-attention: where C1 resembles F1 and C2, carry the C2 - C1 change."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.q, self.k, self.q2, self.k2, self.v = (nn.Linear(dim, dim) for _ in range(5))
        self.bias, self.bias2 = RelativePositionBias(window, heads), RelativePositionBias(window, heads)
        self.proj = nn.Linear(dim, dim)

    def _split_heads(self, x: Tensor) -> Tensor:
        b, length, c = x.shape
        return x.view(b, length, self.heads, c // self.heads).transpose(1, 2)

    def _map(self, q: Tensor, k: Tensor, bias: RelativePositionBias, geometry: WindowGeometry) -> Tensor:
        logits = (self._split_heads(q) * self.scale) @ self._split_heads(k).transpose(-2, -1)
        return geometry.masked(logits + bias(geometry.wh, geometry.ww).to(logits.dtype)).softmax(-1)

    def forward(self, coarse_ref: Tensor, fine_ref: Tensor, coarse_target: Tensor, change: Tensor,
                geometry: WindowGeometry) -> Tensor:
        attention = self._map(self.q(coarse_ref), self.k(fine_ref), self.bias, geometry)
        attention = attention * self._map(self.q2(coarse_ref), self.k2(coarse_target), self.bias2, geometry) + 1e-6
        attention = attention / attention.sum(-1, keepdim=True)
        out = attention @ self._split_heads(self.v(change))
        return self.proj(out.transpose(1, 2).flatten(2))


class CrossAttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shifted: bool):
        super().__init__()
        self.window, self.shifted = window, shifted
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(4))
        self.attention = ChangeAttention(dim, heads, window)
        self.norm_mlp, self.mlp = nn.LayerNorm(dim), _mlp(dim)

    def forward(self, coarse_ref: Tensor, fine_ref: Tensor, coarse_target: Tensor, change: Tensor,
                geometries: Geometries | None = None) -> Tensor:
        n, h, w, _ = change.shape
        geometry = window_geometry(geometries, h, w, self.window, self.shifted, change.device)
        inputs = [geometry.split(norm(x)) for norm, x in zip(self.norms, (coarse_ref, fine_ref, coarse_target, change))]
        change = change + geometry.join(self.attention(*inputs, geometry), n)
        return change + self.mlp(self.norm_mlp(change))


class CrossAttentionLayer(nn.Module):
    """``depth`` cross-attention blocks on the change features; the result is added to the F1 features."""

    def __init__(self, dim: int, depth: int, heads: int, window: int):
        super().__init__()
        self.blocks = nn.ModuleList(CrossAttentionBlock(dim, heads, window, i % 2 == 1) for i in range(depth))

    def forward(self, coarse_ref: Tensor, fine_ref: Tensor, coarse_target: Tensor,
                geometries: Geometries | None = None) -> Tensor:
        change = coarse_target - coarse_ref
        for block in self.blocks:
            change = block(coarse_ref, fine_ref, coarse_target, change, geometries)
        return fine_ref + change


def _upsample(in_dim: int) -> nn.Sequential:
    """3x3 conv to 4x the width, PixelShuffle(2): twice the resolution at the same width."""
    return nn.Sequential(nn.Conv2d(in_dim, 4 * in_dim, 3, padding=1), nn.PixelShuffle(2))


def _channels_last(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1)


def _channels_first(x: Tensor, weights: int = 0) -> Tensor:
    """(N, H, W, C) -> (N, C, H, W): a view with channels-last strides, or a contiguous copy where a conv's
    ``weights`` outnumber the activations (then the CPU's conv keeps its weights' layout; docs/performance.md)."""
    x = x.permute(0, 3, 1, 2)
    return x.contiguous() if weights > x.numel() else x


class UpLevel(nn.Module):
    """Up-sample the coarser output, fuse with the level's C2 features and change attention, refine."""

    def __init__(self, in_dim: int, level_dim: int, out_dim: int, depth: int, head_dim: int, window: int):
        super().__init__()
        self.upsample = _upsample(in_dim)
        self.cross = CrossAttentionLayer(level_dim, 2, _heads(level_dim, head_dim), window)
        self.fuse = nn.Linear(2 * level_dim + in_dim, out_dim)
        self.refine = SwinStage(out_dim, depth, _heads(out_dim, head_dim), window)

    def forward(self, x: Tensor, coarse_ref: Tensor, fine_ref: Tensor, coarse_target: Tensor,
                geometries: Geometries | None = None) -> Tensor:
        up = _channels_last(self.upsample(_channels_first(x, self.upsample[0].weight.numel())))
        attended = self.cross(coarse_ref, fine_ref, coarse_target, geometries)
        return self.refine(self.fuse(torch.cat([coarse_target, attended, up], dim=-1)), geometries)


class SwinSTFM(FusionModel):
    """SwinSTFM generator: ``forward(fine_ref, coarse_ref, coarse_target) -> fine_target`` (N, B, H, W).

    ``embed_dim``, ``depths``, ``window``, ``head_dim``: the encoders (see the module docstring);
    ``decoder_depths``: the Swin stages after each up-sampling, bottom first; ``reference_skip``: add F1
    to the output (choice 3).
    """

    PATCH = 2

    def __init__(self, bands: int = 6, embed_dim: int = 64, depths: Sequence[int] = (2, 2, 6, 2), window: int = 8,
                 head_dim: int = 32, decoder_depths: Sequence[int] = (2, 6, 2, 2), reference_skip: bool = False):
        super().__init__()
        bands, embed_dim = check_positive_int("bands", bands), check_positive_int("embed_dim", embed_dim)
        window, head_dim = check_positive_int("window", window), check_positive_int("head_dim", head_dim)
        depths = self._depths("depths", depths)
        decoder_depths = self._depths("decoder_depths", decoder_depths)
        if len(depths) != 4 or len(decoder_depths) != 4:
            raise ConfigError(f"depths and decoder_depths must have 4 entries (four Swin stages), got {depths} "
                              f"and {decoder_depths}")
        if not isinstance(reference_skip, bool):
            raise ConfigError(f"reference_skip must be true or false, got {reference_skip!r}")
        self.reference_skip = reference_skip
        self.coarse_encoder = SwinEncoder(bands, embed_dim, depths, head_dim, window)
        self.fine_encoder = SwinEncoder(bands, embed_dim, depths, head_dim, window)

        level_dims = [embed_dim * 2**i for i in range(4)]  # encoder widths at 1/2 .. 1/16
        bottom = level_dims[-1]
        self.bottom = CrossAttentionLayer(bottom, 1, _heads(bottom, head_dim), window)
        out_dims = [level_dims[2], level_dims[1], level_dims[0], level_dims[0]]
        in_dims = [bottom] + out_dims[:-1]
        self.up = nn.ModuleList(
            UpLevel(i, lvl, o, d, head_dim, window)
            for i, lvl, o, d in zip(in_dims, reversed(level_dims), out_dims, decoder_depths))
        self.head = nn.Sequential(_upsample(embed_dim), nn.Conv2d(embed_dim, bands, 3, padding=1))
        if reference_skip:  # start at persistence: the head's last conv outputs zero
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)
        self.traits = ModelTraits(receptive_field=64, alignment=self.PATCH * 2 ** len(depths), input_statistics=True)

    @staticmethod
    def _depths(name: str, value) -> tuple[int, ...]:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(f"{name} must be a sequence of positive integers, got {value!r}")
        return tuple(check_positive_int(f"{name}[{i}]", v) for i, v in enumerate(value))

    def forward(self, fine_ref: Tensor, coarse_ref: Tensor, coarse_target: Tensor) -> Tensor:
        padded = [pad_to_multiple(x, self.traits.alignment)[0] for x in (fine_ref, coarse_ref, coarse_target)]
        size = fine_ref.shape[-2:]
        geometries: Geometries = {}  # built once per grid and shift, shared by the blocks of this pass
        fine = self.fine_encoder(padded[0], geometries)
        # Shared weights, one pass per date: one pass of both as a double batch ran 5 % slower on the CPU.
        coarse_ref_f = self.coarse_encoder(padded[1], geometries)
        coarse_target_f = self.coarse_encoder(padded[2], geometries)
        x = self.bottom(coarse_ref_f[-1], fine[-1], coarse_target_f[-1], geometries)
        for k, up in enumerate(self.up):
            level = 3 - k  # features of the encoder level this up-block reaches
            x = up(x, coarse_ref_f[level], fine[level], coarse_target_f[level], geometries)
        out = crop(self.head(_channels_first(x)), size)
        return fine_ref + out if self.reference_skip else out
