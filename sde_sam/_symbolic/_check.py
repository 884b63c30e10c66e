"""Numeric checks of the symbolic derivations (DESIGN §5): lambdified sympy against the code, in float64.

Every comparison evaluates the lambdified :class:`~sde_sam.symbolic.Derivation` and a numeric computation on
the *twin problem*, a :class:`~sde_sam.Problem` whose per-example loss is the same cubic written in
``jax.numpy`` (:func:`twin_problem`), at random points and coefficients:

* ``discrete_mean`` / ``discrete_cov``: ``E[G]`` and ``Cov[G]`` of the discrete step
  :meth:`Variant.gradient` by enumerating all ordered batches (uniform), at the variant's ``rho``, against the
  exact symbolic sums (no expansion, so these hold at any ``rho``);
* ``discrete_b0`` / ``discrete_b1`` / ``discrete_b2``: the ``rho``-Taylor coefficients of the discrete
  ``E[G]`` (a quadratic in ``rho`` for cubic losses) and ``discrete_S0`` / ``discrete_S1`` those of
  ``Cov[G]`` (a quartic), extracted by exact polynomial interpolation through five radii
  ``rho in {0.2, .., 1.0}`` (Richardson-type extraction; exact up to rounding), against
  ``b_0, b_1, b_2, S_0, S_1``;
* ``general_drift`` / ``closed_form_drift``: ``sde_sam.sde.general_drift`` and ``closed_form_drift`` (first
  order in ``rho`` by construction) against ``b_0 + rho b_1``.

Relative error: ``||a - b||_inf / ||b||_inf`` with ``b`` the symbolic value (absolute where ``b = 0``), the
maximum over points.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import Literal
from .._problems._problem import Problem
from .._problems._sampler import WithoutReplacement, WithReplacement
from .._variants._variant import Variant
from ._derive import COEFFICIENTS, Setting, derive, lambdified, param_names
from ._specs import symbolic_parameters_of

#: Radii ``EXTRACTION_RADIUS * EXTRACTION_NODES`` at which the discrete moments are interpolated (never
#: ``rho = 0``: the code's step switches to plain SGD there, which for weighted descent is not the limit).
EXTRACTION_RADIUS = 1.0
EXTRACTION_NODES = (0.2, 0.4, 0.6, 0.8, 1.0)


@functools.cache
def _twin_loss(dim: int):
    """The cubic per-example loss of DESIGN §5 in ``jax.numpy`` (written independently of sympy)."""
    if dim == 1:

        def loss_fn(p, ex):
            x = p["x1"]
            return ex["a"] * x**2 / 2 + ex["b"] * x + ex["c"] * x**3 / 6

        return loss_fn

    def loss_fn(p, ex):
        x1, x2 = p["x1"], p["x2"]
        quad = ex["a11"] * x1**2 / 2 + ex["a12"] * x1 * x2 + ex["a22"] * x2**2 / 2
        cubic = ex["c1"] * x1**3 / 6 + ex["c2"] * x2**3 / 6 + ex["e"] * x1**2 * x2 / 2
        return quad + ex["b1"] * x1 + ex["b2"] * x2 + cubic

    return loss_fn


def twin_problem(dim: int, coeffs: dict, x) -> Problem:
    """The numeric twin of the symbolic problem: data ``coeffs`` (name -> ``(n,)``), parameters
    ``{"x1": .., "x2": ..}`` at ``x``, in the dtype of the current JAX config (float64 under x64)."""
    if dim not in (1, 2):
        raise ValueError(f"`dim` must be 1 or 2, got {dim!r}")
    missing = set(COEFFICIENTS[dim]) - set(coeffs)
    if missing:
        raise ValueError(f"`coeffs` lacks {sorted(missing)}; a {dim}-D twin needs {COEFFICIENTS[dim]}")
    dtype = jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32
    data = {k: jnp.asarray(np.asarray(coeffs[k], np.float64), dtype) for k in COEFFICIENTS[dim]}
    x = np.asarray(x, np.float64).reshape(dim)
    params = {name: jnp.asarray(x[j], dtype) for j, name in enumerate(param_names(dim))}
    return Problem(_twin_loss(dim), data, params, name=f"symbolic_twin_{dim}d")


def random_instance(setting: Setting, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A random point ``x ~ N(0, 0.8^2 I)`` and coefficients ``~ N(0, 1)`` (name -> ``(n,)``)."""
    x = 0.8 * rng.standard_normal(setting.dim)
    coeffs = {name: rng.standard_normal(setting.n) for name in COEFFICIENTS[setting.dim]}
    return x, coeffs


def sampler_of(setting: Setting):
    return (WithReplacement if setting.with_replacement else WithoutReplacement)(setting.batch_size)


