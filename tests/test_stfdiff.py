"""STFDiff and the diffusion module: schedule, DDIM, reproducibility, sizes, noise fields, uncertainty."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stfusion.methods.diffusion import CosineSchedule, ddim_sample, ddim_times, noise_channels
from stfusion.errors import ConfigError, InputError
from stfusion.methods.models import build_model
from stfusion.methods.models.base import Sampling
from stfusion.methods.models.stfdiff import STFDiff
from stfusion.methods.models.standardize import Standardized
from stfusion.inference.tiling import predict_scene
from stfusion.inference.sampling import sample_scene

from model_inputs import n_params, triplet

TINY = {"dim": 8, "dim_mults": (1, 2, 2)}


# --------------------------------------------------------------------------- schedule and sampler


def test_cosine_schedule_matches_the_reference_values():
    ab = CosineSchedule(100).alphabar
    assert ab.shape == (100,)
    assert ab[0].item() == pytest.approx(0.99937, abs=2e-5)
    assert ab[49].item() == pytest.approx(0.494, abs=2e-3)
    assert ab[99].item() == pytest.approx(2.4e-7, rel=0.2)
    assert (ab[1:] < ab[:-1]).all()


def test_ddim_time_grid():
    assert ddim_times(100, 10) == [(99, 89), (89, 79), (79, 69), (69, 59), (59, 49), (49, 39), (39, 29),
                                   (29, 19), (19, 9), (9, -1)]
    assert ddim_times(100, 1) == [(99, -1)]
    with pytest.raises(ConfigError, match="sample_steps"):
        ddim_times(100, 0)
    with pytest.raises(ConfigError, match="sample_steps"):
        ddim_times(100, 101)


@pytest.mark.parametrize("steps,eta", [(1, 0.0), (10, 0.0), (10, 1.0), (100, 0.5)])
def test_ddim_with_a_perfect_denoiser_returns_x0(steps, eta):
    """If every x0 estimate is exact, every DDIM step lands on the forward process and the chain ends at x0."""
    torch.manual_seed(0)
    x0 = torch.randn(2, 3, 8, 8)
    noise = torch.randn(2, noise_channels(3, steps, eta), 8, 8)
    out = ddim_sample(lambda x, t: x0, CosineSchedule(100), noise, steps=steps, eta=eta)
    torch.testing.assert_close(out, x0)


def test_ddim_checks_the_noise_channels():
    with pytest.raises(ConfigError, match="channels"):
        ddim_sample(lambda x, t: x, CosineSchedule(100), torch.randn(1, 7, 4, 4), steps=10, eta=1.0)


# --------------------------------------------------------------------------- the model


def test_paper_scale_parameter_count_matches_the_public_code():
    model = STFDiff()
    # The public code's 7,482,054 less a 3,520-parameter convolution it never calls (models.md 5.2).
    assert n_params(model) == 7_478_534
    assert abs(n_params(model) - 7_482_054) <= 0.10 * 7_482_054
    assert n_params(build_model("stfdiff", {})) == n_params(model)


def test_interface_attributes():
    model = STFDiff(**TINY)
    assert (model.traits.alignment, model.traits.input_statistics, model.traits.stochastic) == (4, True, True)
    assert model.traits.sampling == Sampling(steps=10, eta=0.0, noise_channels=6)  # deterministic by default
    assert Standardized(model, [0.0] * 6, [1.0] * 6).traits is model.traits  # the wrapper passes them on whole


def _without_group_norm(module: torch.nn.Module) -> None:
    """GroupNorm statistics reach the whole input (hence input_statistics); the bound is for the convolutions."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.GroupNorm):
            setattr(module, name, torch.nn.Identity())
        else:
            _without_group_norm(child)


