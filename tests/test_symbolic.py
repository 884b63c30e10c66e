"""Symbolic derivations (DESIGN §5) against the code: sympy drift/diffusion vs sde_sam.sde and the discrete step.

The reference side of every comparison is sympy (exact rational/symbolic arithmetic), the other side the
numeric code in float64 (``compare`` switches x64 on locally); tolerance 1e-8 relative (DESIGN §5).
"""

from __future__ import annotations

import dataclasses
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp

import sde_sam as ss
from sde_sam import symbolic as sym
from sde_sam import variants as V
from sde_sam._sde import _diffusion
from sde_sam._symbolic import _derive as _symbolic
from sde_sam._symbolic._check import compare_expression, random_instance, rel_err, twin_problem
from sde_sam._symbolic._derive import is_zero

TOL = 1e-8
VARIANTS_1D = sym.variants_for(1)
VARIANTS_2D = sym.variants_for(2)


def _setting(name: str, dim: int = 1) -> sym.Setting:
    # alternate the samplers across variants; n = 3, B = 2 keeps sympy and the enumeration small
    replace = sorted(VARIANTS_2D).index(name) % 2 == 0
    return sym.Setting(dim=dim, n=3, batch_size=2, with_replacement=replace)


# -- c(b) by enumeration --------------------------------------------------------------------------------------


@pytest.mark.parametrize("replace", [True, False])
@pytest.mark.parametrize("n", [2, 3, 4])
def test_sampling_factor_by_enumeration_matches_formula_and_sampler(n, replace):
    sampler_cls = ss.WithReplacement if replace else ss.WithoutReplacement
    for b in range(1, (4 if replace else n) + 1):
        derived = sym.sampling_factor_by_enumeration(b, n, replace)
        formula = sp.Rational(1, b) if replace else sp.Rational(n - b, b * (n - 1))  # DESIGN §1, typed in here
        assert derived == formula, (b, n, replace)
        assert float(derived) == pytest.approx(sampler_cls(b).factor(b, n), rel=1e-15)


def test_batch_distribution_probabilities_sum_to_one():
    for replace in (True, False):
        for ordered in (True, False):
            dist = sym.batch_distribution(4, 3, replace, ordered)
            assert sum(p for _, p in dist) == 1
    assert len(sym.batch_distribution(3, 2, True, ordered=False)) == 6  # multisets of size 2 from 3
    assert len(sym.batch_distribution(3, 2, False, ordered=True)) == 6  # ordered pairs of distinct


# -- sympy identities (exact) ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VARIANTS_1D))
def test_identities_hold_exactly_1d(name):
    der = sym.derive(VARIANTS_1D[name], _setting(name))
    ids = sym.identities(der, method="expand")
    assert all(v is not False for v in ids.values()), ids
    if der.polynomial:  # DESIGN §3.1 closed form and termination of the rho expansion, proven by sympy
        assert ids["closed_form"] and ids["terminates"]
    if not (der.spec.rule == "reweighted" and der.spec.weights_in_descent):
        assert ids["leading_diffusion"]  # S_0 = c(B) Sigma


@pytest.mark.parametrize("name", ["USAM-ON", "F-USAM"])
def test_identities_hold_2d(name):
    der = sym.derive(VARIANTS_2D[name], _setting(name, dim=2))
    ids = sym.identities(der)  # random exact-rational points (Schwartz-Zippel)
    assert ids["closed_form"] and ids["terminates"] and ids["leading_diffusion"]
    assert ids["first_order_diffusion_equal_hessians"]


def test_is_zero_detects_a_nonzero_polynomial():
    x, y = sp.symbols("x y")
    assert is_zero((x + y) ** 2 - x**2 - 2 * x * y - y**2)
    assert not is_zero((x + y) ** 2 - x**2 - y**2)
    assert not is_zero((x + y) ** 2 - x**2 - y**2, method="expand")


# -- sympy equals the code, every variant -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VARIANTS_1D))
def test_sympy_equals_code_1d(name):
    errors = sym.compare(VARIANTS_1D[name], _setting(name), points=2, extraction=False)
    assert set(errors) == {"discrete_mean", "discrete_cov", "general_drift", "closed_form_drift"}
    assert max(errors.values()) < TOL, errors


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SAM-ON"])
def test_sympy_equals_code_2d_masked(name):
    errors = sym.compare(VARIANTS_2D[name], _setting(name, dim=2), points=2, extraction=False)
    assert max(errors.values()) < TOL, errors


