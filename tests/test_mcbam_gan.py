"""MCBAM-GAN: its attention modules, switchable normalisation, any-size inputs, sizes against the
paper's Table 2 to 4, receptive field and tiling choice, and the multi-scale loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from stfusion.pipeline.params import load_params
from stfusion.errors import ConfigError
from stfusion.methods.models import MODELS, arch_for_data, build_model, get_model_spec
from stfusion.methods.models.layers import SwitchNorm2d
from stfusion.methods.models.mcbam_gan import AFF, CBAM, MCBAMGAN, ChannelAttention, box_filter
from stfusion.reporting.published import load_published
from stfusion.inference.tiling import predict_scene
from stfusion.train.config import train_config, variant_settings
from stfusion.train.tasks import pooled_targets

TINY = {"channels": (4, 4, 8)}


def inputs(n=2, h=32, w=32, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [(0.05 + 0.3 * torch.rand(n, 6, h, w, generator=g)).to(dtype) for _ in range(3)]


# --------------------------------------------------------------------------- CBAM


def test_cbam_attention_maps_lie_in_unit_interval_with_the_right_shapes():
    torch.manual_seed(0)
    cbam = CBAM(32)
    x = 3 * torch.randn(2, 32, 9, 13)
    channel = cbam.channel(x)
    assert channel.shape == (2, 32, 1, 1)
    refined = channel * x
    spatial = cbam.spatial(refined)
    assert spatial.shape == (2, 1, 9, 13)
    for attention in (channel, spatial):
        assert ((attention >= 0) & (attention <= 1)).all()
    # Formulas 8 and 9, applied in this order
    assert torch.allclose(cbam(x), spatial * refined)


def test_cbam_reduction_keeps_at_least_one_hidden_unit():
    cbam = CBAM(8)  # 8 // 16 = 0 would be an empty MLP
    assert cbam.channel.mlp[0].out_channels == 1
    assert cbam(torch.randn(1, 8, 5, 5)).shape == (1, 8, 5, 5)


# --------------------------------------------------------------------------- AFF


def test_aff_weights_are_complementary_and_equal_inputs_pass_through():
    torch.manual_seed(1)
    aff = AFF(16).eval()
    fine, coarse = torch.randn(2, 16, 7, 9), torch.randn(2, 16, 7, 9)
    m = aff.weights(fine, coarse)
    assert m.shape == fine.shape and ((m > 0) & (m < 1)).all()
    assert torch.allclose(m + (1 - m), torch.ones_like(m))
    out = aff(fine, coarse)
    assert torch.allclose(out, m * coarse + (1 - m) * fine)  # Formula 4
    low, high = torch.minimum(fine, coarse), torch.maximum(fine, coarse)
    assert ((out >= low - 1e-6) & (out <= high + 1e-6)).all()  # a convex mix, never outside its inputs
    x = torch.randn(2, 16, 7, 9)
    assert torch.allclose(aff(x, x), x, atol=1e-6)


# --------------------------------------------------------------------------- switchable normalisation


def test_switchnorm_importance_weights_are_a_softmax():
    torch.manual_seed(2)
    norm = SwitchNorm2d(3).train()
    with torch.no_grad():
        norm.mean_weight.copy_(torch.tensor([0.3, -1.0, 2.0]))
        norm.var_weight.copy_(torch.tensor([1.5, 0.2, -0.7]))
    x = torch.randn(4, 3, 6, 5) * 2 + 1
    wm, wv = norm.mean_weight.softmax(0), norm.var_weight.softmax(0)
    assert torch.isclose(wm.sum(), torch.tensor(1.0)) and (wm > 0).all()
    mean_in, var_in = x.mean((2, 3), keepdim=True), x.var((2, 3), unbiased=False, keepdim=True)
    mean_ln, var_ln = x.mean((1, 2, 3), keepdim=True), x.var((1, 2, 3), unbiased=False, keepdim=True)
    mean_bn, var_bn = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), unbiased=False, keepdim=True)
    mean = wm[0] * mean_in + wm[1] * mean_ln + wm[2] * mean_bn
    var = wv[0] * var_in + wv[1] * var_ln + wv[2] * var_bn
    assert torch.allclose(norm(x), (x - mean) / (var + norm.eps).sqrt(), atol=1e-5)


def test_switchnorm_train_updates_running_statistics_and_eval_does_not():
    torch.manual_seed(3)
    norm = SwitchNorm2d(2)
    x = torch.randn(8, 2, 5, 5) + 3
    norm.train()(x)
    after_train = norm.running_mean.clone()
    assert not torch.allclose(after_train, torch.zeros(2))  # batch statistics entered the running mean
    norm.eval()
    first = norm(x)
    assert torch.equal(norm.running_mean, after_train)  # eval reads, never writes
    assert torch.equal(norm(x), first)  # and is repeatable


# --------------------------------------------------------------------------- generator


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("size", [(37, 45), (9, 17), (1, 3), (64, 64)])
def test_generator_accepts_any_size_through_padding(depth, size):
    torch.manual_seed(4)
    model = MCBAMGAN(**TINY, depth=depth, ratio=4).eval()
    f1, c1, c2 = inputs(2, *size)
    with torch.no_grad():
        out = model(f1, c1, c2)
        scales = model(f1, c1, c2, all_scales=True)
    assert out.shape == (2, 6, *size) and torch.isfinite(out).all()
    assert len(scales) == depth and torch.equal(scales[0], out)
    for k, image in enumerate(scales):  # scale k has the target's size divided by 2^k, rounded up
        assert image.shape[-2:] == (-(-size[0] // 2**k), -(-size[1] // 2**k))
        assert image.shape[-2:] == pooled_targets({"fine_target": f1, "valid": torch.ones(2, 1, *size)},
                                                  2**k)["fine_target"].shape[-2:]


def test_generator_ignores_coarse_ref_and_declares_its_interface():
    torch.manual_seed(5)
    model = MCBAMGAN(**TINY, ratio=4).eval()
    f1, c1, c2 = inputs(2, 20, 24)
    with torch.no_grad():
        assert torch.equal(model(f1, c1, c2), model(f1, None, c2))
    assert (MODELS["mcbam-gan"].family, model.traits.alignment, model.traits.input_statistics, model.traits.uses_coarse_ref) == ("gan", 4, True, False)
    assert model.traits.reconstruction_scales == 3
    with pytest.raises(ConfigError, match="ratio: the coarse-corrected skip needs"):  # never assumed
        MCBAMGAN(**TINY)(f1, None, c2)
    spec = get_model_spec("mcbam-gan")
    assert spec.references == "any" and spec.feature_encoder and spec.discriminator  # docstring choice 11


@pytest.mark.parametrize("arch, message", [
    ({"depth": 4}, "depth"), ({"depth": 0}, "depth"), ({"cbam": "yes"}, "cbam"), ({"aff": 1}, "aff"),
    ({"channels": [8, 16]}, "channels"), ({"skip": "coarse"}, "skip"), ({"ratio": 0}, "ratio"),
])
def test_invalid_hyper_parameters_name_the_key(arch, message):
    with pytest.raises(ConfigError, match=message):
        build_model("mcbam-gan", arch)


def test_untrained_generator_returns_its_skip_image():
    """Choice 10: the heads start at zero, so the output is the skip image at every scale."""
    torch.manual_seed(8)
    f1, c1, c2 = inputs(2, 30, 26)
    with torch.no_grad():
        assert torch.equal(MCBAMGAN(**TINY, skip="reference").eval()(f1, c1, c2), f1)
        model = MCBAMGAN(**TINY, ratio=5).eval()
        expected = f1 + box_filter(c2, 5) - box_filter(box_filter(f1, 5), 5)
        torch.testing.assert_close(model(f1, c1, c2), expected)
        coarser = model(f1, c1, c2, all_scales=True)[1]
    torch.testing.assert_close(coarser, nn.functional.avg_pool2d(expected, 2, ceil_mode=True))


def test_coarse_corrected_skip_passes_a_uniform_coarse_change_on():
    """A field that is uniform per band and a coarse image showing it brighter by d: the untrained
    prediction is the field plus d everywhere, edges included (replicate padding)."""
    level = torch.tensor([0.05, 0.08, 0.06, 0.3, 0.2, 0.1]).view(1, 6, 1, 1)
    change = torch.tensor([0.01, -0.02, 0.0, 0.05, -0.03, 0.02]).view(1, 6, 1, 1)
    f1 = level.expand(1, 6, 24, 28).clone()
    c2 = (level + change).expand(1, 6, 24, 28).clone()
    with torch.no_grad():
        out = MCBAMGAN(**TINY, ratio=8).eval()(f1, f1, c2)
    torch.testing.assert_close(out, (level + change).expand_as(out))


def test_box_filter_is_a_local_mean_of_the_same_shape():
    x = torch.arange(30.0).view(1, 1, 5, 6)
    assert torch.equal(box_filter(x, 1), x)
    out = box_filter(x, 3)
    assert out.shape == x.shape
    assert out[0, 0, 2, 2] == x[0, 0, 1:4, 1:4].mean()
    # even sides: the window reaches size // 2 before and size // 2 - 1 after the pixel
    assert box_filter(x, 2)[0, 0, 2, 2] == x[0, 0, 1:3, 1:3].mean()
    # the skip's reach (two boxes) bounds the receptive field when it exceeds the convolution stack's
    assert MCBAMGAN(**TINY, ratio=300).traits.receptive_field == 300
    assert MCBAMGAN(**TINY, ratio=300, skip="reference").traits.receptive_field < 300


def test_the_data_supplies_the_ratio_of_generators_that_take_one():
    assert arch_for_data("mcbam-gan", {"depth": 2}, 16) == {"depth": 2, "ratio": 16}
    assert arch_for_data("mcbam-gan", {"ratio": 16}, 16) == {"ratio": 16}
    assert arch_for_data("mcbam-gan", {"depth": 2}, None) == {"depth": 2}
    assert arch_for_data("dcstfn", {"channels": [8, 8, 8]}, 16) == {"channels": [8, 8, 8]}
    with pytest.raises(ConfigError, match=r"models\.mcbam-gan\.arch\.ratio: 20.*16 fine pixels"):
        arch_for_data("mcbam-gan", {"ratio": 20}, 16)


def test_ablation_switches_remove_their_modules():
    assert not any(isinstance(m, CBAM) for m in MCBAMGAN(**TINY, cbam=False).modules())
    assert not any(isinstance(m, AFF) for m in MCBAMGAN(**TINY, aff=False).modules())
    assert sum(isinstance(m, CBAM) for m in MCBAMGAN(**TINY).modules()) == 3  # one per encoder stage
    assert len(MCBAMGAN(**TINY, depth=2).heads) == 2


# --------------------------------------------------------------------------- sizes against the paper


def _published_millions(variant: str) -> float:
    table = load_published()
    rows = table[(table["source"] == "mcbam-gan") & (table["method"] == variant)
                 & (table["metric"] == "parameters_millions") & (table["dataset"] == "cia")]
    assert len(rows) == 1, variant
    return float(rows["value"].iloc[0])


def _paper_generator(params: dict, variant: str | None) -> nn.Module:
    settings = params["models"]["mcbam-gan"]["paper"] if variant is None else variant_settings(params, variant, "paper")
    return build_model("mcbam-gan", train_config(settings, key=variant or "mcbam-gan").arch)


def test_paper_scale_generator_matches_table_2_to_4_parameter_counts():
    """Every configuration of the paper's tables, built from params.yaml at paper tier, within 10%."""
    params = load_params()
    full = _paper_generator(params, None)
    rows = {variant: _paper_generator(params, variant) for variant in params["ablation"]["variants"]}
    rows.update({row: full for row in params["ablation"]["full_model_rows"]})
    assert set(rows) == {"depth-1", "depth-2", "depth-3", "multi-scale", "cbam", "multi-scale+cbam",
                         "multi-scale+aff", "multi-scale+cbam+aff", "multi-scale+cbam+aff+multi-loss"}
    for variant, model in rows.items():
        millions = sum(p.numel() for p in model.parameters()) / 1e6
        published = _published_millions(variant)
        assert abs(millions - published) <= 0.10 * published, f"{variant}: {millions:.3f} M vs {published} M"