def test_receptive_field_bounds_one_evaluation():
    torch.manual_seed(0)
    model = STFDiff(**TINY)
    _without_group_norm(model)
    n = 4 * ((2 * model.traits.receptive_field + 12) // 4)  # the denoiser itself needs multiples of 4
    x = torch.zeros(1, 6, n, n, requires_grad=True)
    out = model.denoiser(x, torch.tensor([50]), x, x, x)
    out[0, :, n // 2, n // 2].sum().backward()
    rows, cols = torch.nonzero(x.grad[0].abs().sum(0), as_tuple=True)
    reach = max((rows - n // 2).abs().max().item(), (cols - n // 2).abs().max().item())
    assert 0 < reach <= model.traits.receptive_field


@pytest.mark.parametrize("steps", [1, 10])
@pytest.mark.parametrize("size", [(37, 45), (1, 3), (16, 16)])
def test_sampling_gives_finite_outputs_of_the_right_shape(steps, size):
    torch.manual_seed(0)
    model = STFDiff(**TINY, sample_steps=steps).eval()
    with torch.no_grad():
        out = model(*triplet(2, *size))
    assert out.shape == (2, 6, *size)
    assert torch.isfinite(out).all()


def test_eta_zero_sampling_is_reproducible_and_depends_on_the_noise():
    torch.manual_seed(0)
    model = STFDiff(**TINY).eval()
    inputs = triplet(1, 24, 20)
    noise = torch.randn(1, model.traits.sampling.noise_channels, 24, 20)
    with torch.no_grad():
        a, b = model(*inputs, noise=noise), model(*inputs, noise=noise.clone())
        assert torch.equal(a, b)
        assert torch.equal(model(*inputs), model(*inputs))  # the seeded default noise
        assert not torch.allclose(a, model(*inputs, noise=torch.randn_like(noise)))


def test_eta_one_uses_per_step_noise():
    model = STFDiff(**TINY, eta=1.0, sample_steps=5).eval()
    assert model.traits.sampling.noise_channels == 6 * 5
    with pytest.raises(ConfigError, match="noise"):
        model(*triplet(1, 8, 8), noise=torch.randn(1, 6, 8, 8))


def test_residual_and_affine_spaces_invert():
    f1, _, f2 = triplet(1, 8, 8)
    for arguments in ({"residual": True, "gain": 3.0, "shift": 0.0}, {"residual": False}):
        model = STFDiff(**TINY, **arguments)
        torch.testing.assert_close(model.x0_to_target(model.target_to_x0(f2, f1), f1), f2)
    paper = STFDiff(**TINY)  # reflectance [0, 1] -> the public code's [-1, 1]
    assert paper.target_to_x0(torch.tensor([0.0, 1.0]), torch.zeros(2)).tolist() == [-1.0, 1.0]


@pytest.mark.parametrize("arguments", [
    {"dim": 0}, {"dim_mults": ()}, {"sample_steps": 0}, {"sample_steps": 101}, {"eta": -1.0}, {"gain": 0.0},
    {"clip": 0.0}, {"residual": 1}, {"timesteps": 1.5},
])
def test_invalid_arguments_raise_config_error(arguments):
    with pytest.raises(ConfigError):
        STFDiff(**{**TINY, **arguments})


# --------------------------------------------------------------------------- tiling, noise fields, uncertainty


def test_one_noise_field_per_scene_makes_tiling_whole_scene_exact():
    torch.manual_seed(0)
    model = STFDiff(**TINY, sample_steps=3).eval()
    f1, c1, c2 = (x[0].numpy() for x in triplet(1, 40, 52))
    noise = np.random.default_rng(0).standard_normal((model.traits.sampling.noise_channels, 40, 52), dtype=np.float32)
    with torch.no_grad():
        expected = model(*(torch.from_numpy(a)[None] for a in (f1, c1, c2)), noise=torch.from_numpy(noise)[None])
    got = predict_scene(model, f1, c1, c2, tile=256, device="cpu", extra_inputs={"noise": noise})
    np.testing.assert_allclose(got, expected[0].numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="noise"):
        predict_scene(model, f1, c1, c2, tile=256, device="cpu", extra_inputs={"noise": noise[:, :10]})


def test_samples_give_a_mean_and_a_standard_deviation_and_repeat():
    torch.manual_seed(0)
    model = Standardized(STFDiff(**TINY, sample_steps=2, residual=True, gain=1.0, shift=0.0, clip=None),
                         [0.1] * 6, [0.05] * 6).eval()
    f1, c1, c2 = (x[0].numpy() for x in triplet(1, 20, 28))
    first = sample_scene(model, f1, c1, c2, tile=512, samples=3, seed=7)
    again = sample_scene(model, f1, c1, c2, tile=512, samples=3, seed=7)
    assert set(first) == {"prediction", "uncertainty"}
    np.testing.assert_array_equal(first["prediction"], again["prediction"])
    draws = [sample_scene(model, f1, c1, c2, tile=512, samples=0, seed=7)]
    assert draws[0].shape == (6, 20, 28)
    assert np.isfinite(first["uncertainty"]).all() and (first["uncertainty"] > 0).mean() > 0.99
