"""What the sympy derivation knows of each rule (DESIGN §5): its ascent direction in sympy form and, where DESIGN
§3.1 has one, its closed-form drift, written independently of the direction.

The derivation (``_derive.py``) has no branch on a rule: it asks the :class:`AbstractSymbolicRule` of the
variant's :class:`~sde_sam.symbolic.Spec` for the direction ``d`` of each micro-batch (and its Gibbs weights, if
any) and for the closed form. The built-in rules have one instance each in :data:`RULES`, named as
``Spec.rule`` names them; a rule of your own subclasses :class:`AbstractSymbolicRule`, implements
:meth:`~AbstractSymbolicRule.direction`, and is returned as ``{"rule": MySymbolicRule()}`` by the
``symbolic_spec_of`` registered for its numeric rule (docs: symbolic derivations).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import sympy as sp

from ._algebra import (
    Symbols,
    batch_distribution,
    gibbs_weights,
    grad_of,
    mask_matrix,
    mean_of,
    norm,
    normalize,
    sampling_factor_formula,
    sq,
)

#: ``(b_0, b_1, R)``: the drift's two first coefficients in ``rho`` and the implicit regularizer ``R``
#: (``b_1 = grad R``), or ``None`` where ``b_1`` is no gradient field.
ClosedForm = tuple[sp.Matrix, sp.Matrix, sp.Expr | None]


@dataclasses.dataclass(frozen=True)
class AbstractSymbolicRule:
    """A rule's ascent direction in sympy form (DESIGN §2: ``G = (1/k) sum_j grad f_{gamma_j}(x + rho N(P d_j))``).

    Class facts: ``ascends`` (``False``: SGD, no shift), ``gibbs_weights`` (the direction carries per-example
    Gibbs weights, so the expressions are not polynomials and the weights may enter the descent),
    ``micro_batches`` (the rule accepts ``Spec.micro_batch_size``), ``full_normalization`` (it accepts
    ``normalize="full"``, DNSAM), ``batch_noise`` (``S_1 = c(B)(H P Sigma + Sigma P H)`` once all per-example
    Hessians are equal, an identity the derivation then checks)."""

    ascends: ClassVar[bool] = True
    gibbs_weights: ClassVar[bool] = False
    micro_batches: ClassVar[bool] = False
    full_normalization: ClassVar[bool] = False
    batch_noise: ClassVar[bool] = False

    def direction(self, sy: Symbols, chunk: Sequence[int], g_full: sp.Matrix) -> tuple[sp.Matrix, list | None]:
        """The direction ``d`` of the micro-batch ``chunk`` (example indices) before mask and normalization, and
        its Gibbs weights over ``chunk`` (``None`` without); ``g_full`` is the full-data gradient ``g``."""
        raise NotImplementedError

    def closed_form(self, spec: Any, setting: Any, sy: Symbols) -> ClosedForm | None:
        """``(b_0, b_1, R)`` from a formula written independently of :meth:`direction` (DESIGN §3.1), or
        ``None`` where there is none (the derivation then has no ``closed_drift``)."""
        return None

    def closed_latex(self, spec: Any) -> str | None:
        """The closed form in LaTeX for the report, or ``None``."""
        return None


def _parts(spec: Any, setting: Any, sy: Symbols):
    """``g``, ``P``, ``P g`` and ``tr(P Sigma P)`` of the twin problem."""
    g = mean_of(list(sy.grads))
    P = mask_matrix(spec, len(sy.x))
    Pg = P * g
    tr_PSP = sum(sq(P * gi) for gi in sy.grads) / setting.n - sq(Pg)
    return g, P, Pg, tr_PSP


@dataclasses.dataclass(frozen=True)
class NoAscentRule(AbstractSymbolicRule):
    """SGD: no shift, ``b = g``."""

    ascends: ClassVar[bool] = False

    def direction(self, sy, chunk, g_full):
        return sp.zeros(len(sy.x), 1), None

    def closed_form(self, spec, setting, sy):
        return mean_of(list(sy.grads)), sp.zeros(len(sy.x), 1), sp.Integer(0)

    def closed_latex(self, spec):
        return r"b = g"


@dataclasses.dataclass(frozen=True)
class BatchRule(AbstractSymbolicRule):
    """SAM, USAM, m-SAM, DNSAM: ``d`` = the micro-batch gradient."""

    micro_batches: ClassVar[bool] = True
    full_normalization: ClassVar[bool] = True
    batch_noise: ClassVar[bool] = True

    def direction(self, sy, chunk, g_full):
        return mean_of([sy.grads[i] for i in chunk]), None

    def closed_form(self, spec, setting, sy):
        g, P, Pg, tr_PSP = _parts(spec, setting, sy)
        n, m = setting.n, spec.micro_batch_size or setting.batch_size
        if spec.normalize == "full":  # DNSAM: (1/||P g||) grad[(||P g||^2 + c(m) tr(P Sigma P))/2]
            R = (sq(Pg) + sampling_factor_formula(m, n, setting.with_replacement) * tr_PSP) / 2
            return g, grad_of(R, sy.x) / norm(Pg), None
        if not spec.normalize:
            R = (sq(Pg) + sampling_factor_formula(m, n, setting.with_replacement) * tr_PSP) / 2
            return g, grad_of(R, sy.x), R
        # E || P g_m || over size-m micro-batches of the sampler
        dist = batch_distribution(n, m, setting.with_replacement)
        R = sp.Add(*[p * norm(P * mean_of([sy.grads[i] for i in r])) for r, p in dist])
        return g, grad_of(R, sy.x), R

    def closed_latex(self, spec):
        return {
            False: r"b = \nabla\big[f + \tfrac{\rho}{2}\big(\|P g\|^2 + c(m)\,\mathrm{tr}(P\Sigma P)\big)\big]",
            True: r"b = \nabla\big[f + \rho\,\mathbb{E}\|P g_{\gamma_m}\|\big]",
            "full": r"b = g + \tfrac{\rho}{\|P g\|}\nabla\tfrac12\big(\|P g\|^2 + c(m)\,\mathrm{tr}(P\Sigma P)\big)",
        }[spec.normalize]


@dataclasses.dataclass(frozen=True)
class FullRule(AbstractSymbolicRule):
    """n-SAM, n-USAM: ``d`` = the full-data gradient ``g``."""

    def direction(self, sy, chunk, g_full):
        return g_full, None

    def closed_form(self, spec, setting, sy):
        g, _, Pg, _ = _parts(spec, setting, sy)
        R = norm(Pg) if spec.normalize else sq(Pg) / 2
        return g, grad_of(R, sy.x), R

    def closed_latex(self, spec):
        if spec.normalize:
            return r"b = \nabla\big[f + \rho\|P g\|\big]"
        return r"b = \nabla\big[f + \tfrac{\rho}{2}\|P g\|^2\big]"


@dataclasses.dataclass(frozen=True)
class FriendlyRule(AbstractSymbolicRule):
    """F-SAM, F-USAM: ``d = g_gamma - sigma g`` (the EMA taken as tracking ``g``, DESIGN §3.1)."""

    batch_noise: ClassVar[bool] = True

    def direction(self, sy, chunk, g_full):
        return mean_of([sy.grads[i] for i in chunk]) - sy.sigma * g_full, None

    def closed_form(self, spec, setting, sy):
        g, P, Pg, tr_PSP = _parts(spec, setting, sy)
        n, B = setting.n, setting.batch_size
        if not spec.normalize:
            R = ((1 - sy.sigma) * sq(Pg) + sampling_factor_formula(B, n, setting.with_replacement) * tr_PSP) / 2
            return g, grad_of(R, sy.x), R
        b1 = sp.zeros(len(sy.x), 1)
        for r, p in batch_distribution(n, B, setting.with_replacement):  # g + rho E[H_gamma N(P(g_gamma - sigma g))]
            u = P * (mean_of([sy.grads[i] for i in r]) - sy.sigma * g)
            b1 = b1 + p * mean_of([sy.hessians[i] for i in r]) * normalize(u)
        return g, b1, None

    def closed_latex(self, spec):
        if spec.normalize:
            return (
                r"b = g + \rho\,\mathbb{E}\big[H_\gamma "
                r"\tfrac{P(g_\gamma - \sigma g)}{\|P(g_\gamma - \sigma g)\|}\big]"
            )
        return r"b = \nabla\big[f + \tfrac{\rho}{2}\big((1-\sigma)\|P g\|^2 + c(B)\,\mathrm{tr}(P\Sigma P)\big)\big]"


@dataclasses.dataclass(frozen=True)
class ReweightedRule(AbstractSymbolicRule):
    """RW-SAM, RW-USAM: ``d_w = sum_q w_q g_q`` with Gibbs weights ``w = softmax(lambda ||g_q||)`` over the batch
    (the exact score; docs/rw-sam.md)."""

    gibbs_weights: ClassVar[bool] = True

    def direction(self, sy, chunk, g_full):
        weights = gibbs_weights(sy, chunk)
        d = sp.zeros(len(sy.x), 1)
        for w, i in zip(weights, chunk, strict=True):
            d = d + w * sy.grads[i]
        return d, weights

    def closed_form(self, spec, setting, sy):
        g, P, _, _ = _parts(spec, setting, sy)
        b0, b1 = sp.zeros(len(sy.x), 1), sp.zeros(len(sy.x), 1)
        for r, p in batch_distribution(setting.n, setting.batch_size, setting.with_replacement):
            w = gibbs_weights(sy, r)
            d_w = sp.zeros(len(sy.x), 1)
            for wq, i in zip(w, r, strict=True):
                d_w = d_w + wq * sy.grads[i]
            u = normalize(P * d_w) if spec.normalize else P * d_w
            if spec.weights_in_descent:
                for wq, i in zip(w, r, strict=True):
                    b0 = b0 + p * wq * sy.grads[i]
                    b1 = b1 + p * wq * sy.hessians[i] * u
            else:
                b1 = b1 + p * mean_of([sy.hessians[i] for i in r]) * u
        return (b0 if spec.weights_in_descent else g), b1, None

    def closed_latex(self, spec):
        u = r"\tfrac{P d_w}{\|P d_w\|}" if spec.normalize else r"P d_w"
        if spec.weights_in_descent:
            return (
                r"b = \mathbb{E}\big[\textstyle\sum_i w_i g_i\big]"
                rf" + \rho\,\mathbb{{E}}\big[\textstyle\sum_i w_i H_i {u}\big]"
            )
        if spec.normalize:
            return (
                r"b = g + \rho\,\mathbb{E}\big[H_\gamma \tfrac{P d_w}{\|P d_w\|}\big],"
                r"\quad d_w = \textstyle\sum_{i\in\gamma} w_i g_i"
            )
        return r"b = g + \rho\,\mathbb{E}[H_\gamma P d_w],\quad d_w = \textstyle\sum_{i\in\gamma} w_i g_i"


#: The built-in rules by the name ``Spec.rule`` gives them.
RULES: dict[str, AbstractSymbolicRule] = {
    "none": NoAscentRule(),
    "batch": BatchRule(),
    "full": FullRule(),
    "friendly": FriendlyRule(),
    "reweighted": ReweightedRule(),
}
