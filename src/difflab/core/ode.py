"""Euler's and Heun's methods for dx/dt = f(x, t) along a grid, written once.

Both the flow-matching sampler (:func:`difflab.flow.rectified.flow_sample`, a
velocity field) and the probability-flow ODE sampler
(:func:`difflab.score.samplers.ode_sample`, the drift of a score SDE) integrate
with :func:`integrate`; ``tests/test_flow.py`` checks that the two agree on the
same ODE.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from difflab.core.progress import tqdm

METHODS = ("euler", "heun")


def integrate(
    drift: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    ts: Tensor,
    *,
    method: str = "euler",
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
    desc: str = "ODE",
) -> Tensor:
    """Integrate dx/dt = ``drift(x, t)`` from ``ts[0]`` to ``ts[-1]``.

    ``ts``: the grid, a 1-D float tensor (the step dt = ts[i + 1] - ts[i] may be
    negative); ``t`` reaches ``drift`` as a ``(B,)`` tensor of x's dtype and device.
    ``method``: ``"euler"`` (one evaluation a step) or ``"heun"`` (explicit
    trapezoid, Karras et al. 2022, Algorithm 1: two a step, the correction on every
    step). ``callback`` gets ``{"i", "t", "x", "v", "dt", "nfe"}`` after each step,
    ``v`` the slope used.

    Raises:
        ValueError: for another method.
    """
    if method not in METHODS:
        raise ValueError(f"method must be 'euler' or 'heun', got {method!r}")
    nfe = 0
    for i in tqdm(range(len(ts) - 1), disable=not progress, desc=f"{desc} {method}"):
        t = torch.full((x.shape[0],), float(ts[i]), dtype=x.dtype, device=x.device)
        dt = float(ts[i + 1] - ts[i])
        d = drift(x, t)
        nfe += 1
        if method == "heun":
            t_next = torch.full_like(t, float(ts[i + 1]))
            d_next = drift(x + dt * d, t_next)
            nfe += 1
            d = 0.5 * (d + d_next)  # 2nd order correction.
        x = x + dt * d  # Euler step.
        if callback is not None:
            callback(
                {"i": i, "t": float(ts[i + 1]), "x": x, "v": d, "dt": dt, "nfe": nfe}
            )
    return x
