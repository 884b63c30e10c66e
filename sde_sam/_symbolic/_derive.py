"""Symbolic derivation of the drift and diffusion of every variant with sympy (DESIGN §5).

For symbolic polynomial per-example losses (``f_i(x) = a_i x^2/2 + b_i x + c_i x^3/6`` in 1-D, a cubic with
eight symbolic coefficients per example in 2-D) the one-step update ``G(x; xi)`` of DESIGN §2 is written out
exactly (``x + rho N(P d)`` substituted into the per-example gradients, ``N`` the identity, ``sign`` in 1-D or
``v/||v||``), the expectation over the exact batch distribution is a finite sum over enumerated batches
(ordered tuples when micro-batches split the batch, multisets / subsets otherwise), and the Taylor
coefficients in ``rho`` give

* the drift ``b = E[G] = b_0 + rho b_1 + rho^2 b_2`` (exact for cubic losses: ``G`` is quadratic in ``rho``
  because ``eps = rho N(P d(x))`` and ``g_i`` is quadratic in ``x``),
* the diffusion ``S = Cov[G] = S_0 + rho S_1 + O(rho^2)`` and the exact ``Cov[G]`` at finite ``rho``,
* the closed forms of DESIGN §3.1 built independently from per-example gradients (``grad`` of the implicit
  regularizer where there is one), so that ``b_1 - closed form`` can be reduced to ``0`` by ``sympy``.

F-SAM's EMA is taken as tracking the full gradient, ``mu = g`` (DESIGN §3.1). RW-SAM uses the exact score
``s_i = ||g_i||`` with Gibbs weights ``softmax(lambda s)`` over the batch (docs/rw-sam.md).
``rho``, F-SAM's ``sigma`` and RW-SAM's ``lambda`` stay symbolic; derivations are cached in-process
(``functools.lru_cache``) and optionally on disk (atomic pickle files keyed by a hash of the inputs).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import pickle
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import sympy as sp

from .._checks import Literal
from .._io import atomic_write_bytes
from ._algebra import (
    Symbols,
    batch_distribution,
    entries,
    is_int,
    mask_matrix,
    masked,
    mean_of,
    norm,
    normalize,
    sampling_factor_formula,
)
from ._rules import RULES, AbstractSymbolicRule, ClosedForm

#: Bump to invalidate on-disk caches when the derivation changes.
CACHE_VERSION = "2"
#: Environment variable naming a default on-disk cache directory (unset: in-process cache only).
CACHE_ENV = "SDE_SAM_SYMBOLIC_CACHE"

#: Coefficient names of the per-example losses, by dimension (DESIGN §5).
COEFFICIENTS = {
    1: ("a", "b", "c"),
    2: ("a11", "a12", "a22", "b1", "b2", "c1", "c2", "e"),
}


# -- inputs ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setting:
    """The finite problem a derivation runs on: dimension ``dim`` (1 or 2), ``n`` examples, batch size ``B``
    (``batch_size``) drawn with (``with_replacement=True``) or without replacement."""

    dim: int = 1
    n: int = 3
    batch_size: int = 2
    with_replacement: bool = True

    def __post_init__(self):
        if not is_int(self.dim) or self.dim not in (1, 2):
            raise ValueError(f"`dim` must be 1 or 2, got {self.dim!r}")
        if not is_int(self.n) or not 1 <= self.n <= 6:
            raise ValueError(f"`n` must be an integer in [1, 6] (symbolic sizes stay small), got {self.n!r}")
        if not is_int(self.batch_size) or not 1 <= self.batch_size <= 4:
            raise ValueError(f"`batch_size` must be an integer in [1, 4], got {self.batch_size!r}")
        if not isinstance(self.with_replacement, bool):
            raise TypeError(f"`with_replacement` must be a bool, got {type(self.with_replacement).__name__}")
        if not self.with_replacement and self.batch_size > self.n:
            raise ValueError(
                f"`batch_size`={self.batch_size} exceeds n={self.n}: without replacement it must be in [1, {self.n}]"
            )


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a derivation needs of a variant (DESIGN §2); ``rho``, ``sigma`` and ``lambda`` stay symbolic.

    ``normalize``: ``True`` (``v/||v||``), ``False`` (identity) or ``"full"`` (``v/||P g||``, DNSAM; batch rule only).
    ``mask``: a 0/1 flag per coordinate (SAM-ON), ``None`` for no mask. ``rule``: a built-in rule's name (a key of
    ``RULES``) or an :class:`~sde_sam.symbolic.AbstractSymbolicRule` (a rule of your own)."""

    name: str
    rule: str | AbstractSymbolicRule = "batch"
    normalize: bool | str = True
    micro_batch_size: int | None = None
    mask: tuple[bool, ...] | None = None
    weights_in_descent: bool = False

    def __post_init__(self):
        if not isinstance(self.rule, AbstractSymbolicRule) and self.rule not in RULES:
            raise ValueError(f"`rule` must be one of {tuple(RULES)} or an AbstractSymbolicRule, got {self.rule!r}")
        if self.micro_batch_size is not None and (not is_int(self.micro_batch_size) or self.micro_batch_size < 1):
            raise ValueError(f"`micro_batch_size` must be a positive integer or None, got {self.micro_batch_size!r}")
        if self.micro_batch_size is not None and not self.symbolic_rule.micro_batches:
            raise ValueError(f"`micro_batch_size` applies to the 'batch' rule only, not {self.rule!r}")
        if self.mask is not None and not all(isinstance(m, bool) for m in self.mask):
            raise TypeError(f"`mask` must be a tuple of bools (one per coordinate) or None, got {self.mask!r}")
        if self.normalize not in (True, False, "full") or (
            self.normalize == "full" and not self.symbolic_rule.full_normalization
        ):
            raise ValueError(f"`normalize` must be True, False or 'full' (batch rule only), got {self.normalize!r}")

    @property
    def symbolic_rule(self) -> AbstractSymbolicRule:
        """The rule's :class:`~sde_sam.symbolic.AbstractSymbolicRule` (a built-in one looked up by name)."""
        return self.rule if isinstance(self.rule, AbstractSymbolicRule) else RULES[self.rule]


