"""The deep fusion networks: sizes, shapes, receptive fields, tiling, argument checks, trainability."""

from __future__ import annotations

import math

import pytest
import torch

from stfusion.errors import ConfigError
from stfusion.methods.models import MODELS
from stfusion.methods.models.autoencoder import FeatureAutoencoder
from stfusion.methods.models.dcstfn import DCSTFN
from stfusion.methods.models.edcstfn import EDCSTFN
from stfusion.methods.models.gan_stfm import GANSTFM, MultiScaleDiscriminator
from stfusion.methods.models.layers import SwitchNorm2d

from model_inputs import n_params, triplet

GENERATORS = [DCSTFN, EDCSTFN, GANSTFM]
NAMES = {DCSTFN: "dcstfn", EDCSTFN: "edcstfn", GANSTFM: "gan-stfm"}
TINY = {
    DCSTFN: {"channels": (8, 8, 8)},
    EDCSTFN: {"channels": (8, 8, 8)},
    GANSTFM: {"channels": (4, 4, 8, 8)},
}


# --------------------------------------------------------------------------- parameter counts


def test_paper_scale_parameter_counts():
    torch.manual_seed(0)
    assert n_params(EDCSTFN()) == 284_134
    gan = GANSTFM()
    assert (n_params(gan), n_params(gan.encoder), n_params(gan.decoder)) == (578_130, 120_348, 457_782)
    ae = FeatureAutoencoder()
    assert n_params(ae) == 217_990
    assert sum(p.numel() for name, p in ae.named_parameters() if name.split(".")[0] <= "conv4") == 97_872
    disc = MultiScaleDiscriminator()
    assert abs(n_params(disc) - 3_665_959) <= 0.10 * 3_665_959
    assert [n_params(d) for d in disc.discriminators] == [1_244_813, 1_233_325, 1_187_821]
    assert abs(n_params(DCSTFN()) - 710_000) <= 0.10 * 710_000
    assert n_params(DCSTFN()) == 705_670


def test_interface_attributes():
    for cls, family, alignment, stats, coarse_ref in [
        (DCSTFN, "cnn", 2, False, True),
        (EDCSTFN, "cnn", 1, False, True),
        (GANSTFM, "gan", 1, True, False),
    ]:
        model = cls(**TINY[cls])
        assert (MODELS[NAMES[cls]].family, model.traits.alignment, model.traits.input_statistics, model.traits.uses_coarse_ref) == (
            family, alignment, stats, coarse_ref,
        )  # fmt: skip
        assert isinstance(model.traits.receptive_field, int) and model.traits.receptive_field > 0
    assert all(MODELS[name].generator_class() is cls for cls, name in NAMES.items())


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("cls", GENERATORS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("size", [(37, 45), (64, 64), (1, 3)])
@pytest.mark.parametrize("training", [True, False])
def test_generator_output_shape_and_finite(cls, size, training):
    torch.manual_seed(1)
    model = cls().train(training)
    inputs = triplet(2, *size)
    with torch.no_grad():
        out = model(*inputs)
    assert out.shape == (2, 6, *size) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(37, 45), (64, 64), (5, 1)])