def test_rho_coefficients_of_the_discrete_step_usam():
    """b_0, b_1, b_2 (second order for USAM) and S_0, S_1 extracted from the discrete E[G], Cov[G] in rho."""
    errors = sym.compare(
        V.usam(0.5), sym.Setting(dim=1, n=3, batch_size=2, with_replacement=False), points=2, sde=False
    )
    for key in ("discrete_b0", "discrete_b1", "discrete_b2", "discrete_S0", "discrete_S1"):
        assert errors[key] < TOL, errors


@pytest.mark.slow
@pytest.mark.parametrize("dim", [1, 2])
def test_sympy_equals_code_every_variant_full(dim):
    variants = sym.variants_for(dim)
    for name, variant in variants.items():
        errors = sym.compare(variant, _setting(name, dim), points=3)
        assert max(errors.values()) < TOL, (name, errors)


@pytest.mark.slow
def test_sympy_equals_code_micro_batches_b4():
    setting = sym.Setting(dim=1, n=3, batch_size=4, with_replacement=True)
    for variant in (V.m_usam(0.4, 2), V.m_sam(0.4, 2), V.m_sam(0.4, 1)):
        errors = sym.compare(variant, setting, points=2)
        assert max(errors.values()) < TOL, (variant, errors)


# -- the checker can fail ------------------------------------------------------------------------------------------


def test_wrong_drift_without_variance_term_is_caught():
    setting = sym.Setting(dim=1, n=3, batch_size=2, with_replacement=False)
    variant = V.m_usam(0.5, 1)
    sy = sym.symbols(1, 3)
    b0, b1, _ = sym.closed_form(sym.spec_of(variant, 1), setting, sy)  # pyright: ignore[reportGeneralTypeIssues]
    assert compare_expression(b0 + sy.rho * b1, variant, setting) < TOL
    # drop (rho/2) c(m) tr Sigma: the n-USAM closed form grad[f + (rho/2)||g||^2]
    nb0, nb1, _ = sym.closed_form(sym.spec_of(V.n_usam(0.5), 1), setting, sy)  # pyright: ignore[reportGeneralTypeIssues]
    assert compare_expression(nb0 + sy.rho * nb1, variant, setting) > 1e-3


def test_wrong_sampling_factor_is_caught():
    sy = sym.symbols(1, 3)
    # USAM without replacement (c(2) = 1/4) checked with the with-replacement factor (1/2)
    right = sym.Setting(dim=1, n=3, batch_size=2, with_replacement=False)
    wrong = sym.Setting(dim=1, n=3, batch_size=2, with_replacement=True)
    spec = sym.spec_of(V.usam(0.5), 1)
    b0, b1, _ = sym.closed_form(spec, wrong, sy)  # pyright: ignore[reportGeneralTypeIssues]
    assert compare_expression(b0 + sy.rho * b1, V.usam(0.5), right) > 1e-3
    # m-USAM (m = 1, B = 2) with c(B) in place of c(m): the USAM closed form
    variant = V.m_usam(0.5, 1)
    b0, b1, _ = sym.closed_form(sym.spec_of(V.usam(0.5), 1), right, sy)  # pyright: ignore[reportGeneralTypeIssues]
    assert compare_expression(b0 + sy.rho * b1, variant, right, kind="discrete_mean") > 1e-3


# -- diffusion against the SDE layer's noise samplers -----------------------------------------------------------------


def _noise_matrix(sample_fn, n, monkeypatch):
    """Columns ``sample(u = e_j)``: the linear map from the standard normal weights ``u`` to the sample, so the
    covariance of the sample is ``L L^T``."""
    cols = []
    for j in range(n):
        e = jnp.zeros(n, jnp.float64).at[j].set(1.0)
        monkeypatch.setattr(_diffusion, "standard_normal_weights", lambda key, n_, dtype, e=e: e.astype(dtype))
        out = sample_fn()
        cols.append(np.array([float(out[k]) for k in sorted(out)]))
    return np.stack(cols, axis=1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["m-USAM", "DNSAM"])