def param_names(dim: int) -> tuple[str, ...]:
    """The parameter pytree keys of the numeric twin problems: ``("x1",)`` or ``("x1", "x2")``."""
    return tuple(f"x{j + 1}" for j in range(dim))


def spec_of(variant, dim: int) -> Spec:
    """The :class:`Spec` of a :class:`sde_sam.variants.Variant` on the ``dim``-dimensional twin problem.

    A mask is resolved against the parameter pytree ``{"x1": .., "x2": ..}``. RW-SAM needs ``score="exact"``
    (the finite-difference score draws a random vector and has no finite symbolic expectation)."""
    from .._variants._variant import Variant, resolve_mask
    from ._specs import symbolic_spec_of

    if isinstance(variant, Spec):
        return variant
    if not isinstance(variant, Variant):
        raise TypeError(f"`variant` must be a sde_sam.variants.Variant or a Spec, got {type(variant).__name__}")
    if not variant.perturbs:
        return Spec(variant.name, rule="none", normalize=False)
    fields = symbolic_spec_of(variant.rule, variant)
    normalize = variant.normalization.symbolic
    if fields is None or normalize is None or variant.preconditioner is not None:
        raise ValueError(
            f"variant {variant.name!r} has no symbolic derivation (rule {type(variant.rule).__name__}, "
            f"normalization {type(variant.normalization).__name__}, preconditioner {variant.preconditioner!r})"
        )
    mask = None
    if variant.mask is not None:
        tree = resolve_mask(variant.mask, dict.fromkeys(param_names(dim), 0.0))
        assert tree is not None
        mask = tuple(bool(tree[k]) for k in param_names(dim))
    return Spec(variant.name, normalize=normalize, mask=mask, **fields)


# -- batches and sampling factors (DESIGN §1) --------------------------------------------------------------


