"""Guidance as wrappers around any eps model: classifier-free and classifier guidance.

**Classifier-free guidance** (Ho & Salimans 2022). One network trained with condition dropout is both the conditional model
eps(x, t, c) and the unconditional one eps(x, t, null(c)). Guidance mixes them:

    eps_w(x, t, c) = eps(x, t, null(c)) + w (eps(x, t, c) - eps(x, t, null(c))).

Since eps = -sigma(t) score, this is the score of p_t(x | c)^w p_t(x)^(1 - w)
(up to its normaliser): w = 1 is the conditional model, w = 0 the unconditional
one, w > 1 sharpens towards the condition. Ho & Salimans (2022, Eq. 6) write the
same mixture as (1 + w') eps_c - w' eps_u, so their w' is our w - 1.

**Classifier guidance** (Dhariwal & Nichol 2021, Sec. 4). A classifier
p_phi(y | x_t, t) trained on noisy inputs tilts an eps model by its gradient:

    eps_hat(x, t, y) = eps(x, t) - s sigma(t) grad_x log p_phi(y | x, t),

the score of p_t(x) p_phi(y | x)^s (their Sec. 4.2 and Algorithm 2, where
sigma(t) = sqrt(1 - alpha_bar_t)). With the exact posterior and s = w it equals
classifier-free guidance with weight w, since p(x | y)^w p(x)^(1 - w) =
p(x) p(y | x)^w / p(y)^w.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from difflab.core.cond import Cond, NullCond, cat
from difflab.core.models import EpsModel
from difflab.core.tensors import append_dims
from difflab.diffusion.noise import NoiseLevels

#: ``log_prob_fn(x_t, t, cond) -> (B,)``: log p(y | x_t, t) of each row's label.
LogProbFn = Callable[[Tensor, Tensor, Cond], Tensor]


def _check_scale(name: str, value: float) -> float:
    """``value`` as a float, or a clear error if it is not a finite number."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def guided(eps_model: EpsModel, w: float, null: NullCond) -> EpsModel:
    """The guided eps model ``(x_t, t, cond=None) -> eps_w``, one batched call.

    The conditional and null halves are stacked along the batch and sent through
    ``eps_model`` together (Ho & Salimans 2022, Algorithm 2). With ``cond=None``
    there is nothing to guide and the model is called as it is. At w = 1 the
    mixture is the conditional model and at w = 0 the unconditional one, so only
    that half is evaluated: one call of the batch, half the work of the stacked
    one (the pages that compare w = 0 and 1 with a larger w sample at all three).

    Args:
        eps_model: ``eps_model(x_t, t, cond)``, e.g. from ``as_eps_model``.
        w: guidance weight; 1 = conditional, 0 = unconditional.
        null: the recipe's null condition (``core.cond.NullCond``).

    Raises:
        ValueError: if ``w`` is not a finite number.
    """
    w = _check_scale("the guidance weight w", w)

    def model(x_t: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        if cond is None:
            return eps_model(x_t, t)
        if w == 1.0:
            return eps_model(x_t, t, cond)
        if w == 0.0:
            return eps_model(x_t, t, null(cond))
        both = eps_model(
            torch.cat([x_t, x_t]), torch.cat([t, t]), cat(cond, null(cond))
        )
        eps_c, eps_u = both.chunk(2)
        # = eps_u + w (eps_c - eps_u), written so that w = 1 returns eps_c exactly.
        return eps_c + (w - 1) * (eps_c - eps_u)

    return model


def classifier_guided(
    eps_model: EpsModel,
    log_prob_fn: LogProbFn,
    scale: float,
    noise: NoiseLevels,
    *,
    null: NullCond | None = None,
) -> EpsModel:
    """Classifier guidance: ``eps - scale * sigma(t) * grad_x log p(y | x_t, t)``.

    Dhariwal & Nichol 2021, Sec. 4.2 and Algorithm 2 (there sigma(t) =
    sqrt(1 - alpha_bar_t)). With ``null`` given, the tilted model is the
    unconditional one and the result is the score of p_t(x) p(y | x_t)^scale.
    With ``null=None`` the model sees ``cond`` and is itself conditional, so the
    result is the score of p_t(x | y) p(y | x_t)^scale, which for an exact
    classifier is p_t(x) p(y | x_t)^(1 + scale) up to its normaliser: guidance
    weight w = 1 + scale on the unconditional model. The gradient is
    taken by autograd, also inside the samplers' ``no_grad``; it is the gradient
    of each row's own log-probability as long as ``log_prob_fn`` treats the rows
    independently (no batch norm).

    Args:
        eps_model: ``eps_model(x_t, t, cond)`` on the time of ``noise`` (continuous
            t, as every model).
        log_prob_fn: ``log_prob_fn(x_t, t, cond) -> (B,)``, log p(y | x_t, t) of
            the labels in ``cond`` (e.g. a noise-aware classifier's log-softmax).
        scale: the guidance scale s; 0 returns ``eps_model``'s prediction.
        noise: the noise levels, for sigma(t).
        null: if given, ``eps_model`` is called on ``null(cond)``: the
            unconditional branch of a model trained with condition dropout is
            guided (as for the unconditional model of the paper's Fig. 3);
            otherwise it sees ``cond`` itself.

    Raises:
        ValueError: if ``scale`` is not finite, or ``cond`` is missing when the
            model is called.
    """
    scale = _check_scale("the classifier guidance scale", scale)

    def model(x_t: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        if cond is None:
            raise ValueError("classifier guidance needs cond with the labels to guide")
        eps = eps_model(x_t, t, cond if null is None else null(cond))
        if scale == 0:
            return eps
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(log_prob_fn(x, t, cond).sum(), x)
        sigma = append_dims(noise.sigma(t).to(x_t.dtype), x_t)
        return eps - scale * sigma * grad.to(eps.dtype)

    return model
