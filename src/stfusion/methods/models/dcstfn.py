"""DCSTFN: deep convolutional spatiotemporal fusion network (Tan et al. 2018, Remote Sensing 10(7):1066).

Prediction in feature space: ``F2 = R(E_f(F1) - E_c(C1) + E_c(C2))``, the CNN form of "fine reference
plus coarse temporal change". One coarse encoder ``E_c`` (shared by C1 and C2) so the two coarse images
are mapped consistently and their difference is a change; a fine encoder ``E_f`` for F1; a reconstruction
network ``R`` back to reflectance.
"""

from __future__ import annotations

from torch import Tensor, nn

from stfusion.methods.models.base import FusionModel, ModelTraits
from stfusion.methods.models.layers import check_channels, check_positive_int, conv3x3_rep, crop, pad_to_multiple

__all__ = ["DCSTFN"]


def _conv_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [conv3x3_rep(in_channels, out_channels), nn.ReLU(inplace=True)]


class DCSTFN(FusionModel):
    """DCSTFN adapted to 6-band images with MODIS already on the fine grid.

    Architecture (``channels = (c1, c2, c3)``, paper tier (64, 96, 128), B bands):

    - fine encoder (F1): conv B->c1, conv c1->c2, max-pool 2, conv c2->c2, conv c2->c3;
    - coarse encoder (C1 and C2, shared weights): conv B->c1, conv c1->c2, max-pool 2, conv c2->c2,
      conv c2->c2, conv c2->c3;
    - fused = fine(F1) - coarse(C1) + coarse(C2), at half resolution;
    - reconstruction: ConvTranspose2d(c3->c2, 3, stride 2, padding 1, output_padding 1), then two
      per-pixel dense layers as 1x1 convs c2->c1->B, linear output.

    All 3x3 convs are replicate-padded and followed by ReLU. 705,670 parameters at paper tier with 6
    bands (the MCBAM-GAN paper's Table 5 lists DCSTFN at 0.71 M).

    Deviations from the public code (theonegis/dcstfn), and why:

    - **All bands jointly** (B -> ... -> B) instead of one single-band network per band: the other models
      of the study are multi-band, and one network per band would multiply training cost by six.
    - **Coarse input on the fine grid.** The public coarse branch takes MODIS at native 1/16 resolution and
      up-samples it with three stride-2 transposed convs (c2->c2 each) to the half resolution of the fine
      branch. Our MODIS images are already resampled to the fine grid, so the coarse branch instead
      mirrors the fine branch (one max-pool to half resolution) and the three transposed convs are
      replaced by two 3x3 convs c2->c2; its deepest conv c2->c3 is kept.
    - **Replicate padding** instead of the public zero padding (``padding=1``), as in EDCSTFN and GAN-STFM,
      so borders of tiles and scenes are treated alike by all CNNs of the study.
    - **Any H, W.** The max-pool / transposed-conv pair needs even sizes: odd inputs are replicate-padded
      at the bottom/right to even size and the output is cropped back.

    Receptive field: a fine output pixel o is produced by the transposed conv from half-resolution
    features at floor(o/2) and ceil(o/2); those depend (three 3x3 convs in the coarse branch) on half-res
    pixels within 3 more, i.e. pool-input pixels [2 floor(o/2) - 6, 2 ceil(o/2) + 7], and the two
    full-resolution 3x3 convs add 2: [o - 9, o + 10] for odd o ([o - 8, o + 9] for even o). Hence
    ``receptive_field = 10`` (the fine branch, with two half-resolution convs, reaches only 8).
    ``alignment = 2`` because of the single 2x2 max-pool: a tile must start on the pooling grid.
    """

    def __init__(self, bands: int = 6, channels: tuple[int, int, int] = (64, 96, 128)):
        super().__init__()
        bands = check_positive_int("bands", bands)
        c1, c2, c3 = check_channels("channels", channels, 3)
        self.bands, self.channels = bands, (c1, c2, c3)

        self.fine_encoder = nn.Sequential(
            *_conv_relu(bands, c1), *_conv_relu(c1, c2), nn.MaxPool2d(2),
            *_conv_relu(c2, c2), *_conv_relu(c2, c3),
        )  # fmt: skip
        self.coarse_encoder = nn.Sequential(
            *_conv_relu(bands, c1), *_conv_relu(c1, c2), nn.MaxPool2d(2),
            *_conv_relu(c2, c2), *_conv_relu(c2, c2), *_conv_relu(c2, c3),
        )  # fmt: skip
        self.reconstruction = nn.Sequential(
            nn.ConvTranspose2d(c3, c2, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c2, c1, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, bands, 1),
        )

        self.traits = ModelTraits(receptive_field=10, alignment=2)

    def forward(self, fine_ref: Tensor, coarse_ref: Tensor, coarse_target: Tensor) -> Tensor:
        fine_ref, size = pad_to_multiple(fine_ref, 2)
        coarse_ref, _ = pad_to_multiple(coarse_ref, 2)
        coarse_target, _ = pad_to_multiple(coarse_target, 2)
        fine, coarse = self.fine_encoder, self.coarse_encoder
        fused = fine(fine_ref) - coarse(coarse_ref) + coarse(coarse_target)  # reference + coarse change
        return crop(self.reconstruction(fused), size)