@functools.cache
def sampling_factor_by_enumeration(b: int, n: int, with_replacement: bool) -> sp.Rational:
    """``c(b)`` derived, not assumed: ``Var[mean over a batch of v] / Sigma`` for symbolic values ``v_1..v_n``
    over all ordered batches of size ``b`` (the ratio cancels to a number; DESIGN §1). Needs ``n >= 2``."""
    if not is_int(n) or n < 2:
        raise ValueError(f"`n` must be an integer >= 2 (Sigma vanishes for n = 1), got {n!r}")
    v = sp.symbols(f"v_1:{n + 1}", real=True)
    mean_v = sum(v) / n
    Sigma = sum((vi - mean_v) ** 2 for vi in v) / n
    dist = batch_distribution(n, b, with_replacement, ordered=True)
    m1 = sum(p * sum(v[i] for i in r) / b for r, p in dist)
    m2 = sum(p * (sum(v[i] for i in r) / b) ** 2 for r, p in dist)
    ratio = sp.cancel(sp.expand(m2 - m1**2) / sp.expand(Sigma))
    if not ratio.is_Rational:
        raise AssertionError(f"Var/Sigma did not reduce to a number: {ratio}")
    return ratio


# -- symbols and losses ---------------------------------------------------------------------------------------


def loss_expression(dim: int, x: Sequence[sp.Expr], c: dict[str, sp.Expr]) -> sp.Expr:
    """``f(x)`` of one example with coefficients ``c`` (DESIGN §5): 1-D ``a x^2/2 + b x + c x^3/6``; 2-D
    ``x^T A x/2 + b^T x + (c1 x1^3 + c2 x2^3)/6 + e x1^2 x2/2`` (``A = [[a11, a12], [a12, a22]]``)."""
    if dim == 1:
        (x1,) = x
        return c["a"] * x1**2 / 2 + c["b"] * x1 + c["c"] * x1**3 / 6
    x1, x2 = x
    return (
        c["a11"] * x1**2 / 2
        + c["a12"] * x1 * x2
        + c["a22"] * x2**2 / 2
        + c["b1"] * x1
        + c["b2"] * x2
        + c["c1"] * x1**3 / 6
        + c["c2"] * x2**3 / 6
        + c["e"] * x1**2 * x2 / 2
    )


@functools.cache
def symbols(dim: int, n: int) -> Symbols:
    """The symbolic twin problem: ``n`` cubic per-example losses in ``dim`` coordinates (all symbols real)."""
    Setting(dim=dim, n=n, batch_size=1)
    x = sp.symbols(" ".join(param_names(dim)), real=True)
    x = tuple(x) if isinstance(x, tuple) else (x,)
    coeffs = {name: tuple(sp.symbols(f"{name}_1:{n + 1}", real=True)) for name in COEFFICIENTS[dim]}
    losses = tuple(loss_expression(dim, x, {k: v[i] for k, v in coeffs.items()}) for i in range(n))
    grads = tuple(sp.Matrix([sp.diff(f, xj) for xj in x]) for f in losses)
    hessians = tuple(sp.hessian(f, x) for f in losses)
    rho, sigma, lam = sp.symbols("rho sigma lambda", real=True)
    return Symbols(x, coeffs, rho, sigma, lam, losses, grads, hessians)


# -- the one-step update ---------------------------------------------------------------------------------------


def _shifted(sy: Symbols, grad: sp.Matrix, eps: sp.Matrix) -> sp.Matrix:
    return grad.subs({xj: xj + ej for xj, ej in zip(sy.x, entries(eps), strict=True)}, simultaneous=True)