# --------------------------------------------------------------------------- receptive field and tiling


class _Ones(nn.Module):
    def forward(self, x):
        return torch.ones_like(x[:, :, :1, :1])


def _freeze_statistics(model: MCBAMGAN) -> MCBAMGAN:
    """Batch statistics only (running ones in eval), no CBAM channel pooling, no AFF global context."""
    for module in list(model.modules()):
        if isinstance(module, SwitchNorm2d):
            with torch.no_grad():
                module.mean_weight.copy_(torch.tensor([-1e4, -1e4, 1e4]))
                module.var_weight.copy_(torch.tensor([-1e4, -1e4, 1e4]))
        if isinstance(module, AFF):
            module.global_context = nn.Sequential()  # identity: adds the local input once more, still local
        for name, child in list(module.named_children()):
            if isinstance(child, ChannelAttention):
                setattr(module, name, _Ones())
    return model


@pytest.mark.parametrize("arch", [{}, {"cbam": False}, {"depth": 1, "aff": False}])
def test_receptive_field_bounds_the_convolution_stack(arch):
    torch.manual_seed(6)
    # skip="none": a skip starts the heads at 0, which would hide the stack from the gradient
    model = _freeze_statistics(MCBAMGAN(**TINY, **arch, skip="none")).double().eval()
    size = 160
    f1, c1, c2 = (t.detach().requires_grad_(True) for t in inputs(1, size, size, dtype=torch.float64))
    reaches = []
    for pixel in ((80, 80), (81, 83)):
        for t in (f1, c2):
            t.grad = None
        model(f1, c1, c2)[0, :, pixel[0], pixel[1]].sum().backward()
        rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        distance = torch.maximum((rows - pixel[0]).abs(), (cols - pixel[1]).abs())
        reaches += [int(distance[t.grad.abs().sum((0, 1)) > 0].max()) for t in (f1, c2)]
    assert max(reaches) <= model.traits.receptive_field  # an upper bound ...
    assert max(reaches) >= model.traits.receptive_field - 4  # ... and a tight one


