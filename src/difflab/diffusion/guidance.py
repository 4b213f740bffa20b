"""Classifier-free guidance as a wrapper around any eps model (Ho & Salimans 2022).

One network trained with condition dropout is both the conditional model
eps(x, t, c) and the unconditional one eps(x, t, null(c)). Guidance mixes them:

    eps_w(x, t, c) = eps(x, t, null(c)) + w (eps(x, t, c) - eps(x, t, null(c))).

Since eps = -sigma(t) score, this is the score of p_t(x | c)^w p_t(x)^(1 - w)
(up to its normaliser): w = 1 is the conditional model, w = 0 the unconditional
one, w > 1 sharpens towards the condition. Ho & Salimans (2022, Eq. 6) write the
same mixture as (1 + w') eps_c - w' eps_u, so their w' is our w - 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.core.cond import Cond, NullCond, cat
from difflab.diffusion.parameterization import EpsModel


def guided(eps_model: EpsModel, w: float, null: NullCond) -> EpsModel:
    """The guided eps model ``(x_t, t, cond=None) -> eps_w``, one batched call.

    The conditional and null halves are stacked along the batch and sent through
    ``eps_model`` together (Ho & Salimans 2022, Algorithm 2). With ``cond=None``
    there is nothing to guide and the model is called as it is.

    Args:
        eps_model: ``eps_model(x_t, t, cond)``, e.g. from ``as_eps_model``.
        w: guidance weight; 1 = conditional, 0 = unconditional.
        null: the recipe's null condition (``core.cond.NullCond``).
    """

    def model(x_t: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        if cond is None:
            return eps_model(x_t, t)
        both = eps_model(
            torch.cat([x_t, x_t]), torch.cat([t, t]), cat(cond, null(cond))
        )
        eps_c, eps_u = both.chunk(2)
        # = eps_u + w (eps_c - eps_u), written so that w = 1 returns eps_c exactly.
        return eps_c + (w - 1) * (eps_c - eps_u)

    return model