def update_terms(
    spec: Spec, sy: Symbols, idx: Sequence[int], micro: int, order: int = 2
) -> tuple[sp.Matrix, list[sp.Matrix]]:
    """``G(x; batch)`` exactly in ``rho`` and its Taylor coefficients ``[G_0, .., G_order]`` (DESIGN §2):
    ``G = (1/k) sum_j grad f_{gamma_j}(x + rho N(P d_j))``, micro-batches the consecutive size-``micro``
    chunks of ``idx``.

    The shift ``rho u`` (``u = N(P d_j)`` does not depend on ``rho``) is first substituted as ``rho U`` with a
    placeholder vector ``U``; the ``rho``-derivatives are taken on that polynomial and ``U`` is replaced by
    ``u`` afterwards (the same result as differentiating the substituted expression, much faster)."""
    dim = len(sy.x)
    U = sp.Matrix(sp.symbols(f"U_1:{dim + 1}", real=True))
    rule = spec.symbolic_rule
    if not rule.ascends:
        G = mean_of([sy.grads[i] for i in idx])
        return G, [G] + [sp.zeros(dim, 1)] * order
    g_full = mean_of(list(sy.grads))
    exact, terms = [], []
    for start in range(0, len(idx), micro):
        chunk = idx[start : start + micro]
        d, weights = rule.direction(sy, chunk, g_full)
        u = masked(spec, d)
        if spec.normalize == "full":  # DNSAM: the full-gradient norm
            u = u / norm(masked(spec, g_full))
        elif spec.normalize:
            u = normalize(u)
        shifted = [_shifted(sy, sy.grads[i], cast(sp.Matrix, sy.rho * U)) for i in chunk]
        if weights is not None and spec.weights_in_descent:
            t = sp.zeros(dim, 1)
            for w, s in zip(weights, shifted, strict=True):
                t = t + w * s
        else:
            t = mean_of(shifted)
        at_u = dict(zip(entries(U), entries(u), strict=True))
        exact.append(t.xreplace(at_u))
        terms.append([c.xreplace(at_u) for c in _taylor(t, sy.rho, order)])
    return mean_of(exact), [mean_of([tj[r] for tj in terms]) for r in range(order + 1)]


def update(spec: Spec, sy: Symbols, idx: Sequence[int], micro: int) -> sp.Matrix:
    """``G(x; batch)`` exactly in ``rho`` (see :func:`update_terms`)."""
    return update_terms(spec, sy, idx, micro, order=0)[0]


def _taylor(expr: sp.Matrix, rho: sp.Symbol, order: int) -> list[sp.Matrix]:
    """``[G_0, .., G_order]`` with ``G = sum_r rho^r G_r + ...`` (derivatives at ``rho = 0``)."""
    out, cur = [], expr
    for r in range(order + 1):
        out.append(cur.subs(rho, 0) / math.factorial(r))
        cur = cur.diff(rho)
    return out


# -- closed forms of DESIGN §3.1 -------------------------------------------------------------------------------


def closed_form(spec: Spec, setting: Setting, sy: Symbols) -> ClosedForm | None:
    """``(b_0, b_1, R)`` from the formulas of DESIGN §3.1, built from per-example gradients and Hessians
    independently of :func:`update` by the spec's rule (:meth:`AbstractSymbolicRule.closed_form`); ``R`` is the
    implicit regularizer (``b_1 = grad R``) or ``None`` where the drift is not a gradient field (normalized F-SAM,
    RW-SAM). ``None`` for a rule with no closed form."""
    return spec.symbolic_rule.closed_form(spec, setting, sy)


def sigma_matrix(sy: Symbols) -> sp.Matrix:
    """``Sigma = (1/n) sum_i (g_i - g)(g_i - g)^T`` (DESIGN §1)."""
    g = mean_of(list(sy.grads))
    n = len(sy.grads)
    out = sp.zeros(len(sy.x), len(sy.x))
    for gi in sy.grads:
        out = out + (gi - g) * (gi - g).T
    return out / n


