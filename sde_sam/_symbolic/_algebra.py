"""The sympy pieces every derivation shares (DESIGN §5): the symbols of the twin problem, vector helpers, batch
distributions and sampling factors. Imports nothing of the package, so the rule family and the derivation both
build on it."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import sympy as sp


def is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class Symbols:
    """Coordinates ``x``, per-example coefficients ``coeffs[name][i]``, ``rho``, ``sigma`` (F-SAM), ``lam`` (RW-SAM)
    and the per-example losses ``f_i``, gradients ``g_i`` and Hessians ``H_i``."""

    x: tuple[sp.Symbol, ...]
    coeffs: dict[str, tuple[sp.Symbol, ...]]
    rho: sp.Symbol
    sigma: sp.Symbol
    lam: sp.Symbol
    losses: tuple[sp.Expr, ...]
    grads: tuple[sp.Matrix, ...]
    hessians: tuple[sp.Matrix, ...]

    @property
    def args(self) -> tuple[sp.Symbol, ...]:
        """Argument order of lambdified functions: ``x``, coefficients (name-major), ``rho``, ``sigma``, ``lam``."""
        flat = tuple(s for name in self.coeffs for s in self.coeffs[name])
        return (*self.x, *flat, self.rho, self.sigma, self.lam)


def entries(v: sp.MatrixBase) -> list[sp.Expr]:
    """The entries of a matrix in row-major order."""
    return [cast(sp.Expr, v[j]) for j in range(v.rows * v.cols)]


def norm(v: sp.Matrix) -> sp.Expr:
    return sp.Abs(v[0]) if v.shape[0] == 1 else sp.sqrt(sp.Add(*[e**2 for e in entries(v)]))


def normalize(v: sp.Matrix) -> sp.Matrix:
    """``N(v) = v/||v||``: ``sign(v)`` in 1-D (``0`` at ``v = 0``, like the code's safe normalization)."""
    if v.shape[0] == 1:
        return sp.Matrix([sp.sign(v[0])])
    nv = norm(v)
    return v / nv


def masked(spec: Any, v: sp.Matrix) -> sp.Matrix:
    if spec.mask is None:
        return v
    return sp.Matrix([e if m else sp.Integer(0) for e, m in zip(entries(v), spec.mask, strict=True)])


def mean_of(vs: Sequence[sp.Matrix]) -> sp.Matrix:
    out = vs[0]
    for v in vs[1:]:
        out = out + v
    return out / len(vs)


def gibbs_weights(sy: Symbols, idx: Sequence[int]) -> list[sp.Expr]:
    """``w_q = exp(lambda s_q) / sum_r exp(lambda s_r)`` over the batch slots, ``s_q = ||g_{i_q}||``."""
    e = [sp.exp(sy.lam * norm(sy.grads[i])) for i in idx]
    total = sum(e)
    return [ei / total for ei in e]


def grad_of(expr: sp.Expr, x) -> sp.Matrix:
    return sp.Matrix([sp.diff(expr, xj) for xj in x])


def sq(v: sp.Matrix) -> sp.Expr:
    return sp.Add(*[e**2 for e in entries(v)])


def mask_matrix(spec: Any, dim: int) -> sp.Matrix:
    """``P = diag(M)`` (identity without a mask)."""
    return sp.eye(dim) if spec.mask is None else sp.diag(*[1 if m else 0 for m in spec.mask])


def batch_distribution(
    n: int, size: int, with_replacement: bool, ordered: bool = False
) -> tuple[tuple[tuple[int, ...], sp.Expr], ...]:
    """All size-``size`` batches of ``range(n)`` with their exact probabilities (``sympy.Rational``).

    ``ordered``: ordered tuples (needed when micro-batches split the batch by position); otherwise multisets
    (with replacement, multinomial probabilities) or subsets (without replacement, uniform)."""
    if not is_int(n) or n < 1:
        raise ValueError(f"`n` must be a positive integer, got {n!r}")
    if not is_int(size) or size < 1:
        raise ValueError(f"`size` must be a positive integer, got {size!r}")
    if not with_replacement and size > n:
        raise ValueError(f"`size`={size} exceeds n={n}: without replacement it must be in [1, {n}]")
    if with_replacement and ordered:
        rows = list(itertools.product(range(n), repeat=size))
        return tuple((r, sp.Rational(1, n**size)) for r in rows)
    if with_replacement:
        out = []
        for r in itertools.combinations_with_replacement(range(n), size):
            counts = [r.count(i) for i in set(r)]
            ways = math.factorial(size) // math.prod(math.factorial(c) for c in counts)
            out.append((r, sp.Rational(ways, n**size)))
        return tuple(out)
    if ordered:
        rows = list(itertools.permutations(range(n), size))
        return tuple((r, sp.Rational(1, len(rows))) for r in rows)
    rows = list(itertools.combinations(range(n), size))
    return tuple((r, sp.Rational(1, len(rows))) for r in rows)


def sampling_factor_formula(b: int, n: int, with_replacement: bool) -> sp.Expr:
    """``c(b) = 1/b`` with replacement, ``(n - b)/(b (n - 1))`` without (DESIGN §1; ``0`` when ``n = 1``)."""
    if with_replacement:
        return sp.Rational(1, b)
    if n == 1:
        return sp.Integer(0)
    return sp.Rational(n - b, b * (n - 1))
