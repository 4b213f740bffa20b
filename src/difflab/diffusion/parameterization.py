"""What a network predicts (eps, x_0, v or the score) and the conversions between them.

Every conversion takes ``alpha_bar`` already broadcast against ``x_t`` (see
:func:`difflab.diffusion.schedules.gather`). With x_t = sqrt(a) x_0 + sqrt(1 - a) eps:

- eps -> x_0 (Ho et al. 2020, Eq. 15): x_0 = (x_t - sqrt(1 - a) eps) / sqrt(a)
- v = sqrt(a) eps - sqrt(1 - a) x_0 (Salimans & Ho 2022, Sec. 4)
- score = grad log q(x_t) = -E[eps | x_t] / sqrt(1 - a) (Song et al. 2021b, Eq. 7)

:func:`as_eps_model` turns any network into the ``eps_model(x_t, t, cond=None)``
callable (t continuous) that every sampler takes, so that samplers compare on one
trained network.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from difflab.core.cond import Cond
from difflab.core.models import EpsModel
from difflab.diffusion.schedules import Schedule, gather

PREDICTIONS = ("eps", "x0", "v")


def x0_from_eps(x_t: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    """x_0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) (Ho et al. 2020, Eq. 15)."""
    return (x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()


def eps_from_x0(x_t: Tensor, x0: Tensor, alpha_bar: Tensor) -> Tensor:
    """eps = (x_t - sqrt(alpha_bar) x_0) / sqrt(1 - alpha_bar), the inverse of the above."""
    return (x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()


def v_from_x0_eps(x0: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    """v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans & Ho 2022, Sec. 4)."""
    return alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0


def x0_from_v(x_t: Tensor, v: Tensor, alpha_bar: Tensor) -> Tensor:
    """x_0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v."""
    return alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * v


def eps_from_v(x_t: Tensor, v: Tensor, alpha_bar: Tensor) -> Tensor:
    """eps = sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v."""
    return (1 - alpha_bar).sqrt() * x_t + alpha_bar.sqrt() * v


def score_from_eps(eps: Tensor, alpha_bar: Tensor) -> Tensor:
    """grad_x log q_t(x) = -eps / sqrt(1 - alpha_bar) for the optimal eps (Song et al. 2021b)."""
    return -eps / (1 - alpha_bar).sqrt()


def eps_from_score(score: Tensor, alpha_bar: Tensor) -> Tensor:
    """eps = -sqrt(1 - alpha_bar) score, the inverse of :func:`score_from_eps`."""
    return -(1 - alpha_bar).sqrt() * score


def target(prediction: str, x0: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    """The regression target of a network that predicts ``prediction``."""
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return v_from_x0_eps(x0, eps, alpha_bar)
    raise ValueError(f"Unknown prediction {prediction!r}; use one of {PREDICTIONS}.")


def to_eps(prediction: str, out: Tensor, x_t: Tensor, alpha_bar: Tensor) -> Tensor:
    """Convert a network output of kind ``prediction`` into an eps prediction."""
    if prediction == "eps":
        return out
    if prediction == "x0":
        return eps_from_x0(x_t, out, alpha_bar)
    if prediction == "v":
        return eps_from_v(x_t, out, alpha_bar)
    raise ValueError(f"Unknown prediction {prediction!r}; use one of {PREDICTIONS}.")


def as_eps_model(
    net: Callable[..., Tensor], schedule: Schedule, prediction: str = "eps"
) -> EpsModel:
    """Wrap ``net(x, n, cond)`` as ``eps_model(x_t, t, cond=None) -> eps_hat``.

    This is where a network trained on the chain's step index n is wrapped, once,
    into the package's model convention (:mod:`difflab.core.models`): ``t`` is
    continuous time, step index n sitting at t = (n + 1) / T
    (:meth:`~difflab.diffusion.schedules.Schedule.time`), so every sampler and
    solver calls it the same way.

    Args:
        net: predicts ``prediction`` from (x_t, n as float, cond).
        schedule: the discrete schedule the network was trained on.
        prediction: ``"eps"``, ``"x0"`` or ``"v"``; the output is converted to eps.

    ``cond`` is passed to the network unchanged; classifier-free guidance is a
    wrapper around the result (:func:`difflab.diffusion.guidance.guided`). An
    integer ``t`` (a step index) raises ``TypeError``.
    """
    if prediction not in PREDICTIONS:
        raise ValueError(
            f"Unknown prediction {prediction!r}; use one of {PREDICTIONS}."
        )

    def eps_model(x_t: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        n = schedule.index(t).to(x_t.device)
        out = net(x_t, n.to(x_t.dtype), cond)
        return to_eps(prediction, out, x_t, gather(schedule.alpha_bar, n, x_t))

    return eps_model