# -- the derivation ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Derivation:
    """Drift and diffusion of one variant on one :class:`Setting` (DESIGN §5).

    Fields (sympy column vectors / matrices in the coordinates ``x``):
        drift: ``(b_0, b_1, b_2)``, ``E[G] = b_0 + rho b_1 + rho^2 b_2`` (exact for the cubic losses).
        drift_exact: ``E[G]`` as the finite sum over batches of the exact update (no expansion).
        diffusion: ``(S_0, S_1)``, ``Cov[G] = S_0 + rho S_1 + O(rho^2)``.
        diffusion_exact: ``Cov[G]`` exactly (finite sum over batches).
        closed_drift: ``(b_0, b_1)`` from the DESIGN §3.1 formulas (``None`` for a rule without one);
            ``regularizer``: ``R`` with ``b_1 = grad R``
            (``None`` where ``b_1`` is not a gradient field).
        sigma: ``Sigma``; hessian: ``H``; factor: ``c(B)``; micro_factor: ``c(m)``.
    """

    spec: Spec
    setting: Setting
    drift: tuple[sp.Matrix, sp.Matrix, sp.Matrix]
    drift_exact: sp.Matrix
    diffusion: tuple[sp.Matrix, sp.Matrix]
    diffusion_exact: sp.Matrix
    closed_drift: tuple[sp.Matrix, sp.Matrix] | None
    regularizer: sp.Expr | None
    sigma: sp.Matrix
    hessian: sp.Matrix
    factor: sp.Expr
    micro_factor: sp.Expr

    @property
    def symbols(self) -> Symbols:
        return symbols(self.setting.dim, self.setting.n)

    @property
    def polynomial(self) -> bool:
        """True when every expression is a polynomial (unnormalized rules without Gibbs weights)."""
        return self.spec.normalize is False and not self.spec.symbolic_rule.gibbs_weights

    def first_order_drift(self) -> sp.Matrix:
        """``b_0 + rho b_1`` (what the SDE's first-order-in-``rho`` drift computes, DESIGN §3.1)."""
        return self.drift[0] + self.symbols.rho * self.drift[1]

    def numeric(self, expr: sp.Matrix | sp.Expr) -> Callable[..., np.ndarray]:
        """``expr`` lambdified (numpy, float64): ``fn(x, coeffs, rho=0, sigma=1, lam=1) -> ndarray``, with
        ``x`` of length ``dim`` and ``coeffs`` a mapping name -> length-``n`` array (:data:`COEFFICIENTS`)."""
        return numeric(self.setting, expr)


_LAMBDIFIED: dict = {}

#: Names accepted by :func:`lambdified`.
EXPRESSIONS = (
    "first_order_drift",
    "drift_exact",
    "diffusion_exact",
    "b0",
    "b1",
    "b2",
    "S0",
    "S1",
    "closed_b0",
    "closed_b1",
)


def expression(der: Derivation, name: str):
    """A named expression of ``der`` (see :data:`EXPRESSIONS`)."""
    table = {
        "first_order_drift": der.first_order_drift,
        "drift_exact": lambda: der.drift_exact,
        "diffusion_exact": lambda: der.diffusion_exact,
        "b0": lambda: der.drift[0],
        "b1": lambda: der.drift[1],
        "b2": lambda: der.drift[2],
        "S0": lambda: der.diffusion[0],
        "S1": lambda: der.diffusion[1],
        "closed_b0": lambda: _closed(der)[0],
        "closed_b1": lambda: _closed(der)[1],
    }
    if name not in table:
        raise ValueError(f"`name` must be one of {EXPRESSIONS}, got {name!r}")
    return table[name]()


def _closed(der: Derivation) -> tuple[sp.Matrix, sp.Matrix]:
    if der.closed_drift is None:
        raise ValueError(f"variant {der.spec.name!r} has no closed-form drift: its rule defines none")
    return der.closed_drift


def lambdified(der: Derivation, name: str) -> Callable[..., np.ndarray]:
    """The named expression of ``der`` lambdified (cached per spec, setting and name); see
    :meth:`Derivation.numeric`."""
    key = (der.spec, der.setting, name)
    if key not in _LAMBDIFIED:
        _LAMBDIFIED[key] = numeric(der.setting, expression(der, name))
    return _LAMBDIFIED[key]


def numeric(setting: Setting, expr) -> Callable[..., np.ndarray]:
    """Lambdify ``expr`` over the symbols of ``setting`` (see :meth:`Derivation.numeric`)."""
    sy = symbols(setting.dim, setting.n)
    fn = sp.lambdify(sy.args, expr, modules="numpy", cse=True)
    names = COEFFICIENTS[setting.dim]

    def call(x, coeffs, rho=0.0, sigma=1.0, lam=1.0):
        x = np.asarray(x, np.float64).reshape(setting.dim)
        flat = []
        for name in names:
            c = np.asarray(coeffs[name], np.float64)
            if c.shape != (setting.n,):
                raise ValueError(f"`coeffs[{name!r}]` must have shape ({setting.n},), got {c.shape}")
            flat.extend(c)
        return np.asarray(fn(*x, *flat, float(rho), float(sigma), float(lam)), np.float64)

    return call