def test_first_order_diffusion_matches_sde_with_equal_hessians(name, monkeypatch):
    """S_0 = c(B) Sigma and S_1 = c(B)(H Sigma + Sigma H) (equal per-example Hessians, where the sde layer's
    first-order diffusion is exact to O(rho)) against ``sde_sam.sde.first_order_sample``."""
    setting = sym.Setting(dim=2, n=3, batch_size=2, with_replacement=False)
    der = sym.derive(VARIANTS_2D[name], setting)
    rng = np.random.default_rng(3)
    x, coeffs = random_instance(setting, rng)
    for k in ("a11", "a12", "a22"):
        coeffs[k] = np.full(3, coeffs[k][0])
    for k in ("c1", "c2", "e"):
        coeffs[k] = np.zeros(3)
    sampler = ss.WithoutReplacement(2)
    with jax.enable_x64(True):
        problem = twin_problem(2, coeffs, x)
        p = problem.init_params

        def cov(rho):
            variant = VARIANTS_2D[name].replace(rho=rho)
            L = _noise_matrix(
                lambda: ss.sde.first_order_sample(problem, variant, sampler, p, jax.random.key(0)), 3, monkeypatch
            )
            return L @ L.T

        r = 0.25
        C0, C1, C2 = cov(0.0), cov(r), cov(2 * r)
    S0 = sym.lambdified(der, "S0")(x, coeffs)
    S1 = sym.lambdified(der, "S1")(x, coeffs)
    assert rel_err(C0, S0) < TOL
    assert rel_err((4 * C1 - C2 - 3 * C0) / (2 * r), S1) < TOL


# -- cache, report, bad input ---------------------------------------------------------------------------------------


def test_disk_cache_roundtrip_and_corrupt_file(tmp_path):
    spec = sym.Spec("USAM", rule="batch", normalize=False)
    setting = sym.Setting(dim=1, n=2, batch_size=1)
    der = sym.derive(spec, setting, cache_dir=tmp_path)
    files = [f for f in os.listdir(tmp_path) if f.endswith(".pkl")]
    assert len(files) == 1 and not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
    with open(tmp_path / files[0], "rb") as fh:
        loaded = pickle.load(fh)
    assert is_zero(loaded.drift[1] - der.drift[1], method="expand")
    (tmp_path / files[0]).write_bytes(b"not a pickle")
    _symbolic._derive_cached.cache_clear()
    again = sym.derive(spec, setting, cache_dir=tmp_path)
    assert is_zero(again.drift[1] - der.drift[1], method="expand")


def test_report_markdown_and_atomic_writer(tmp_path):
    variants = {"USAM": V.usam(0.1), "m-SAM": V.m_sam(0.1, 1)}
    path = tmp_path / "sub" / "symbolic.md"
    text = sym.write_report(path, variants=variants)
    assert path.read_text() == text
    assert "### USAM" in text and "### m-SAM" in text and "$$ b_1 =" in text and "$$ b_2 =" in text
    # USAM, n = 2, B = 2 with replacement: b_1 = (1/2) d/dx (g^2 + c(2) Sigma) in jet notation, typed in by hand
    assert r"\frac{3 g_{1} h_{1} + g_{1} h_{2} + g_{2} h_{1} + 3 g_{2} h_{2}}{8}" in text


@pytest.mark.parametrize(
    "kwargs",
    [{"dim": 3}, {"n": 0}, {"batch_size": 5}, {"n": 2, "batch_size": 3, "with_replacement": False}],
)
def test_bad_setting_raises(kwargs):
    with pytest.raises(ValueError):
        sym.Setting(**kwargs)


def test_finite_difference_rw_score_is_rejected():
    with pytest.raises(ValueError, match="score"):
        sym.derive(V.rw_sam(0.1), sym.Setting())


def test_micro_batch_must_divide_batch():
    with pytest.raises(ValueError, match="micro_batch_size"):
        sym.derive(V.m_sam(0.1, 3), sym.Setting(batch_size=2))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="`n`"):
        sym.sampling_factor_by_enumeration(1, 1, True)
    with pytest.raises(ValueError, match="method"):
        is_zero(sp.Integer(0), method="simplify")  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match="variant"):
        sym.derive("sam", sym.Setting())
    with pytest.raises(ValueError, match="kind"):
        compare_expression(sp.Matrix([0]), V.sgd(), sym.Setting(), kind="drift")  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("dim", [1, pytest.param(2, marks=pytest.mark.slow)])  # dim 2: slow pass
