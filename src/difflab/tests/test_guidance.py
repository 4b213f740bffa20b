"""Classifier-free guidance against the closed-form tilted score of a mixture."""

import pytest
import torch
from torch.testing import assert_close

from difflab.core.cond import NullCond
from difflab.diffusion.guidance import guided
from difflab.diffusion.noise import eps_model_from_score, score_model_from_eps
from difflab.score.sde import VPSDE
from difflab.toy.mixtures import two_blobs
from difflab.toy.sandbox import class_score_fn

F64 = torch.float64


def _setup(n=64, seed=0):
    mix, sde = two_blobs(), VPSDE()  # classes: its 2 components; 2 is the null label
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(n, 2, generator=g, dtype=F64)
    t = 0.05 + 0.5 * torch.rand(n, generator=g, dtype=F64)
    y = torch.randint(0, 2, (n,), generator=g)
    return mix, sde, x, t, y


def _tilted_score(mix, sde, x, t, y, w):
    """grad_x [w log p_t(x | y) + (1 - w) log p_t(x)] by autograd of the densities."""
    alpha, sigma = sde.marginal_coefs(t)
    x = x.clone().requires_grad_(True)
    log_c = torch.stack(
        [
            mix.component(int(k)).perturbed_log_prob(x[i : i + 1], alpha[i], sigma[i])[
                0
            ]
            for i, k in enumerate(y)
        ]
    )
    log_u = mix.perturbed_log_prob(x, alpha, sigma)
    (grad,) = torch.autograd.grad((w * log_c + (1 - w) * log_u).sum(), x)
    return grad


@pytest.mark.parametrize("w", [0.0, 1.0, 3.0])
def test_guided_score_is_the_score_of_the_tilted_density(w):
    """eps_w = -sigma grad log [p_t(x | y)^w p_t(x)^(1 - w)] (Ho & Salimans 2022)."""
    mix, sde, x, t, y = _setup()
    eps = eps_model_from_score(class_score_fn(mix, sde), sde)
    calls = []

    def counted(x_t, t_, cond):
        calls.append(len(x_t))
        return eps(x_t, t_, cond)

    null = NullCond((("y", mix.n_components),))
    eps_w = guided(counted, w, null)(x, t, {"y": y})
    # One batched call for both halves; at w = 0 or 1 only the half that counts.
    assert calls == [len(x) if w in (0.0, 1.0) else 2 * len(x)]
    score_w = score_model_from_eps(lambda *a: eps_w, sde)(x, t)
    # Two routes, analytic component scores vs autograd of log-sum-exp densities:
    # equal to float64 rounding.
    assert_close(score_w, _tilted_score(mix, sde, x, t, y, w), atol=1e-9, rtol=1e-9)


def test_guidance_weight_one_is_the_conditional_model_and_zero_the_unconditional():
    mix, sde, x, t, y = _setup(seed=1)
    eps = eps_model_from_score(class_score_fn(mix, sde), sde)
    null = NullCond((("y", 2),))
    cond = {"y": y}
    assert torch.equal(guided(eps, 1.0, null)(x, t, cond), eps(x, t, cond))
    assert torch.equal(guided(eps, 0.0, null)(x, t, cond), eps(x, t, null(cond)))
    # Just beside them the stacked mixture runs, and agrees to rounding.
    for w, want in ((1.0, eps(x, t, cond)), (0.0, eps(x, t, null(cond)))):
        for near in (w - 1e-12, w + 1e-12):
            assert_close(guided(eps, near, null)(x, t, cond), want)
    # Without a condition there is nothing to guide.
    plain = eps_model_from_score(class_score_fn(mix, sde), sde)
    uncond = lambda x_t, t_, cond=None: plain(
        x_t, t_, {"y": torch.full((len(x_t),), 2)}
    )
    assert torch.equal(guided(uncond, 4.0, null)(x, t), uncond(x, t))


def test_a_wrong_guidance_formula_fails():
    """Ho & Salimans' own weight w' = w - 1 used as ours misses the tilted score."""
    mix, sde, x, t, y = _setup(seed=2)
    eps = eps_model_from_score(class_score_fn(mix, sde), sde)
    eps_w = guided(eps, 3.0 - 1, NullCond((("y", 2),)))(x, t, {"y": y})
    score_w = score_model_from_eps(lambda *a: eps_w, sde)(x, t)
    assert (score_w - _tilted_score(mix, sde, x, t, y, 3.0)).abs().max() > 0.1