def _derive(spec: Spec, setting: Setting) -> Derivation:
    sy = symbols(setting.dim, setting.n)
    B, n = setting.batch_size, setting.n
    micro = spec.micro_batch_size or B
    if B % micro != 0:
        raise ValueError(f"`micro_batch_size`={micro} must divide the batch size B={B} (valid: divisors of {B})")
    k = B // micro
    dist = batch_distribution(n, B, setting.with_replacement, ordered=k > 1)
    dim = setting.dim
    b = [sp.zeros(dim, 1) for _ in range(3)]
    second0, second1 = sp.zeros(dim, dim), sp.zeros(dim, dim)
    mean_exact, second_exact = sp.zeros(dim, 1), sp.zeros(dim, dim)
    for idx, p in dist:
        G, (G0, G1, G2) = update_terms(spec, sy, idx, micro)
        b = [b[0] + p * G0, b[1] + p * G1, b[2] + p * G2]
        second0 = second0 + p * G0 * G0.T
        second1 = second1 + p * (G0 * G1.T + G1 * G0.T)
        mean_exact = mean_exact + p * G
        second_exact = second_exact + p * G * G.T
    S0 = second0 - b[0] * b[0].T
    S1 = second1 - (b[0] * b[1].T + b[1] * b[0].T)
    cov = second_exact - mean_exact * mean_exact.T
    closed = closed_form(spec, setting, sy)
    H = mean_of(list(sy.hessians))
    return Derivation(
        spec,
        setting,
        tuple(b),
        mean_exact,
        (S0, S1),
        cov,
        None if closed is None else (closed[0], closed[1]),
        None if closed is None else closed[2],
        sigma_matrix(sy),
        H,
        sampling_factor_formula(B, n, setting.with_replacement),
        sampling_factor_formula(micro, n, setting.with_replacement),
    )


def _cache_key(spec: Spec, setting: Setting) -> str:
    text = repr((CACHE_VERSION, sp.__version__, dataclasses.astuple(spec), dataclasses.astuple(setting)))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@functools.lru_cache(maxsize=256)
def _derive_cached(spec: Spec, setting: Setting, cache_dir: str | None) -> Derivation:
    if cache_dir is None:
        return _derive(spec, setting)
    path = os.path.join(cache_dir, f"symbolic-{_cache_key(spec, setting)}.pkl")
    if os.path.exists(path):
        try:
            with open(path, "rb") as fh:
                out = pickle.load(fh)
            if isinstance(out, Derivation) and out.spec == spec and out.setting == setting:
                return out
        except Exception:
            pass
    out = _derive(spec, setting)
    atomic_write_bytes(path, pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL))
    return out


def derive(
    variant: Any, setting: Setting | None = None, *, cache_dir: str | os.PathLike | None = None, **setting_kw
) -> Derivation:
    """Derive drift and diffusion of ``variant`` (a :class:`~sde_sam.variants.Variant` or a :class:`Spec`) on
    ``setting`` (or ``Setting(**setting_kw)``), DESIGN §5.

    Cached in-process; with ``cache_dir`` (default: the ``SDE_SAM_SYMBOLIC_CACHE`` environment variable, if
    set) also on disk, one atomically written pickle per hash of the inputs."""
    if setting is None:
        setting = Setting(**setting_kw)
    elif setting_kw:
        raise TypeError("pass either `setting` or its fields as keywords, not both")
    if not isinstance(setting, Setting):
        raise TypeError(f"`setting` must be a Setting, got {type(setting).__name__}")
    spec = spec_of(variant, setting.dim)
    if spec.mask is not None and len(spec.mask) != setting.dim:
        raise ValueError(f"`mask` has {len(spec.mask)} entries, expected dim={setting.dim}")
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or None
    return _derive_cached(spec, setting, None if cache_dir is None else os.fspath(cache_dir))


# -- symbolic identities ---------------------------------------------------------------------------------------