def rel_err(a, b) -> float:
    """``||a - b||_inf / ||b||_inf`` (the absolute error when ``b`` is exactly zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    err = float(np.max(np.abs(a - b))) if b.size else 0.0
    return err / scale if scale > 0 else err


def _flat(tree, dim) -> jnp.ndarray:
    return jnp.stack([tree[k] for k in param_names(dim)], axis=-1)


def _ordered_batches(setting: Setting) -> np.ndarray:
    it = (
        itertools.product(range(setting.n), repeat=setting.batch_size)
        if setting.with_replacement
        else itertools.permutations(range(setting.n), setting.batch_size)
    )
    return np.array(list(it), dtype=np.int32)


def _moments(problem, params, variant: Variant, setting: Setting, rows):
    state = variant.rule.sde_state(problem, params)
    key = jax.random.key(0)  # unused by exact scores

    def one(idx):
        G, _, _ = variant.gradient(problem, params, state, problem.take(idx), key)
        return _flat(G, setting.dim)

    Gs = jax.vmap(one)(rows)
    mean = jnp.mean(Gs, axis=0)
    centred = Gs - mean
    return mean, centred.T @ centred / Gs.shape[0]


@functools.lru_cache(maxsize=256)
def numeric_fn(variant: Variant, setting: Setting, discrete: bool = True, sde: bool = True):
    """One jitted ``(problem, params) -> dict`` per ``(variant, setting)`` (float64 when called under x64):

    * ``"discrete_mean"``, ``"discrete_cov"``: ``E[G]`` and ``Cov[G]`` of :meth:`Variant.gradient` over all
      ordered batches of ``setting`` (uniform; F-SAM's EMA state set to ``mu = g``);
    * ``"general_drift"``, ``"closed_form_drift"``: ``sde_sam.sde.general_drift`` / ``closed_form_drift``
      (only when ``sde``; the closed form only where the rule has one)."""
    rows = jnp.asarray(_ordered_batches(setting))
    sampler = sampler_of(setting)
    try:
        from .. import sde as sde_module
    except ImportError:  # pragma: no cover - the SDE layer is part of the package
        sde_module = None

    @jax.jit
    def fn(problem, params):
        out = {}
        if discrete:
            out["discrete_mean"], out["discrete_cov"] = _moments(problem, params, variant, setting, rows)
        if sde and sde_module is not None:
            out["general_drift"] = _flat(sde_module.general_drift(problem, variant, sampler, params), setting.dim)
            if sde_module.ClosedFormDrift().supports(variant):  # a rule of your own may define none
                out["closed_form_drift"] = _flat(
                    sde_module.closed_form_drift(problem, variant, sampler, params), setting.dim
                )
        return out

    return fn


def compare(
    variant: Variant,
    setting: Setting,
    *,
    points: int = 3,
    seed: int = 0,
    discrete: bool = True,
    sde: bool = True,
    extraction: bool = True,
) -> dict[str, float]:
    """Largest relative errors (over ``points`` random points and coefficient draws) between the symbolic
    derivation of ``variant`` on ``setting`` and the numeric code, in float64 (see the module docstring for
    the keys). ``discrete``/``sde``/``extraction`` switch the groups of comparisons on or off."""
    der = derive(variant, setting)
    rng = np.random.default_rng(seed)
    errors: dict[str, float] = {}

    def record(key, a, b):
        errors[key] = max(errors.get(key, 0.0), rel_err(a, b))

    kw = {"sigma": 1.0, "lam": 1.0} | symbolic_parameters_of(variant.rule)
    rho = variant.rho
    radii = [t * EXTRACTION_RADIUS for t in EXTRACTION_NODES]
    with jax.enable_x64(True):
        main = numeric_fn(variant, setting, discrete, sde) if (discrete or sde) else None
        extract = [numeric_fn(variant.replace(rho=r), setting, True, False) for r in radii] if extraction else []
        for _ in range(points):
            x, coeffs = random_instance(setting, rng)
            problem = twin_problem(setting.dim, coeffs, x)
            params = problem.init_params
            sym = lambda name, r=rho, x=x, coeffs=coeffs: lambdified(der, name)(x, coeffs, rho=r, **kw)  # noqa: E731
            out = {} if main is None else {k: np.asarray(v) for k, v in main(problem, params).items()}
            if "discrete_mean" in out:
                record("discrete_mean", out["discrete_mean"], sym("drift_exact").ravel())
                record("discrete_cov", out["discrete_cov"], sym("diffusion_exact"))
            for kind in ("general_drift", "closed_form_drift"):
                if kind in out:
                    record(kind, out[kind], sym("first_order_drift").ravel())
            if extraction:
                moments = [fn(problem, params) for fn in extract]
                V = np.vander(np.asarray(radii), len(radii), increasing=True)
                means = np.stack([np.asarray(m["discrete_mean"]) for m in moments])
                covs = np.stack([np.asarray(m["discrete_cov"]) for m in moments])
                bc = np.linalg.solve(V, means)  # (5, d): rho-coefficients of E[G]
                sc = np.linalg.solve(V, covs.reshape(len(radii), -1)).reshape(covs.shape)
                for r in range(3):
                    record(f"discrete_b{r}", bc[r], sym(f"b{r}").ravel())
                record("discrete_S0", sc[0], sym("S0"))
                record("discrete_S1", sc[1], sym("S1"))
    return errors


def variants_for(
    dim: int, rho: float = 0.5, micro_batch_size: int = 1, sigma: float = 0.7, lam: float = 0.8
) -> dict[str, Variant]:
    """Every variant the symbolic module covers, on the ``dim``-D twin (SAM-ON masks ``x2`` in 2-D)."""
    from .. import variants as V

    out = {
        "SGD": V.sgd(),
        "USAM": V.usam(rho),
        "SAM": V.sam(rho),
        "n-USAM": V.n_usam(rho),
        "n-SAM": V.n_sam(rho),
        "m-USAM": V.m_usam(rho, micro_batch_size),
        "m-SAM": V.m_sam(rho, micro_batch_size),
        "F-USAM": V.f_usam(rho, sigma=sigma),
        "F-SAM": V.f_sam(rho, sigma=sigma),
        "RW-USAM": V.rw_usam(rho, inverse_temperature=lam, score="exact"),
        "RW-SAM": V.rw_sam(rho, inverse_temperature=lam, score="exact"),
        "RW-SAM (weighted descent)": V.rw_sam(rho, inverse_temperature=lam, score="exact", weights_in_descent=True),
        "RW-USAM (weighted descent)": V.rw_usam(rho, inverse_temperature=lam, score="exact", weights_in_descent=True),
        "DNSAM": V.dnsam(rho),
    }
    if dim == 2:
        mask = {"x1": True, "x2": False}
        out["SAM-ON"] = V.sam_on(rho, mask=mask)
        out["USAM-ON"] = V.sam_on(rho, mask=mask, normalize=False)
    return out


def compare_expression(
    expr,
    variant: Variant,
    setting: Setting,
    *,
    kind: Literal["general_drift", "closed_form_drift", "discrete_mean"] = "general_drift",
    points: int = 3,
    seed: int = 0,
) -> float:
    """Largest relative error between a symbolic drift ``expr`` (a ``dim x 1`` sympy matrix in the symbols of
    ``setting``, evaluated at the variant's ``rho``, ``sigma``, ``lambda``) and the numeric ``kind``
    (``"general_drift"``, ``"closed_form_drift"`` or ``"discrete_mean"``) over ``points`` random instances.
    This is the checker the tests feed with deliberately wrong drifts."""
    from ._derive import numeric

    if kind not in ("general_drift", "closed_form_drift", "discrete_mean"):
        raise ValueError(f"`kind` must be 'general_drift', 'closed_form_drift' or 'discrete_mean', got {kind!r}")
    f = numeric(setting, expr)
    rng = np.random.default_rng(seed)
    worst = 0.0
    with jax.enable_x64(True):
        fn = numeric_fn(variant, setting, kind == "discrete_mean", kind != "discrete_mean")
        for _ in range(points):
            x, coeffs = random_instance(setting, rng)
            problem = twin_problem(setting.dim, coeffs, x)
            out = np.asarray(fn(problem, problem.init_params)[kind])
            ref = f(
                x, coeffs, rho=variant.rho, **({"sigma": 1.0, "lam": 1.0} | symbolic_parameters_of(variant.rule))
            ).ravel()
            worst = max(worst, rel_err(out, ref))
    return worst


def error_table(dims: tuple[int, ...] = (1, 2), points: int = 3, seed: int = 0) -> dict[str, dict[str, float]]:
    """:func:`compare` for every variant of :func:`variants_for` in each dimension (``n = 3``, ``B = 2``,
    samplers alternating over variants): ``{"<name> (<dim>-D, <sampler>)": errors}``. Minutes on a laptop."""
    out = {}
    for dim in dims:
        names = sorted(variants_for(2))
        for name, variant in variants_for(dim).items():
            setting = Setting(dim=dim, n=3, batch_size=2, with_replacement=names.index(name) % 2 == 0)
            label = f"{name} ({dim}-D, {'with' if setting.with_replacement else 'without'} replacement)"
            out[label] = compare(variant, setting, points=points, seed=seed)
    return out