def test_whole_scene_tile_is_exactly_the_forward_pass():
    """The tiling choice for input-dependent statistics: one tile covering the scene = the model itself."""
    torch.manual_seed(7)
    model = MCBAMGAN(**TINY, ratio=4).eval()
    f1, c1, c2 = (t[0].numpy() for t in inputs(1, 45, 38))
    tiled = predict_scene(model, f1, c1, c2, tile=160, device="cpu")
    with torch.no_grad():
        direct = model(*(torch.from_numpy(a)[None] for a in (f1, c1, c2)))[0].numpy()
    np.testing.assert_allclose(tiled, direct, atol=1e-6)


# --------------------------------------------------------------------------- multi-scale targets


def test_pooled_targets_average_and_mark_partly_invalid_pixels():
    target = torch.arange(36, dtype=torch.float32).view(1, 1, 6, 6)
    valid = torch.ones(1, 1, 6, 6)
    valid[..., 0, 0] = 0
    pooled = pooled_targets({"fine_target": target, "valid": valid}, 2)
    assert pooled["fine_target"].shape == (1, 1, 3, 3)
    assert pooled["fine_target"][0, 0, 0, 1] == target[0, 0, :2, 2:4].mean()
    assert pooled["valid"][0, 0, 0, 0] == 0 and pooled["valid"].sum() == 8