def test_autoencoder_shapes_and_keys(size):
    torch.manual_seed(2)
    ae = FeatureAutoencoder()
    x = torch.rand(2, 6, *size)
    with torch.no_grad():
        rec, feats = ae(x), ae.encode(x)
    assert rec.shape == x.shape and torch.isfinite(rec).all()
    assert feats.shape == (2, 128, math.ceil(size[0] / 8), math.ceil(size[1] / 8))
    prefixes = {key.split(".")[0] for key in ae.state_dict()}
    assert prefixes == {f"conv{i}" for i in range(1, 9)}
    # strict round trip through a fresh instance, and a strict load that must fail on a foreign layout
    copy = FeatureAutoencoder()
    copy.load_state_dict(ae.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(copy.encode(x), feats)
    with pytest.raises(RuntimeError):
        FeatureAutoencoder(channels=(32, 64, 128, 128)).load_state_dict(ae.state_dict(), strict=True)


# --------------------------------------------------------------------------- receptive field and tiling


def gradient_distances(model, pixel=(47, 47), size=96):
    """Chebyshev distances to ``pixel`` of the input pixels with a nonzero gradient, per input."""
    model = model.double().eval()
    inputs = triplet(1, size, size, dtype=torch.float64, requires_grad=True)
    model(*inputs)[0, :, pixel[0], pixel[1]].sum().backward()
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    distance = torch.maximum((rows - pixel[0]).abs(), (cols - pixel[1]).abs())
    return [None if t.grad is None else distance[t.grad.abs().sum((0, 1)) > 0] for t in inputs]


@pytest.mark.parametrize("cls", [DCSTFN, EDCSTFN], ids=lambda c: c.__name__)
def test_receptive_field_is_a_tight_bound(cls):
    torch.manual_seed(3)
    model = cls()
    assert not model.traits.input_statistics
    per_input = gradient_distances(model)
    assert all(d is not None and d.numel() > 0 for d in per_input), "every input must influence the output"
    reach = max(int(d.max()) for d in per_input)
    assert reach <= model.traits.receptive_field  # nothing beyond the declared radius
    assert min(int(d.min()) for d in per_input) == 0  # the pixel itself matters
    assert reach >= model.traits.receptive_field // 2  # not wildly loose ...
    assert reach == model.traits.receptive_field  # ... in fact exact for this (odd) output pixel


def test_gan_stfm_receptive_field_and_input_statistics():
    torch.manual_seed(4)
    model = GANSTFM()
    # With the default mix, instance/layer statistics make every pixel depend on the whole input.
    fine, coarse_ref, coarse = gradient_distances(model)
    assert coarse_ref is None  # reference-insensitive: C1 is not used at all
    assert int(fine.max()) > 3 * model.traits.receptive_field
    # Switching all normalisations to batch statistics (running stats in eval mode) leaves the conv stack.
    for module in model.modules():
        if isinstance(module, SwitchNorm2d):
            with torch.no_grad():
                module.mean_weight.copy_(torch.tensor([-1e4, -1e4, 1e4]))
                module.var_weight.copy_(torch.tensor([-1e4, -1e4, 1e4]))
    fine, _, coarse = gradient_distances(model)
    assert max(int(fine.max()), int(coarse.max())) == model.traits.receptive_field


def test_gan_stfm_ignores_coarse_ref():
    torch.manual_seed(5)
    model = GANSTFM(**TINY[GANSTFM]).eval()
    f1, c1, c2 = triplet(2, 20, 24)
    with torch.no_grad():
        assert torch.equal(model(f1, c1, c2), model(f1, torch.rand_like(c1), c2))
        assert torch.equal(model(f1, c1, c2), model(f1, None, c2))


@pytest.mark.parametrize("cls", [DCSTFN, EDCSTFN], ids=lambda c: c.__name__)
def test_tiled_inference_matches_whole_scene(cls):
    """A tile at an aligned origin reproduces the scene's output beyond ``receptive_field`` of its edges."""
    torch.manual_seed(6)
    model = cls(**TINY[cls]).double().eval()
    scene = triplet(1, 64, 60, dtype=torch.float64)
    r, a = model.traits.receptive_field, model.traits.alignment
    with torch.no_grad():
        whole = model(*scene)
        for top, left in [(2 * a, 4 * a), (8 * a, 3 * a)]:
            tile = model(*(t[..., top : top + 41, left : left + 35] for t in scene))
            inner = (slice(r, 41 - r), slice(r, 35 - r))
            expected = whole[..., top : top + 41, left : left + 35][..., inner[0], inner[1]]
            torch.testing.assert_close(tile[..., inner[0], inner[1]], expected, rtol=0, atol=1e-12)
        if a > 1:  # a misaligned origin shifts the pooling grid: the alignment is necessary
            tile = model(*(t[..., 1:42, 1:36] for t in scene))
            assert not torch.allclose(tile[..., r:-r, r:-r], whole[..., 1:42, 1:36][..., r:-r, r:-r])


# --------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    "factory, argument",
    [
        (lambda: DCSTFN(channels=(64, 96)), "channels"),
        (lambda: DCSTFN(channels=(64, 0, 128)), "channels"),
        (lambda: DCSTFN(bands=0), "bands"),
        (lambda: EDCSTFN(channels=(32, 64, 128, 256)), "channels"),
        (lambda: EDCSTFN(channels=(32, -1, 128)), "channels"),
        (lambda: EDCSTFN(bands=2.5), "bands"),
        (lambda: GANSTFM(channels=(16, 32, 64)), "channels"),
        (lambda: GANSTFM(channels="abcd"), "channels"),
        (lambda: GANSTFM(bands=True), "bands"),
        (lambda: FeatureAutoencoder(channels=(16, 32, 64, 0)), "channels"),
        (lambda: FeatureAutoencoder(bands=-6), "bands"),
        (lambda: MultiScaleDiscriminator(width_multiplier=0), "width_multiplier"),
        (lambda: MultiScaleDiscriminator(width_multiplier=float("nan")), "width_multiplier"),
        (lambda: MultiScaleDiscriminator(bands=0), "bands"),
        (lambda: SwitchNorm2d(0), "channels"),
    ],
)
def test_invalid_arguments_raise_config_error(factory, argument):
    with pytest.raises(ConfigError, match=argument):
        factory()


# --------------------------------------------------------------------------- trainability


