"""EDCSTFN: enhanced deep convolutional spatiotemporal fusion network (Tan et al. 2019, Remote Sensing
11(24):2898), in the CIA/LGC variant of theonegis/ganstfm branch ``edcstfn``.

``F2 = D(E_f(F1) + E_r(C1, F1, C2))``: a fine encoder carries the spatial detail of F1, a residual encoder
sees all three inputs and learns the temporal change as a feature-space residual (hence no activation
after its last conv), and a decoder maps the sum back to reflectance.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stfusion.methods.models.base import FusionModel, ModelTraits
from stfusion.methods.models.layers import check_channels, check_positive_int, conv3x3_rep

__all__ = ["EDCSTFN"]


class EDCSTFN(FusionModel):
    """EDCSTFN generator, single reference pair, coarse images on the fine grid.

    Architecture (``channels = (c1, c2, c3)``, paper tier (32, 64, 128), B bands), all 3x3 convs
    replicate-padded, stride 1, no normalisation, no down- or up-sampling:

    - FEncoder(F1): B -> c1 -> c2 -> c3, ReLU after each;
    - REncoder(cat[C1, F1, C2], 3B channels): 3B -> c1 (ReLU) -> c2 (ReLU) -> c3, linear;
    - Decoder(FEnc + REnc): c3 -> c2 (ReLU) -> c1 (ReLU) -> 1x1 c1 -> B, linear output.

    284,134 trainable parameters with 6 bands (FEnc 94,112 + REnc 97,568 + Dec 92,454), as the public
    branch. Choices where the public code leaves room:

    - The input order of the residual encoder is [C1, F1, C2], as in the public code; it matters only for
      loading foreign weights.
    - The original paper's two-reference mode (master branch, refs = 2, with its inverse-residual blending)
      is not implemented: CIA/LGC are run with one reference pair, as in the branch we follow.
    - Receptive field: three 3x3 convs per encoder path plus two in the decoder, so an output pixel sees
      input pixels within Chebyshev distance 5 (11x11). ``alignment = 1`` (no down-sampling).
    """

    def __init__(self, bands: int = 6, channels: tuple[int, int, int] = (32, 64, 128)):
        super().__init__()
        bands = check_positive_int("bands", bands)
        c1, c2, c3 = check_channels("channels", channels, 3)
        self.bands, self.channels = bands, (c1, c2, c3)
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731

        self.fine_encoder = nn.Sequential(
            conv3x3_rep(bands, c1), relu(), conv3x3_rep(c1, c2), relu(), conv3x3_rep(c2, c3), relu(),
        )  # fmt: skip
        self.residual_encoder = nn.Sequential(
            conv3x3_rep(3 * bands, c1), relu(), conv3x3_rep(c1, c2), relu(), conv3x3_rep(c2, c3),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            conv3x3_rep(c3, c2), relu(), conv3x3_rep(c2, c1), relu(), nn.Conv2d(c1, bands, 1),
        )  # fmt: skip

        self.traits = ModelTraits(receptive_field=5)

    def forward(self, fine_ref: Tensor, coarse_ref: Tensor, coarse_target: Tensor) -> Tensor:
        residual = self.residual_encoder(torch.cat((coarse_ref, fine_ref, coarse_target), 1))
        return self.decoder(self.fine_encoder(fine_ref) + residual)