def test_dnsam_derivation_gives_compagnonis_drift_and_diffusion_with_equal_hessians(dim):
    """DNSAM's derived ``b_1`` is ``H P g/||P g||`` and ``S_1`` is ``c(B)(H Sigma + Sigma H)/||P g||`` once every
    per-example Hessian is equal (Compagnoni et al. 2023); with unequal Hessians ``b_1`` differs from that form."""
    der = sym.derive(sym.variants_for(dim)["DNSAM"], _setting("DNSAM", dim=dim))
    ids = sym.identities(der)
    assert ids["dnsam_drift_equal_hessians"] and ids["dnsam_diffusion_equal_hessians"], ids
    sy = der.symbols
    g = sp.Matrix([sum(gi[j] for gi in sy.grads) / len(sy.grads) for j in range(dim)])  # pyright: ignore[reportArgumentType, reportCallIssue]
    norm = sp.Abs(g[0]) if dim == 1 else sp.sqrt(sum(e**2 for e in g))  # pyright: ignore[reportOperatorIssue]
    assert not is_zero(sp.expand(norm * der.drift[1]) - der.hessian * g)  # the H_gamma randomness term


# -- a rule of your own (docs/symbolic.md runs the same rule) ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _MidAscent(V.AbstractRule):
    """d = (g_gamma + g) / 2, written numerically."""

    def directions(self, problem, params, state, batch, key):
        loss, g_batch = jax.value_and_grad(problem.batch_loss)(params, batch)
        d = jax.tree_util.tree_map(lambda a, b: ((a + b) / 2)[None], g_batch, problem.full_grad(params))
        return V.Directions(d, None, state, loss)


@dataclasses.dataclass(frozen=True)
class _SymbolicMidAscent(sym.AbstractSymbolicRule):
    half: bool = True  # False: the slip of a dropped ``/ 2``

    def direction(self, sy, chunk, g_full):
        g_batch = sum((sy.grads[i] for i in chunk), sp.zeros(len(sy.x), 1)) / len(chunk)
        return ((g_batch + g_full) / 2 if self.half else g_batch + g_full), None


@dataclasses.dataclass(frozen=True)
class _SlippedMidAscent(_MidAscent):
    """The same numeric rule, registered with a symbolic twin that drops the ``/ 2``."""


sym.symbolic_spec_of.register(_MidAscent, lambda rule, variant: {"rule": _SymbolicMidAscent()})
sym.symbolic_spec_of.register(_SlippedMidAscent, lambda rule, variant: {"rule": _SymbolicMidAscent(half=False)})


@pytest.mark.parametrize("replace", [True, False])
def test_a_user_rule_is_derived_and_checked_against_its_code(replace):
    """A rule the package does not know gets its drift and diffusion from sympy, with no branch on its name, and
    they equal its numeric step's moments (exact enumeration) and the general drift to float64 rounding."""
    variant = V.Variant("mid-USAM", rho=0.5, rule=_MidAscent(), normalization=V.Identity())
    setting = sym.Setting(dim=1, n=3, batch_size=2, with_replacement=replace)
    der = sym.derive(variant, setting)
    assert der.closed_drift is None and der.regularizer is None
    ids = sym.identities(der)
    assert ids["closed_form"] is None and ids["terminates"] and ids["leading_diffusion"]
    # b_1 by hand: G = mean_j g_j(x + rho u), u = (g_gamma + g)/2, so b_1 = E[H_gamma (g_gamma + g)/2]
    sy = der.symbols
    by_hand = sp.zeros(1, 1)
    for r, p in sym.batch_distribution(3, 2, replace):
        g_r = sum((sy.grads[i] for i in r), sp.zeros(1, 1)) / 2
        H_r = sum((sy.hessians[i] for i in r), sp.zeros(1, 1)) / 2
        by_hand += p * H_r * (g_r + sum(sy.grads, sp.zeros(1, 1)) / 3) / 2
    assert is_zero(der.drift[1] - by_hand, method="expand")
    errors = sym.compare(variant, setting)
    assert "closed_form_drift" not in errors and max(errors.values()) < TOL, errors


def test_a_slip_in_a_user_rules_symbolic_direction_is_caught():
    variant = V.Variant("mid-USAM (slipped)", rho=0.5, rule=_SlippedMidAscent(), normalization=V.Identity())
    errors = sym.compare(variant, sym.Setting(dim=1, n=3, batch_size=2), extraction=False)
    assert errors["discrete_mean"] > 1e-3 and errors["general_drift"] > 1e-3, errors
