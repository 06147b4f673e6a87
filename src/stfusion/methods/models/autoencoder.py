"""The feature autoencoder whose encoder defines the feature losses of EDCSTFN and GAN-STFM.

An hourglass U-Net on fine images: four 3x3 convs down to 1/8
resolution, three nearest-upsample + 3x3 convs back up with skip connections, and a 1x1 conv to the bands.
After training on fine images alone, ``encode`` gives 128-channel features that summarise local structure;
the fusion models compare ``encode(prediction)`` with ``encode(target)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stfusion.methods.models.layers import check_channels, check_positive_int, conv3x3_rep, crop, pad_to_multiple

__all__ = ["FeatureAutoencoder"]


def _down(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(conv3x3_rep(in_channels, out_channels, stride), nn.LeakyReLU(inplace=True))


def _up(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        conv3x3_rep(in_channels, out_channels),
        nn.LeakyReLU(inplace=True),
    )


class FeatureAutoencoder(nn.Module):
    """GAN-STFM's hourglass feature autoencoder (public code: theonegis/ganstfm ``AutoEncoder``).

    With ``channels = (c1, c2, c3, c4)`` (paper tier (16, 32, 64, 128)) and B bands; every conv but conv8
    is a replicate-padded 3x3 conv followed by LeakyReLU (slope 0.01):

    - encoder: conv1 B->c1, conv2 c1->c2 stride 2, conv3 c2->c3 stride 2, conv4 c3->c4 stride 2;
    - decoder: conv5 = up x2 + conv c4->c3; conv6 = up x2 + conv (c3 + c3)->c2 on cat(conv3, conv5);
      conv7 = up x2 + conv (c2 + c2)->c1 on cat(conv2, conv6); conv8 = 1x1 (c1 + c1)->B on
      cat(conv1, conv7), linear.

    217,990 parameters at paper tier with 6 bands, exactly the count of the published checkpoint
    (encoder conv1..conv4: 97,872). Skip tensors come first in each concatenation and every block is
    ``Sequential([Upsample,] Sequential(pad, conv), LeakyReLU)``, so the state-dict keys
    (``conv1.0.1.weight`` ... ``conv5.1.1.weight`` ... ``conv8.weight``) mirror the module layout of the
    public code (not checked against the published ``assets/autoencoder.pth``, which we do not use).
    Keys are part of the interface: the pipeline saves this model and loads it with strict key checking.

    Why one autoencoder for both models: the public EDCSTFN branch (theonegis/ganstfm ``edcstfn``) meant
    to load exactly this autoencoder for its feature loss, but its loss encoder had other widths
    (B->32->64->128) and the loader silently kept only matching keys, so its "perceptual" term used a
    random frozen network. We use this autoencoder's encoder for both
    EDCSTFN and GAN-STFM, trained by the pipeline on training-date fine images and loaded strictly.

    Sizes: ``forward`` replicate-pads H and W (bottom/right) to multiples of 8 so the skip connections
    line up, and crops back. ``encode`` does not pad: the stride-2 convs give ceil(H/8) x ceil(W/8)
    features for any H, W >= 1, which is what the public loss computes on its patches.
    """

    def __init__(self, bands: int = 6, channels: tuple[int, int, int, int] = (16, 32, 64, 128)):
        super().__init__()
        bands = check_positive_int("bands", bands)
        c1, c2, c3, c4 = check_channels("channels", channels, 4)
        self.bands, self.channels = bands, (c1, c2, c3, c4)
        self.feature_channels = c4

        self.conv1 = _down(bands, c1)
        self.conv2 = _down(c1, c2, stride=2)
        self.conv3 = _down(c2, c3, stride=2)
        self.conv4 = _down(c3, c4, stride=2)
        self.conv5 = _up(c4, c3)
        self.conv6 = _up(2 * c3, c2)
        self.conv7 = _up(2 * c2, c1)
        self.conv8 = nn.Conv2d(2 * c1, bands, 1)

    def encode(self, x: Tensor) -> Tensor:
        """Features (N, c4, ceil(H/8), ceil(W/8)) of conv1..conv4."""
        return self.conv4(self.conv3(self.conv2(self.conv1(x))))

    def forward(self, x: Tensor) -> Tensor:
        x, size = pad_to_multiple(x, 8)
        l1 = self.conv1(x)
        l2 = self.conv2(l1)
        l3 = self.conv3(l2)
        l5 = self.conv5(self.conv4(l3))
        l6 = self.conv6(torch.cat((l3, l5), 1))
        l7 = self.conv7(torch.cat((l2, l6), 1))
        return crop(self.conv8(torch.cat((l1, l7), 1)), size)
