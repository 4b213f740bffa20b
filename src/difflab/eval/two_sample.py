"""Two-sample tests: is a set of samples drawn from the same law as another?

The energy distance (Szekely & Rizzo 2004; 2013, Eq. 2.1) between the laws of X
and Y,

    E(X, Y) = 2 E|X - Y| - E|X - X'| - E|Y - Y'|,

is zero exactly when the two laws are equal (for finite first moments). Its
V-statistic on samples x (N, D) and y (M, D) replaces each expectation by the
mean over all pairs. Whether a value is large is read against its
*permutation null*: pool the N + M points, split them at random into sets of
sizes N and M, and recompute; under equal laws every split is as likely as the
observed one, so the observed statistic's rank among the splits is an exact
p-value (Szekely & Rizzo 2004, Sec. 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def _energy_from_distances(d: Tensor, a: Tensor) -> Tensor:
    """Energy statistics of splits: d (P, P) pairwise distances of the pooled
    points, a (R, P) bool membership in the first set; returns (R,).

    One product a d (R, P) gives both the cross and the within-x sums; the
    within-y sum is the total minus the other two (d is symmetric).
    """
    a = a.to(d.dtype)
    n = a.sum(1)
    m = d.shape[0] - n
    ad = a @ d  # (R, P)
    s_xx = (ad * a).sum(1)
    s_xy = ad.sum(1) - s_xx
    s_yy = d.sum() - s_xx - 2 * s_xy
    return 2 * s_xy / (n * m) - s_xx / n**2 - s_yy / m**2


def energy_distance(x: Tensor, y: Tensor) -> float:
    """The energy-distance V-statistic of samples x (N, D) and y (M, D), float64."""
    pooled = torch.cat([x, y]).double().cpu()
    d = torch.cdist(pooled, pooled)
    a = torch.zeros(1, len(pooled), dtype=torch.bool)
    a[0, : len(x)] = True
    return float(_energy_from_distances(d, a)[0])


@dataclass(frozen=True)
class TwoSampleResult:
    """An energy-distance test: the statistic, its permutation null and p-value."""

    statistic: float
    null: Tensor  # (R,) statistics of random splits of the pooled samples
    p_value: float  # (1 + #{null >= statistic}) / (1 + R)

    def quantile(self, q: float) -> float:
        """The q-quantile of the permutation null (e.g. 0.99: a 1% level test)."""
        return float(torch.quantile(self.null, q))


def energy_test(
    x: Tensor,
    y: Tensor,
    permutations: int = 200,
    generator: torch.Generator | None = None,
) -> TwoSampleResult:
    """Energy distance of x (N, D) and y (M, D) with a permutation null.

    The pairwise distances of the pooled points are computed once, so the null
    costs R (N + M)^2 multiply-adds (a few hundred splits of a few thousand
    points take well under a second).
    """
    pooled = torch.cat([x, y]).double().cpu()
    p = len(pooled)
    d = torch.cdist(pooled, pooled)
    observed = torch.zeros(1, p, dtype=torch.bool)
    observed[0, : len(x)] = True
    perms = torch.stack(
        [torch.randperm(p, generator=generator) for _ in range(permutations)]
    )
    splits = perms < len(x)  # (R, P): a random set of len(x) pooled points
    stat = float(_energy_from_distances(d, observed)[0])
    null = _energy_from_distances(d, splits)
    p_value = (1 + int((null >= stat).sum())) / (1 + permutations)
    return TwoSampleResult(stat, null, p_value)
