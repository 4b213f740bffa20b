"""The model-call convention: every model is called ``model(x, t, cond=None)``.

A model (a network wrapped by :func:`difflab.diffusion.parameterization.as_eps_model`,
a guided model, an exact score, a velocity field) is called as ``model(x, t)`` or,
with a condition, ``model(x, t, cond)``, as k-diffusion always passes its
``extra_args``. :func:`call` is that rule, written once for every sampler and
solver. The aliases say what a model predicts and what its ``t`` is, so that a
signature says which kind it takes:

- :data:`EpsModel`: the noise eps in continuous time ``t`` (a ``(B,)`` float
  tensor): what every sampler and solver takes. A network trained on the DDPM
  chain's step index n is wrapped once, where it is loaded, by ``as_eps_model``,
  which puts step n at t = (n + 1) / T (``Schedule.time``, ``Schedule.index``);
- :data:`IndexEpsModel`: the noise eps on the step index itself (a ``(B,)`` long
  tensor, 0 to T - 1), the way the DDPM chapter writes a model by hand; no
  sampler takes one: ``DiscreteNoise.continuous`` turns it into an
  :data:`EpsModel` (and ``Schedule.index`` refuses an integer t, so passing one
  where a time belongs fails loudly);
- :data:`ScoreModel`: the score grad_x log p_t(x) in continuous time (the score
  SDE samplers and likelihoods);
- :data:`VelocityModel`: the velocity dx/dt in continuous time t in [0, 1] (flow
  matching).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

IndexEpsModel = Callable[..., Tensor]  # eps(x_t, t_index, cond=None)
EpsModel = Callable[..., Tensor]  # eps(x_t, t, cond=None), t continuous
ScoreModel = Callable[..., Tensor]  # score(x_t, t, cond=None), t continuous
VelocityModel = Callable[..., Tensor]  # v(x_t, t, cond=None), t in [0, 1]


def call(
    model: Callable[..., Tensor], x: Tensor, t: Tensor, cond: Any = None
) -> Tensor:
    """``model(x, t)`` without a condition, else ``model(x, t, cond)``."""
    return model(x, t) if cond is None else model(x, t, cond)
