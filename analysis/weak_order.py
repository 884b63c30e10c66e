"""Weak order of the SDE models (DESIGN §6.1, §6.2, §6.4, §6.5).

The weak error of a variant at learning rate ``eta`` over a fixed horizon ``T`` is
``err(eta) = max_{t = k eta <= T} |E phi(X_t) - E phi(x_k)|`` for ``phi`` in {loss, ||x||^2}. Three estimators:

* ``exact`` (linear regression, unnormalized variants): both expectations from exact moments
  (:mod:`analysis.linreg_moments`): no Monte Carlo, no time discretization.
* ``control`` (linear regression, normalized/reweighted variants): Monte Carlo of the *difference* to SGD
  driven by the same batches (discrete) and the same Gaussian weights (SDE), plus SGD's exact expectations:
  ``E phi(x^V) = E[phi(x^V) - phi(x^SGD)] + E_exact phi(x^SGD)`` and likewise for the SDE, whose
  Euler–Maruyama bias then largely cancels too.
* ``mc`` (nonconvex problems): independent Monte Carlo of both sides (SDE by Euler–Maruyama, ``dt = eta/r``).

Slopes of ``log err`` against ``log eta`` are fitted by least squares; the interval combines the scatter of
the fit (Student t) with the Monte Carlo standard errors propagated through the fit (DESIGN §6.5).

Command line: ``python -m analysis.weak_order --quick|--full --out DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import scipy.optimize
import scipy.stats

import sde_sam as ss
from analysis import linreg_moments as lm
from sde_sam._io import atomic_write_bytes, provenance

NAMES = ("loss", "param_norm_sq")


# -- weak errors ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WeakError:
    """``value = max_t |gap(t)|`` (over the names), its Monte Carlo ``stderr`` (at the argmax), the curves, and
    the number of diverged runs/paths (never averaged in; DESIGN §6.5)."""

    value: float
    stderr: float
    name: str
    time: float
    gap: dict
    gap_stderr: dict
    times: np.ndarray
    diverged: int = 0


def _max_gap(times, gap: dict, se: dict, diverged: int = 0) -> WeakError:
    best: tuple[float, float, str, float] | None = None
    for name in gap:
        i = int(np.nanargmax(np.abs(gap[name])))
        cand = (float(abs(gap[name][i])), float(se[name][i]), name, float(times[i]))
        if best is None or cand[0] > best[0]:
            best = cand
    assert best is not None, "no model to compare"
    return WeakError(*best, gap=gap, gap_stderr=se, times=np.asarray(times), diverged=int(diverged))


def _runs(problem, variant, sampler, eta, steps, num, key, init, every=1):
    rec = ss.observables(*NAMES, every=every)
    return ss.run_discrete(
        problem, variant, sampler, eta=eta, steps=steps, num_runs=num, key=key, record=rec, init_params=init
    )


def _paths(model, t1, num, key, substeps, init):
    rec = ss.observables(*NAMES, every=substeps)
    return ss.simulate(model, t1=t1, num_paths=num, key=key, record=rec, dt=model.eta / substeps, init_params=init)


def _paired(a, b, name):
    """Mean and stderr of ``a - b`` over runs kept by both (paired by run index)."""
    keep = ~(a.diverged | b.diverged)
    diff = a.values[name][keep] - b.values[name][keep]
    if diff.shape[0] < 2:
        raise ValueError("fewer than two runs survived on both sides: no paired estimate")
    return ss.mean_stderr(diff)


def _steps(t1, eta):
    steps = round(t1 / eta)
    if abs(steps * eta - t1) > 1e-9 * max(1.0, t1):
        raise ValueError(f"`t1`={t1} must be a whole number of steps of eta={eta}")
    return steps


def weak_error(
    problem,
    variant,
    sampler,
    *,
    eta: float,
    t1: float,
    method: str = "exact",
    order: int = 1,
    drift: str = "general",
    diffusion: str = "leading",
    model=None,
    num_paths: int = 4096,
    substeps: int = 2,
    key=None,
    init_params=None,
    num_samples: int | None = 256,
) -> WeakError:
    """``max_{t = k eta <= t1} |E phi(X_t) - E phi(x_k)|`` for ``phi`` in (loss, ||x||^2) (DESIGN §6.1).

    ``model`` overrides the SDE (e.g. an ablated drift); by default ``sde_model(problem, variant, sampler, eta,
    diffusion, order, drift, num_samples=num_samples)``. ``num_samples``: batches of a Monte Carlo drift; the
    study keeps 256 (its noise is unbiased and averages out over the paths, whose own standard error the study
    reports), as the 1 % target of ``sde_model``'s default would multiply the cost 5-8x for random-SAM and
    RW-SAM here; ``None`` sizes it to that target. ``method``: ``"exact"``, ``"control"`` or ``"mc"``.
    """
    if method not in ("exact", "control", "mc"):
        raise ValueError(f"`method` must be 'exact', 'control' or 'mc', got {method!r}")
    steps = _steps(t1, eta)
    key = jr.key(0) if key is None else key
    if model is None:
        model = ss.sde_model(
            problem, variant, sampler, eta=eta, diffusion=diffusion, order=order, drift=drift, num_samples=num_samples
        )
    if method == "exact":
        disc = lm.discrete_moments(problem, variant, sampler, eta=eta, steps=steps, init_params=init_params)
        sde = lm.sde_moments(model, t1=t1, every_dt=eta, init_params=init_params)
        gap = {n: sde[n] - disc[n] for n in NAMES}
        return _max_gap(disc.times, gap, {n: np.zeros_like(gap[n]) for n in NAMES})
    kd, ks = jr.split(key)
    if method == "control":
        sgd = ss.variants.sgd()
        disc_v = _runs(problem, variant, sampler, eta, steps, num_paths, kd, init_params)
        disc_0 = _runs(problem, sgd, sampler, eta, steps, num_paths, kd, init_params)
        sde_v = _paths(model, t1, num_paths, ks, substeps, init_params)
        model0 = ss.sde_model(problem, sgd, sampler, eta=eta, diffusion=model.diffusion, order=model.order)
        sde_0 = _paths(model0, t1, num_paths, ks, substeps, init_params)
        ex_d = lm.discrete_moments(problem, sgd, sampler, eta=eta, steps=steps, init_params=init_params)
        ex_s = lm.sde_moments(model0, t1=t1, every_dt=eta, init_params=init_params)
        gap, se = {}, {}
        for n in NAMES:
            dd, sd = _paired(disc_v, disc_0, n)
            ds, ss_ = _paired(sde_v, sde_0, n)
            gap[n] = (ds + ex_s[n]) - (dd + ex_d[n])
            se[n] = np.hypot(sd, ss_)
        div = disc_v.num_diverged + disc_0.num_diverged + sde_v.num_diverged + sde_0.num_diverged
        return _max_gap(ex_d.times, gap, se, div)
    disc = _runs(problem, variant, sampler, eta, steps, num_paths, kd, init_params)
    sde = _paths(model, t1, num_paths, ks, substeps, init_params)
    gap = {n: sde.mean(n) - disc.mean(n) for n in NAMES}
    se = {n: np.hypot(sde.stderr(n), disc.stderr(n)) for n in NAMES}
    return _max_gap(disc.times, gap, se, disc.num_diverged + sde.num_diverged)


# -- fits -------------------------------------------------------------------------------------------------


def fit_slope(etas, errs, stderrs=None, level: float = 0.95) -> dict:
    """Least-squares slope of ``log err`` on ``log eta`` with a ``level`` interval.

    The slope's variance is the residual scatter of the fit (``s^2 / Sxx``, Student ``t`` with ``N-2`` degrees
    of freedom) plus the Monte Carlo variance propagated through the fit, ``sum_i w_i^2 (se_i/err_i)^2`` with
    ``w_i = (u_i - mean u) / Sxx`` (``u = log eta``). Also returns the constant ``C`` of ``err ~ C eta^slope``."""
    u, v = np.log(np.asarray(etas, float)), np.log(np.asarray(errs, float))
    if u.size < 3:
        raise ValueError(f"`etas` needs at least 3 values to fit a slope with an interval, got {u.size}")
    if not np.all(np.isfinite(v)):
        raise ValueError("`errs` must be positive and finite")
    se = np.zeros_like(u) if stderrs is None else np.asarray(stderrs, float) / np.asarray(errs, float)
    uc = u - u.mean()
    sxx = float(uc @ uc)
    slope = float(uc @ v / sxx)
    intercept = float(v.mean() - slope * u.mean())
    resid = v - (intercept + slope * u)
    dof = u.size - 2
    var_fit = float(resid @ resid) / dof / sxx if dof > 0 else 0.0
    var_mc = float(np.sum((uc / sxx) ** 2 * se**2))
    half = scipy.stats.t.ppf(0.5 + level / 2, max(dof, 1)) * math.sqrt(var_fit + var_mc)
    return {
        "slope": slope,
        "lo": slope - half,
        "hi": slope + half,
        "stderr_fit": math.sqrt(var_fit),
        "stderr_mc": math.sqrt(var_mc),
        "constant": math.exp(intercept),
        "level": level,
    }


def fit_two_parameter(etas, rhos, errs, stderrs=None) -> dict:
    """Fit ``err ~ C1 eta^alpha + C2 rho^beta`` (DESIGN §6.4) by least squares in log space
    (``scipy.optimize.least_squares``), residuals ``log err - log model`` weighted by ``1/sqrt(s_log^2 + 0.05^2)``
    with ``s_log`` the relative Monte Carlo error; 95% intervals from the Jacobian (covariance scaled by the
    reduced chi^2 when it exceeds 1)."""
    eta, rho, err = (np.asarray(a, float).ravel() for a in (etas, rhos, errs))
    se = np.zeros_like(err) if stderrs is None else np.asarray(stderrs, float).ravel() / err
    w = 1.0 / np.sqrt(se**2 + 0.05**2)

    def resid(p):
        lc1, a, lc2, b = p
        return w * (np.log(err) - np.logaddexp(lc1 + a * np.log(eta), lc2 + b * np.log(rho)))

    best = None
    for a0, b0 in ((1.0, 2.0), (1.0, 1.0), (0.5, 2.0), (1.5, 3.0)):
        p0 = np.array([np.log(np.median(err / eta**a0)), a0, np.log(np.median(err / rho**b0)), b0])
        r = scipy.optimize.least_squares(resid, p0, method="lm")
        if best is None or r.cost < best.cost:
            best = r
    J = best.jac
    dof = max(err.size - 4, 1)
    chi2 = 2 * best.cost / dof
    cov = np.linalg.pinv(J.T @ J) * max(chi2, 1.0)
    sd = np.sqrt(np.diag(cov))
    t = scipy.stats.t.ppf(0.975, dof)
    lc1, a, lc2, b = best.x
    return {
        "alpha": float(a),
        "alpha_lo": float(a - t * sd[1]),
        "alpha_hi": float(a + t * sd[1]),
        "beta": float(b),
        "beta_lo": float(b - t * sd[3]),
        "beta_hi": float(b + t * sd[3]),
        "C1": float(np.exp(lc1)),
        "C2": float(np.exp(lc2)),
        "reduced_chi2": float(chi2),
    }


# -- ablated model (m-sweep) ------------------------------------------------------------------------------


def ablated_model(problem, variant, sampler, eta: float, drift: str = "general"):
    """The SDE of ``variant`` without its variance term: the drift of n-USAM/n-SAM (full-data ascent direction,
    DESIGN §3.1), with the leading-order diffusion of ``sampler`` (DESIGN §6.2)."""
    full = variant.replace(name=f"{variant.name} with the full-data ascent", rule=ss.variants.FullGradient())
    return ss.sde_model(problem, full, sampler, eta=eta, diffusion="leading", drift=drift)


# -- experiment configurations -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    exact_etas: tuple = (0.1, 0.05, 0.025, 0.0125)
    etas: tuple = (0.2, 0.1, 0.05, 0.025)
    t1: float = 2.0
    rho: float = 0.2
    num_paths: int = 4096
    substeps: int = 2
    seed: int = 0
    nonconvex_etas: tuple = (0.2, 0.1, 0.05, 0.025)
    nonconvex_t1: float = 1.0
    nonconvex_rho: float = 0.02
    msweep_eta: float = 0.0125
    msweep_rho: float = 0.5
    msweep_t1: float = 2.0
    map_etas: tuple = (0.1, 0.05, 0.025, 0.0125)
    map_rhos: tuple = (0.2, 0.1, 0.05, 0.025)
    map_t1: float = 1.0
    exact_only: bool = False


QUICK = Config(exact_only=True)
FULL = Config()


def linreg_problem():
    """The linear-regression problem of the slope study: ``n=8, d=3``, two leaves (SAM-ON perturbs ``head``)."""
    return lm.split_linear_regression(n=8, d=3, head=1, label_noise=1.0, seed=0)


def nonconvex_problem():
    """1-D sharp/flat basins (``n=8``, sharp curvature 4), started at ``x=-1.6`` (rolling into the sharp basin)."""
    return ss.problems.sharp_flat_basins(dim=1, n=8, sharp_curvature=4.0, noise_scale=0.3), jnp.array([-1.6])


#: F-SAM's EMA decay in the slope study: with ``lambda = 0.9`` the ``mu_0 = 0`` transient lasts ``1/(1-lambda)`` steps
#: and the asymptotic regime starts below the learning rates fitted here (reported separately, ``F-USAM (lambda=0.9)``).
EMA_DECAY = 0.5


def variants_for(rho: float, masked: bool) -> dict:
    V = ss.variants
    out = {
        "SGD": V.sgd(),
        "USAM": V.usam(rho),
        "SAM": V.sam(rho),
        "n-USAM": V.n_usam(rho),
        "n-SAM": V.n_sam(rho),
        "m-USAM": V.m_usam(rho, 1),
        "m-SAM": V.m_sam(rho, 1),
        "F-USAM": V.f_usam(rho, ema_decay=EMA_DECAY),
        "F-SAM": V.f_sam(rho, ema_decay=EMA_DECAY),
    }
    if masked:
        out["USAM-ON"] = V.sam_on(rho, mask=lambda p: p == "head", normalize=False)
        out["SAM-ON"] = V.sam_on(rho, mask=lambda p: p == "head")
    out["RW-SAM"] = V.rw_sam(rho, score="exact")
    out["RW-SAM (descent)"] = V.rw_sam(rho, score="exact", weights_in_descent=True)
    out["ASAM"] = V.asam(rho)
    if masked:
        out["ASAM-ON"] = V.asam_on(rho, mask=lambda p: p == "head")
    out["DNSAM"] = V.dnsam(rho)
    out["random-SAM"] = V.random_sam(rho)
    return out


def slope_study(
    problem,
    variants: dict,
    sampler,
    etas,
    t1,
    *,
    methods,
    num_paths,
    substeps,
    key,
    orders=(1, 2),
    init=None,
    log=print,
) -> dict:
    out = {}
    for name, var in variants.items():
        method = methods(var)
        for order in orders if method == "exact" else (1,):
            errs = []
            diffusion = "empirical" if (order == 2 and var.perturbs and not var.rule.stateful) else "leading"
            for i, eta in enumerate(etas):
                t = time.perf_counter()
                we = weak_error(
                    problem,
                    var,
                    sampler,
                    eta=eta,
                    t1=t1,
                    method=method,
                    order=order,
                    diffusion=diffusion,
                    num_paths=num_paths,
                    substeps=substeps,
                    key=jr.fold_in(key, i),
                    init_params=init,
                )
                errs.append(we)
                log(
                    f"  {name:17s} order {order} eta {eta:<6g} err {we.value:.3e} +- {we.stderr:.1e} "
                    f"({we.name}, t={we.time:.2f}, {time.perf_counter() - t:.1f}s)"
                )
            fit = fit_slope(etas, [e.value for e in errs], [e.stderr for e in errs])
            out[f"{name}|order{order}"] = dict(
                variant=name,
                order=order,
                method=method,
                diffusion=diffusion,
                etas=list(etas),
                errors=[e.value for e in errs],
                stderrs=[e.stderr for e in errs],
                diverged=[e.diverged for e in errs],
                **fit,
            )
    return out


def m_sweep(problem, variant_fn, B, ms, *, eta, t1, method, num_paths, substeps, key, log=print) -> dict:
    """Weak error of the extended SDE (the variant's own drift) and of the ablated one across ``m`` (DESIGN §6.2)."""
    sampler = ss.WithReplacement(B)
    out = []
    for m in ms:
        var = variant_fn(m)
        drift = "closed_form" if var.normalization.linear else "general"
        ext = ss.sde_model(problem, var, sampler, eta=eta, diffusion="leading", drift=drift)
        abl = ablated_model(problem, var, sampler, eta)
        k = jr.fold_in(key, m)
        e1 = weak_error(
            problem,
            var,
            sampler,
            eta=eta,
            t1=t1,
            method=method,
            model=ext,
            num_paths=num_paths,
            substeps=substeps,
            key=k,
        )
        e0 = weak_error(
            problem,
            var,
            sampler,
            eta=eta,
            t1=t1,
            method=method,
            model=abl,
            num_paths=num_paths,
            substeps=substeps,
            key=k,
        )
        ratio = e0.value / e1.value
        rse = ratio * math.hypot(e0.stderr / e0.value, e1.stderr / e1.value)
        log(
            f"  {var.name} m={m:<3d} extended {e1.value:.3e} +- {e1.stderr:.1e}  ablated {e0.value:.3e} +- "
            f"{e0.stderr:.1e}  ratio {ratio:.2f} +- {rse:.2f}"
        )
        out.append(
            {
                "m": m,
                "extended": e1.value,
                "extended_stderr": e1.stderr,
                "ablated": e0.value,
                "ablated_stderr": e0.stderr,
                "ratio": ratio,
                "ratio_stderr": rse,
            }
        )
    return {"variant": variant_fn(1).name, "B": B, "eta": eta, "t1": t1, "method": method, "rows": out}


def _total_variance(m) -> np.ndarray:
    """``tr Cov[x_t] = E||x_t||^2 - ||E x_t||^2`` from exact moments."""
    return np.asarray(m.param_norm_sq) - np.sum(np.square(np.asarray(m.mean)), axis=1)


def diffusion_ablation(problem, variants: dict, sampler, etas, t1, *, log=print) -> dict:
    """The weak error on the variance of the iterates, ``tr Cov[x_t]``, of each variant's SDE against its ODE
    (``diffusion="none"``), by exact moments (linear regression).

    Weak order 1 also holds with no diffusion at all (the noise is ``O(eta)``), so slopes cannot tell whether the
    diffusion is right. The variance can: the discrete iterates' variance is ``O(eta)``; the ODE has none, so its
    error is the whole ``O(eta)`` variance, while an SDE whose diffusion is right to leading order leaves
    ``O(eta^2)``: the ratio ODE/SDE must grow like ``1/eta`` (a diffusion off by a constant factor keeps it
    ``O(1)``)."""
    out = {}
    for name, var in variants.items():
        diffusions = ["leading"]  # (the moment ODE has no first_order diffusion)
        diffusions += ["empirical"] if var.perturbs and not var.rule.stateful else []  # moment ODE: state-free only
        errs = {d: [] for d in [*diffusions, "none"]}
        level = []
        for eta in etas:
            steps = _steps(t1, eta)
            disc = _total_variance(lm.discrete_moments(problem, var, sampler, eta=eta, steps=steps))
            level.append(float(np.max(disc)))
            for diffusion in errs:
                model = ss.sde_model(problem, var, sampler, eta=eta, diffusion=diffusion)
                sde_var = _total_variance(lm.sde_moments(model, t1=t1, every_dt=eta))
                errs[diffusion].append(float(np.max(np.abs(sde_var - disc))))
        ratio = {
            d: [o / s if s > 0 else math.inf for o, s in zip(errs["none"], e, strict=False)]
            for d, e in errs.items()
            if d != "none"
        }
        best = min(ratio, key=lambda d: errs[d][-1])
        out[name] = {
            "variant": name,
            "observable": "tr Cov[x_t]",
            "etas": list(etas),
            "errors": errs,
            "ratio": ratio,
            "best": best,
            "discrete_max_variance": level,
            "slopes": {d: fit_slope(etas, e)["slope"] for d, e in errs.items()},
        }
        log(
            f"  {name:17s} tr Cov weak error, ODE / SDE by diffusion: "
            + "; ".join(
                f"{d} " + ", ".join(f"{r:.1f}" for r in rr) + f" (slope {out[name]['slopes'][d]:.2f})"
                for d, rr in ratio.items()
            )
            + f"; ODE slope {out[name]['slopes']['none']:.2f}"
        )
    return out


def _informative(lo: float, hi: float, width: float = 1.0) -> bool:
    return math.isfinite(lo) and math.isfinite(hi) and hi - lo <= width


def eta_rho_exact(problem, sampler, etas, rhos, *, t1: float, log=print) -> dict:
    """USAM's weak error over an ``(eta, rho)`` grid by exact moments (linear regression, no Monte Carlo;
    DESIGN §6.4), and which scaling it follows.

    Reported: the grid; the slope in ``eta`` at each fixed ``rho`` and the slope in ``rho`` at each fixed ``eta``
    (95 % intervals); the slope in ``eta`` along the three scalings ``rho`` fixed (independent), ``rho ~ eta`` and
    ``rho ~ sqrt(eta)`` (from the grid's largest ``rho`` at its largest ``eta``); and the two-parameter fit
    ``err ~ C1 eta^alpha + C2 rho^beta``, kept only when both of its 95 % intervals are narrower than 1
    (``fit_informative``). ``scaling`` says in words which the error follows."""
    etas, rhos = tuple(float(e) for e in etas), tuple(float(r) for r in rhos)
    if len(etas) < 4 or len(rhos) < 4:
        raise ValueError(f"the (eta, rho) map needs a grid of at least 4 x 4, got {len(etas)} x {len(rhos)}")

    def err(eta, rho):
        return weak_error(problem, ss.variants.usam(rho), sampler, eta=eta, t1=t1, method="exact").value

    E = np.array([[err(e, r) for r in rhos] for e in etas])
    for e, row in zip(etas, E, strict=False):
        log(f"  eta {e:<7g} " + " ".join(f"{v:.3e}" for v in row))
    eta_slopes = {f"{r:g}": fit_slope(etas, E[:, j]) for j, r in enumerate(rhos)}
    rho_slopes = {f"{e:g}": fit_slope(rhos, E[i, :]) for i, e in enumerate(etas)}
    e0, r0 = max(etas), max(rhos)
    lines = {}
    for name, rho_of in (
        ("independent", lambda e: r0),
        ("rho ~ eta", lambda e: r0 * e / e0),
        ("rho ~ sqrt(eta)", lambda e: r0 * math.sqrt(e / e0)),
    ):
        errs = [err(e, rho_of(e)) for e in etas]
        lines[name] = dict(rhos=[rho_of(e) for e in etas], errors=errs, **fit_slope(etas, errs))
        log(f"  {name:16s} slope in eta {lines[name]['slope']:.3f} [{lines[name]['lo']:.3f}, {lines[name]['hi']:.3f}]")
    ee, rr = np.meshgrid(etas, rhos, indexing="ij")
    fit = fit_two_parameter(ee, rr, E)
    informative = _informative(fit["alpha_lo"], fit["alpha_hi"]) and _informative(fit["beta_lo"], fit["beta_hi"])
    # the product form err ~ eta^alpha (a + b rho): alpha from the fixed-rho slopes, (a, b) by least squares
    alpha = float(np.mean([s["slope"] for s in eta_slopes.values()]))
    A = np.stack([np.ones(len(rhos)), np.asarray(rhos)], axis=1)
    scaled = E / np.asarray(etas)[:, None] ** alpha
    (a_, b_), *_ = np.linalg.lstsq(np.tile(A, (len(etas), 1)), scaled.ravel(), rcond=None)
    product_resid = float(
        np.max(np.abs(np.tile(A, (len(etas), 1)) @ np.array([a_, b_]) - scaled.ravel()) / scaled.ravel())
    )
    product = {"alpha": alpha, "a": float(a_), "b": float(b_), "max_relative_residual": product_resid}
    rho_range = [min(s["slope"] for s in rho_slopes.values()), max(s["slope"] for s in rho_slopes.values())]
    if product_resid < 0.1:
        scaling = (
            f"err = eta^{alpha:.2f} (a + b rho) within {100 * product_resid:.0f} % (a = {a_:.3g}, b = {b_:.3g}): "
            f"first order in eta at every rho, rho only changes the constant (log-slope in rho "
            f"{rho_range[0]:.2f}-{rho_range[1]:.2f}); no separate rho^beta term, so the error is O(eta) whether "
            f"rho is fixed, ~ eta or ~ sqrt(eta) (slopes along them: "
            + ", ".join(f"{k} {v['slope']:.2f}" for k, v in lines.items())
            + ")"
        )
    else:
        scaling = (
            f"not of the product form eta^alpha (a + b rho) (residual {100 * product_resid:.0f} %); slopes along "
            "the scalings: " + ", ".join(f"{k} {v['slope']:.2f}" for k, v in lines.items())
        )
    return {
        "variant": "USAM",
        "method": "exact",
        "t1": t1,
        "etas": list(etas),
        "rhos": list(rhos),
        "errors": E.tolist(),
        "eta_slopes": eta_slopes,
        "rho_slopes": rho_slopes,
        "lines": lines,
        "fit": fit,
        "fit_informative": informative,
        "product": product,
        "scaling": scaling,
    }


# -- command line -----------------------------------------------------------------------------------------


PARTS = (
    "linreg_exact",
    "diffusion_ablation",
    "msweep_usam",
    "linreg_control",
    "nonconvex_mc",
    "msweep_sam",
    "eta_rho_map",
)


def run(config: Config, log=print, parts=None) -> dict:
    """Run the studies of ``config`` (``parts``: a subset of :data:`PARTS`; default all the preset allows)."""
    parts = set(PARTS if parts is None else parts)
    if config.exact_only:
        parts &= {"linreg_exact", "diffusion_ablation", "msweep_usam"}
    key = jr.key(config.seed)
    start = time.perf_counter()
    results = {
        "config": dataclasses.asdict(config),
        "seed": config.seed,
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
    }
    lin = linreg_problem()
    smp = ss.WithReplacement(2)
    allv = variants_for(config.rho, masked=True)
    affine = {k: v for k, v in allv.items() if lm.is_affine(v)}
    if "linreg_exact" in parts:
        _exact_studies(config, lin, smp, affine, key, results, log)
    if "diffusion_ablation" in parts:
        log("diffusion ablation: SDE against ODE (diffusion='none'), exact moments")
        results["diffusion_ablation"] = diffusion_ablation(lin, affine, smp, config.exact_etas, config.t1, log=log)
    if "msweep_usam" in parts:
        log("m-sweep, m-USAM (exact moments, B=8)")
        results["msweep_usam"] = m_sweep(
            lin,
            lambda m: ss.variants.m_usam(config.msweep_rho, m),
            8,
            (1, 2, 4, 8),
            eta=config.msweep_eta,
            t1=config.msweep_t1,
            method="exact",
            num_paths=0,
            substeps=1,
            key=jr.fold_in(key, 2),
            log=log,
        )
    prob, x0 = nonconvex_problem()
    if "linreg_control" in parts:
        others = {k: v for k, v in allv.items() if not lm.is_affine(v)}
        log("linear regression, normalized/reweighted variants: Monte Carlo with the SGD control")
        results["linreg_control"] = slope_study(
            lin,
            others,
            smp,
            config.etas,
            config.t1,
            methods=lambda v: "control",
            num_paths=config.num_paths,
            substeps=config.substeps,
            key=jr.fold_in(key, 3),
            log=log,
        )
    if "nonconvex_mc" in parts:
        log(
            f"nonconvex ({prob.name}, start {float(x0[0])}, rho={config.nonconvex_rho}, T={config.nonconvex_t1}): "
            "Monte Carlo"
        )
        nv = variants_for(config.nonconvex_rho, masked=False)
        results["nonconvex_mc"] = slope_study(
            prob,
            nv,
            smp,
            config.nonconvex_etas,
            config.nonconvex_t1,
            methods=lambda v: "mc",
            num_paths=config.num_paths,
            substeps=config.substeps,
            key=jr.fold_in(key, 4),
            init=x0,
            log=log,
        )
    if "msweep_sam" in parts:
        log("m-sweep, m-SAM (Monte Carlo with the SGD control, B=4)")
        results["msweep_sam"] = m_sweep(
            lin,
            lambda m: ss.variants.m_sam(config.msweep_rho, m),
            4,
            (1, 2, 4),
            eta=config.msweep_eta,
            t1=config.msweep_t1,
            method="control",
            num_paths=config.num_paths,
            substeps=config.substeps,
            key=jr.fold_in(key, 5),
            log=log,
        )
    if "eta_rho_map" in parts:
        log("(eta, rho) map, USAM on linear regression (exact moments)")
        results["eta_rho_map"] = eta_rho_exact(lin, smp, config.map_etas, config.map_rhos, t1=config.map_t1, log=log)
    results["wall_time_s"] = time.perf_counter() - start
    return results


def _exact_studies(config, lin, smp, affine, key, results, log):
    log(f"linear regression ({lin.name}, B=2 with replacement, rho={config.rho}, T={config.t1}): exact moments")
    results["linreg_exact"] = slope_study(
        lin,
        affine,
        smp,
        config.exact_etas,
        config.t1,
        methods=lambda v: "exact",
        num_paths=0,
        substeps=1,
        key=jr.fold_in(key, 1),
        log=log,
    )
    log("F-USAM with lambda = 0.9 at smaller learning rates (exact moments)")
    small = tuple(e / 8 for e in config.exact_etas)
    results["linreg_exact"].update(
        slope_study(
            lin,
            {"F-USAM (lambda=0.9)": ss.variants.f_usam(config.rho, ema_decay=0.9)},
            smp,
            small,
            config.t1,
            methods=lambda v: "exact",
            num_paths=0,
            substeps=1,
            key=jr.fold_in(key, 7),
            orders=(1,),
            log=log,
        )
    )


def table(results: dict) -> str:
    lines = [f"{'study':15s} {'variant':17s} {'order':>5s} {'slope':>7s}  {'95% interval':>16s} {'C':>9s}  pass"]
    for study in ("linreg_exact", "linreg_control", "nonconvex_mc"):
        for r in results.get(study, {}).values():
            ok = r["lo"] >= 0.8 and r["hi"] <= 1.2 if r["order"] == 1 else True
            lines.append(
                f"{study:15s} {r['variant']:17s} {r['order']:5d} {r['slope']:7.3f}  "
                f"[{r['lo']:6.3f}, {r['hi']:6.3f}] {r['constant']:9.3e}  {'PASS' if ok else 'FAIL'}"
            )
    for key in ("msweep_usam", "msweep_sam"):
        if key in results:
            s = results[key]
            lines.append(
                f"{s['variant']} error ratio (ablated/extended) by m: "
                + ", ".join(f"m={r['m']}: {r['ratio']:.2f}+-{r['ratio_stderr']:.2f}" for r in s["rows"])
            )
    if "eta_rho_map" in results:
        lines.append(f"(eta, rho) map: {results['eta_rho_map']['scaling']}")
    return "\n".join(lines)


def write_json(path: str, obj) -> None:
    """Write ``obj`` as JSON atomically (unique temporary file in the same folder, mode 0644, then ``os.replace``)."""
    atomic_write_bytes(path, json.dumps(obj, indent=1, default=float).encode())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.weak_order", description=(__doc__ or "").partition("\n")[0]
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="exact (Monte-Carlo-free) linear-regression studies only")
    group.add_argument("--full", action="store_true", help="all studies (Monte Carlo included; minutes)")
    parser.add_argument("--out", default="results/weak_order", help="output folder (weak_order.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-paths", type=int, default=None)
    parser.add_argument("--parts", default=None, help=f"comma-separated subset of {','.join(PARTS)}")
    args = parser.parse_args(argv)
    config = FULL if args.full else QUICK
    config = dataclasses.replace(config, seed=args.seed)
    if args.num_paths is not None:
        if args.num_paths < 2:
            parser.error("--num-paths must be >= 2")
        config = dataclasses.replace(config, num_paths=args.num_paths)
    parts = None
    if args.parts:
        parts = args.parts.split(",")
        bad = sorted(set(parts) - set(PARTS))
        if bad:
            parser.error(f"--parts: unknown {bad}; valid: {','.join(PARTS)}")
    results = run(config, log=lambda s: print(s, flush=True), parts=parts)
    results["preset"] = "full" if args.full else "quick"
    results["provenance"] = provenance()
    path = os.path.join(args.out, "weak_order.json" if parts is None else f"weak_order_{'+'.join(parts)}.json")
    write_json(path, results)
    print(table(results))
    print(f"wrote {path} ({results['wall_time_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
