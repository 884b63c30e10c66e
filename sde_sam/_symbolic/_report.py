"""Markdown report of the symbolic drift and diffusion of every variant (DESIGN §5), for paper_checks.

Expressions are shown at a point ``x`` in *jet notation*: for the 1-D cubic losses, ``g_i = f_i'(x)``,
``h_i = f_i''(x)``, ``t_i = f_i'''(x)`` (the cubic family is closed under translation, so evaluating at
``x = 0`` with ``b_i -> g_i``, ``a_i -> h_i``, ``c_i -> t_i`` loses nothing).
"""

from __future__ import annotations

import os

import sympy as sp

from .._io import atomic_write_bytes
from ._derive import (
    Derivation,
    Setting,
    derive,
    identities,
    symbols,
)


def jets(der: Derivation) -> dict:
    """Substitution ``x -> 0``, ``a_i -> h_i``, ``b_i -> g_i``, ``c_i -> t_i`` (1-D derivations only)."""
    if der.setting.dim != 1:
        raise ValueError("jet notation is defined for dim=1 derivations")
    sy = symbols(1, der.setting.n)
    sub: dict[sp.Basic, sp.Basic] = {sy.x[0]: sp.Integer(0)}
    for src, dst in (("a", "h"), ("b", "g"), ("c", "t")):
        for i, s in enumerate(sy.coeffs[src]):
            sub[s] = sp.Symbol(f"{dst}_{i + 1}", real=True)
    return sub


def _latex(expr) -> str:
    expr = sp.sympify(expr)
    if isinstance(expr, sp.MatrixBase):
        poly = all(e.is_polynomial(*e.free_symbols) for e in expr)
        return sp.latex(expr.applyfunc(lambda e: sp.factor(sp.expand(e))) if poly else expr)
    return sp.latex(sp.factor(sp.expand(expr)) if expr.is_polynomial(*expr.free_symbols) else expr)


def variant_markdown(der: Derivation, errors: dict[str, float] | None = None) -> str:
    """One variant's section: closed form (DESIGN §3.1), derived ``b_1`` (and ``b_2`` for USAM), ``S_0``, ``S_1``
    in jet notation (1-D), the sympy identities and, when given, the numeric errors."""
    spec, st = der.spec, der.setting
    sub = jets(der) if st.dim == 1 else {}
    sampler = "with replacement" if st.with_replacement else "without replacement"
    m = spec.micro_batch_size or st.batch_size
    lines = [f"### {spec.name}", ""]
    lines.append(
        f"Setting: d = {st.dim}, n = {st.n}, B = {st.batch_size}"
        + (f", m = {m}" if spec.micro_batch_size else "")
        + f", {sampler}; c(B) = {der.factor}, c(m) = {der.micro_factor}."
    )
    lines.append("")
    closed = spec.symbolic_rule.closed_latex(spec)  # DESIGN §3.1's formula, as the rule states it
    if closed is not None:
        lines += ["Closed form (DESIGN §3.1):", "", f"$$ {closed} $$", ""]
    show = lambda e: _latex(e.xreplace(sub) if sub else e)  # noqa: E731
    b0, b1, b2 = der.drift
    lines += ["Derived drift, $b = b_0 + \\rho\\, b_1 + O(\\rho^2)$:", ""]
    lines += [
        f"$$ b_0 = {show(b0[0] if st.dim == 1 else b0)} $$",
        "",
        f"$$ b_1 = {show(b1[0] if st.dim == 1 else b1)} $$",
        "",
    ]
    if spec.name in ("USAM",):
        lines += [f"$$ b_2 = {show(b2[0] if st.dim == 1 else b2)} $$", ""]
    S0, S1 = der.diffusion
    lines += ["Derived diffusion, $S = S_0 + \\rho\\, S_1 + O(\\rho^2)$:", ""]
    lines += [
        f"$$ S_0 = {show(S0[0, 0] if st.dim == 1 else S0)} $$",
        "",
        f"$$ S_1 = {show(S1[0, 0] if st.dim == 1 else S1)} $$",
        "",
    ]
    ids = identities(der)
    status = {True: "holds (sympy)", False: "FAILS", None: "not polynomial: checked numerically"}
    shown = {k: v for k, v in ids.items() if v is not None or k in ("closed_form", "terminates")}
    lines.append("Identities: " + "; ".join(f"{k.replace('_', ' ')}: {status[v]}" for k, v in shown.items()) + ".")
    lines.append("")
    if errors:
        lines.append(
            "Largest relative errors against the code (float64): "
            + ", ".join(f"{k} {v:.1e}" for k, v in sorted(errors.items()))
            + "."
        )
        lines.append("")
    return "\n".join(lines)


def report_markdown(
    variants: dict | None = None,
    setting: Setting | None = None,
    errors: dict[str, dict[str, float]] | None = None,
) -> str:
    """The Markdown report: one section per variant (``variants``: name -> Variant; default every variant of
    :func:`~sde_sam.symbolic.variants_for` on ``setting``, default ``Setting(dim=1, n=2, batch_size=2)``).
    ``errors``: optional name -> comparison errors (from :func:`~sde_sam.symbolic.compare`)."""
    from ._check import variants_for

    setting = Setting(dim=1, n=2, batch_size=2, with_replacement=True) if setting is None else setting
    variants = variants_for(setting.dim) if variants is None else variants
    head = [
        "# Symbolic drift and diffusion of SAM variants (DESIGN §5)",
        "",
        "Derived with sympy from the exact one-step update over the exact batch distribution, then expanded in "
        "$\\rho$. Per-example losses $f_i(x) = h_i x^2/2 + g_i x + t_i x^3/6$ around the current point (jet "
        "notation: $g_i = f_i'(x)$, $h_i = f_i''(x)$, $t_i = f_i'''(x)$); $g$, $H$, $\\Sigma$ the full-data "
        "gradient, Hessian and gradient covariance, $c(b)$ the sampling factor (DESIGN §1), $P$ the SAM-ON "
        "mask, $\\sigma$ F-SAM's factor, $\\lambda$ RW-SAM's inverse temperature (exact score "
        "$s_i = \\|g_i\\|$, weights $w = \\mathrm{softmax}(\\lambda s)$). F-SAM's EMA is taken as $\\mu = g$.",
        "",
    ]
    body = []
    for name, variant in variants.items():
        der = derive(variant, setting)
        body.append(
            variant_markdown(der, None if errors is None else errors.get(name)).replace(
                f"### {der.spec.name}", f"### {name}", 1
            )
        )
    return "\n".join(head + body)


def write_report(path: str | os.PathLike, **kwargs) -> str:
    """Write :func:`report_markdown` (``kwargs`` passed on) to ``path`` atomically; returns the text."""
    text = report_markdown(**kwargs)
    atomic_write_bytes(path, text.encode("utf-8"))
    return text
