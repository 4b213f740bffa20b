"""Optimisation on toy problems: gradient descent, momentum, Adam and backprop by hand.

The optimisers are plain functions ``(grad, x0, ..., steps) -> trajectory`` over
torch tensors, so a page can plot every iterate. They follow the update rules of
``torch.optim.SGD`` (with and without momentum) and ``torch.optim.Adam``, which the
tests check step by step.

References:
    Polyak (1964), Some methods of speeding up the convergence of iteration
    methods, doi:10.1016/0041-5553(64)90137-5 (heavy-ball momentum).
    Kingma & Ba (2015), Adam: A Method for Stochastic Optimization,
    arXiv:1412.6980 (Algorithm 1).
    Rumelhart, Hinton & Williams (1986), Learning representations by
    back-propagating errors, doi:10.1038/323533a0.
    Rosenbrock (1960), doi:10.1093/comjnl/3.3.175.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Grad = Callable[[Tensor], Tensor]


# --- Test functions -----------------------------------------------------------------


def quadratic(x: Tensor, A: Tensor, b: Tensor | None = None) -> Tensor:
    """``0.5 x^T A x - b^T x`` over the last axis. x: (..., D); A: (D, D); b: (D,)."""
    val = 0.5 * ((x @ A) * x).sum(-1)
    return val if b is None else val - (x * b).sum(-1)


def quadratic_grad(x: Tensor, A: Tensor, b: Tensor | None = None) -> Tensor:
    """Gradient ``A x - b`` of :func:`quadratic` (A symmetric)."""
    g = x @ A.T
    return g if b is None else g - b


def rosenbrock(x: Tensor, a: float = 1.0, b: float = 100.0) -> Tensor:
    """Rosenbrock's banana ``(a - x)^2 + b (y - x^2)^2``, minimum 0 at ``(a, a^2)``.

    Args:
        x: (..., 2) points.

    Returns:
        (...) values.
    """
    u, v = x[..., 0], x[..., 1]
    return (a - u) ** 2 + b * (v - u**2) ** 2


def rosenbrock_grad(x: Tensor, a: float = 1.0, b: float = 100.0) -> Tensor:
    """Gradient of :func:`rosenbrock`, (..., 2)."""
    u, v = x[..., 0], x[..., 1]
    du = -2.0 * (a - u) - 4.0 * b * u * (v - u**2)
    dv = 2.0 * b * (v - u**2)
    return torch.stack([du, dv], -1)


# --- Optimisers ---------------------------------------------------------------------


def gradient_descent(grad: Grad, x0: Tensor, lr: float, steps: int) -> Tensor:
    """Plain gradient descent ``x <- x - lr grad(x)``.

    Returns:
        (steps + 1, *x0.shape) iterates, entry 0 is ``x0``.
    """
    xs = [x0]
    x = x0
    for _ in range(steps):
        x = x - lr * grad(x)
        xs.append(x)
    return torch.stack(xs)


def momentum(grad: Grad, x0: Tensor, lr: float, beta: float, steps: int) -> Tensor:
    """Heavy-ball momentum in PyTorch's form: ``v <- beta v + grad(x); x <- x - lr v``.

    Equivalent to Polyak (1964) with step ``lr`` and momentum ``beta``; identical to
    ``torch.optim.SGD(lr=lr, momentum=beta)``.

    Returns:
        (steps + 1, *x0.shape) iterates.
    """
    xs = [x0]
    x = x0
    v = torch.zeros_like(x0)
    for _ in range(steps):
        v = beta * v + grad(x)
        x = x - lr * v
        xs.append(x)
    return torch.stack(xs)


def adam(
    grad: Grad,
    x0: Tensor,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    steps: int = 100,
) -> Tensor:
    """Adam (Kingma & Ba 2015, Algorithm 1).

    ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``, bias corrections
    ``m_hat = m / (1 - b1^k)``, ``v_hat = v / (1 - b2^k)``, and the step
    ``x <- x - lr m_hat / (sqrt(v_hat) + eps)``.

    Returns:
        (steps + 1, *x0.shape) iterates.
    """
    b1, b2 = betas
    xs = [x0]
    x = x0
    m = torch.zeros_like(x0)
    v = torch.zeros_like(x0)
    for k in range(1, steps + 1):
        g = grad(x)
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * g**2
        m_hat = m / (1.0 - b1**k)
        v_hat = v / (1.0 - b2**k)
        x = x - lr * m_hat / (v_hat.sqrt() + eps)
        xs.append(x)
    return torch.stack(xs)


# --- A two-layer network, differentiated by hand -----------------------------------


def mlp_init(
    d_in: int,
    d_hidden: int,
    d_out: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> dict[str, Tensor]:
    """Parameters ``W1 (H, D), b1 (H,), W2 (O, H), b2 (O,)``, 1/sqrt(fan-in) scale."""

    def randn(*shape: int) -> Tensor:
        return torch.randn(shape, generator=generator, dtype=dtype)

    return {
        "W1": randn(d_hidden, d_in) / d_in**0.5,
        "b1": 0.1 * randn(d_hidden),
        "W2": randn(d_out, d_hidden) / d_hidden**0.5,
        "b2": 0.1 * randn(d_out),
    }


def mlp_forward(params: dict[str, Tensor], x: Tensor) -> Tensor:
    """``y_hat = tanh(x W1^T + b1) W2^T + b2``. x: (B, D) -> (B, O)."""
    h = torch.tanh(x @ params["W1"].T + params["b1"])
    return h @ params["W2"].T + params["b2"]


def mlp_loss(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error ``1/(2B) sum_i ||y_hat_i - y_i||^2``."""
    return 0.5 * ((mlp_forward(params, x) - y) ** 2).sum() / x.shape[0]


def mlp_backprop_by_hand(
    params: dict[str, Tensor], x: Tensor, y: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss and gradients of :func:`mlp_loss` by the chain rule, written out.

    Forward: ``a = x W1^T + b1``, ``h = tanh(a)``, ``y_hat = h W2^T + b2``.
    Backward (each line the chain rule through one forward line, in reverse)::

        delta2 = dL/dy_hat = (y_hat - y) / B               (B, O)
        dW2 = delta2^T h,  db2 = sum_i delta2_i
        delta1 = dL/da = (delta2 W2) * (1 - h^2)            (B, H), tanh' = 1 - tanh^2
        dW1 = delta1^T x,  db1 = sum_i delta1_i

    Args:
        params: dict from :func:`mlp_init`.
        x: (B, D) inputs; y: (B, O) targets.

    Returns:
        (loss, grads) with ``grads`` keyed like ``params``.
    """
    B = x.shape[0]
    a = x @ params["W1"].T + params["b1"]  # (B, H)
    h = torch.tanh(a)
    y_hat = h @ params["W2"].T + params["b2"]  # (B, O)
    loss = 0.5 * ((y_hat - y) ** 2).sum() / B
    delta2 = (y_hat - y) / B
    delta1 = (delta2 @ params["W2"]) * (1.0 - h**2)
    grads = {
        "W1": delta1.T @ x,
        "b1": delta1.sum(0),
        "W2": delta2.T @ h,
        "b2": delta2.sum(0),
    }
    return loss, grads