def is_zero(expr, method: Literal["random", "expand"] = "random", points: int = 3, seed: int = 0) -> bool:
    """Whether the polynomial ``expr`` (scalar or matrix) is identically zero.

    ``method="expand"``: ``sympy.expand`` to the zero polynomial. ``"random"``: exact rational evaluation at
    ``points`` random points with entries in ``{-10^6..10^6}/997`` (Schwartz-Zippel: a nonzero polynomial of
    degree ``D`` vanishes there with probability at most ``(D / 2e6)^points``), much faster in 2-D."""
    items = entries(expr) if isinstance(expr, sp.MatrixBase) else [expr]
    if method == "expand":
        return all(sp.expand(e) == 0 for e in items)
    if method != "random":
        raise ValueError(f"`method` must be 'expand' or 'random', got {method!r}")
    free = sorted(set().union(*(sp.sympify(e).free_symbols for e in items)), key=str)
    rng = np.random.default_rng(seed)
    for _ in range(points):
        at = {s: sp.Rational(int(rng.integers(-(10**6), 10**6 + 1)), 997) for s in free}
        if any(sp.sympify(e).xreplace(at) != 0 for e in items):
            return False
    return True


def identities(der: Derivation, method: Literal["random", "expand"] = "random") -> dict[str, bool | None]:
    """Exact sympy checks of the polynomial identities (``None``: not polynomial, check numerically):

    * ``closed_form``: ``b_0 + rho b_1`` equals the DESIGN §3.1 formula;
    * ``terminates``: ``E[G] - (b_0 + rho b_1 + rho^2 b_2) = 0`` (the expansion terminates for cubic losses);
    * ``leading_diffusion``: ``S_0 = c(B) Sigma`` (not for weighted descent, whose ``G_0`` is reweighted);
    * ``first_order_diffusion_equal_hessians``: ``S_1 = c(B)(H P Sigma + Sigma P H)`` once all per-example
      Hessians are equal (Compagnoni et al. 2023; ``None`` outside the unnormalized batch / F-USAM rules).
    """
    sy = der.symbols
    poly = der.polynomial
    out: dict[str, bool | None] = {}
    closed = der.closed_drift
    if poly and closed is not None:
        out["closed_form"] = is_zero(der.first_order_drift() - (closed[0] + sy.rho * closed[1]), method)
    else:
        out["closed_form"] = None
    b = der.drift
    out["terminates"] = is_zero(der.drift_exact - (b[0] + sy.rho * b[1] + sy.rho**2 * b[2]), method) if poly else None
    rule = der.spec.symbolic_rule
    if rule.gibbs_weights and der.spec.weights_in_descent:
        out["leading_diffusion"] = None
    else:
        out["leading_diffusion"] = is_zero(der.diffusion[0] - der.factor * der.sigma, method)
    if poly and rule.batch_noise:
        P = mask_matrix(der.spec, der.setting.dim)
        S1_formula = der.factor * (der.hessian * P * der.sigma + der.sigma * P * der.hessian)
        out["first_order_diffusion_equal_hessians"] = is_zero(
            (der.diffusion[1] - S1_formula).xreplace(equal_hessians(sy)), method
        )
    else:
        out["first_order_diffusion_equal_hessians"] = None
    if der.spec.normalize == "full":  # DNSAM (Compagnoni et al. 2023), times ||P g|| to make both sides polynomial
        P = mask_matrix(der.spec, der.setting.dim)
        g = mean_of(list(sy.grads))
        eq = equal_hessians(sy)
        ng = norm(P * g)
        out["dnsam_drift_equal_hessians"] = is_zero(
            (sp.expand(ng * der.drift[1]) - der.hessian * P * g).xreplace(eq), method
        )
        S1_formula = der.factor * (der.hessian * P * der.sigma + der.sigma * P * der.hessian)
        out["dnsam_diffusion_equal_hessians"] = is_zero(
            (sp.expand(ng * der.diffusion[1]) - S1_formula).xreplace(eq), method
        )
    return out


def equal_hessians(sy: Symbols) -> dict[sp.Symbol, sp.Expr]:
    """Substitution making every per-example Hessian equal (quadratic parts shared, cubic parts zero)."""
    sub = {}
    for name, syms in sy.coeffs.items():
        if name.startswith("a"):
            sub.update({s: sp.Symbol(name, real=True) for s in syms})
        elif name.startswith(("c", "e")):
            sub.update(dict.fromkeys(syms, 0))
    return sub