@pytest.mark.parametrize("cls", [*GENERATORS, FeatureAutoencoder], ids=lambda c: c.__name__)
def test_a_few_adam_steps_reduce_the_loss(cls):
    torch.manual_seed(7)
    f1, c1, c2 = triplet(4, 32, 32)
    target = f1 + (c2 - c1) + 0.02 * torch.randn_like(f1)
    if cls is FeatureAutoencoder:
        model, run = cls(channels=(4, 4, 8, 8)), lambda m: m(f1)
        target = f1
    else:
        model, run = cls(**TINY[cls]), lambda m: m(f1, c1, c2)
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.mse_loss(run(model), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.95 * losses[0]


# --------------------------------------------------------------------------- discriminator


def test_discriminator_returns_three_patch_maps():
    torch.manual_seed(8)
    disc = MultiScaleDiscriminator(width_multiplier=0.25)
    assert n_params(disc) < n_params(MultiScaleDiscriminator()) / 8
    image, coarse = torch.rand(2, 6, 512, 384, requires_grad=True), torch.rand(2, 6, 512, 384)
    maps = disc(image, coarse)
    assert len(maps) == 3
    for scores, blocks, step in zip(maps, (8, 7, 6), (1, 2, 4)):
        h, w = 512 // step, 384 // step
        for _ in range(blocks):  # each block halves with ceil
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        assert scores.shape == (2, 1, h, w) and torch.isfinite(scores).all()
    assert maps[0].shape == (2, 1, 2, 2)
    # LSGAN per patch; gradients reach the judged image, and the score depends on the condition C2
    sum(((s - 1) ** 2).mean() for s in maps).backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    disc.eval()
    with torch.no_grad():
        small, cond = torch.rand(2, 6, 64, 64), torch.rand(2, 6, 64, 64)
        a, b = disc(small, cond), disc(small, cond + 0.5)
        assert [m.shape for m in a] == [(2, 1, 1, 1)] * 3
        assert not torch.allclose(torch.cat(a), torch.cat(b))


# --------------------------------------------------------------------------- switchable normalisation


def batch_only(norm: SwitchNorm2d) -> SwitchNorm2d:
    with torch.no_grad():
        norm.mean_weight.copy_(torch.tensor([-1e4, -1e4, 1e4]))
        norm.var_weight.copy_(torch.tensor([-1e4, -1e4, 1e4]))
    return norm


def test_switchnorm_running_statistics_update():
    torch.manual_seed(9)
    norm = SwitchNorm2d(3, momentum=0.1)
    assert torch.equal(norm.running_var, torch.ones(3))  # not 0 as in the reference code
    x = 2.0 + 3.0 * torch.randn(4, 3, 8, 8)
    norm.train()(x)
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
    torch.testing.assert_close(norm.running_mean, 0.1 * mean)
    torch.testing.assert_close(norm.running_var, 0.9 + 0.1 * var)


def test_switchnorm_eval_uses_running_batch_statistics():
    torch.manual_seed(10)
    norm = batch_only(SwitchNorm2d(3, momentum=1.0))  # momentum 1: running stats = last batch
    batch = 1.0 + 2.0 * torch.randn(4, 3, 6, 6)
    x, other_a, other_b = torch.randn(1, 3, 6, 6), torch.randn(1, 3, 6, 6), 5 + torch.randn(1, 3, 6, 6)

    # training mode: the BN share comes from the current batch, so the companion sample matters
    norm.train()
    with torch.no_grad():
        train_a, train_b = norm(torch.cat((x, other_a)))[0], norm(torch.cat((x, other_b)))[0]
    assert not torch.allclose(train_a, train_b, atol=1e-3)

    # eval mode: the BN share comes from the running statistics of `batch`, not from the current batch
    norm(batch)
    norm.eval()
    with torch.no_grad():
        eval_a, eval_b = norm(torch.cat((x, other_a)))[0], norm(torch.cat((x, other_b)))[0]
    torch.testing.assert_close(eval_a, eval_b)
    mean = batch.mean((0, 2, 3)).view(3, 1, 1)
    var = batch.var((0, 2, 3), unbiased=False).view(3, 1, 1)
    torch.testing.assert_close(eval_a, (x[0] - mean) / (var + norm.eps).sqrt())


def test_switchnorm_default_mix_in_eval_mode():
    """Default mix: per-sample output (IN, LN), but the running BN statistics still contribute."""
    torch.manual_seed(11)
    norm = SwitchNorm2d(3).eval()
    x, other = torch.randn(1, 3, 5, 7), torch.randn(1, 3, 5, 7)
    with torch.no_grad():
        alone = norm(x)
        torch.testing.assert_close(norm(torch.cat((x, other)))[:1], alone)
        norm.running_mean.fill_(3.0)
        assert not torch.allclose(norm(x), alone, atol=1e-3)
        # IN/LN statistics come from the input itself: changing far-away pixels changes this pixel
        far = x.clone()
        far[..., -1, -1] += 10
        assert not torch.allclose(norm(far)[..., 0, 0], norm(x)[..., 0, 0])
