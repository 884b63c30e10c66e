"""Exact first and second moments on linear regression, discrete and SDE side (DESIGN §6.1).

On ``f_i(x) = (1/2)(a_i^T x - y_i)^2`` the update of every *unnormalized* variant is affine in the state with
random coefficients, ``z_{k+1} = F_xi z_k + f_xi`` (SGD, USAM, m-USAM, n-USAM, USAM-ON; F-USAM on the state
``z = (x, mu)`` augmented with its EMA). With i.i.d. batches ``xi`` the moment vector
``v = (1, E z, vec E z z^T)`` obeys a linear recursion ``v_{k+1} = T v_k`` whose matrix needs only the exact
batch moments ``E F``, ``E f``, ``E F (x) F``, ``E F (x) f``, ``E f f^T`` (enumerated over all multisets of a
micro-batch with their multinomial weights; micro-batches of one batch are i.i.d. with replacement).

On the SDE side an affine drift ``b(x) = K x - k`` with the leading-order diffusion ``eta c(B) Sigma(x)``
(quadratic in ``x``) gives a closed linear ODE for ``(E X, E X X^T)``; it is integrated exactly with a
matrix exponential. ``phi = loss`` and ``phi = ||x||^2`` are linear in these moments, so the weak error is
computed with no Monte Carlo at all.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax.flatten_util import ravel_pytree

import sde_sam as ss
from sde_sam._checks import check_positive

#: Largest number of enumerated micro-batches accepted (the enumeration is exact, never sampled).
MAX_BATCHES = 200_000


@dataclasses.dataclass(frozen=True)
class LinearData:
    """``A`` (n, d) and ``y`` (n,) in float64, with ``x`` the raveled parameters: ``f_i = (a_i^T x - y_i)^2 / 2``."""

    A: np.ndarray
    y: np.ndarray

    @property
    def n(self) -> int:
        return self.A.shape[0]

    @property
    def d(self) -> int:
        return self.A.shape[1]

    @property
    def hessian(self) -> np.ndarray:
        return self.A.T @ self.A / self.n

    @property
    def q(self) -> np.ndarray:
        return self.A.T @ self.y / self.n


def linear_data(problem: ss.Problem) -> LinearData:
    """Read ``A, y`` from a linear-regression problem (``data = {"a", "y"}``, loss ``(a^T x - y)^2 / 2`` in the
    raveled parameters). Checked against the problem's own loss at a random point."""
    if not isinstance(problem, ss.Problem):
        raise TypeError(f"`problem` must be a sde_sam.Problem, got {type(problem).__name__}")
    if not (isinstance(problem.data, dict) and set(problem.data) >= {"a", "y"}):
        raise ValueError("`problem` must be a linear regression with data {'a': (n, d), 'y': (n,)}")
    A = np.asarray(problem.data["a"], np.float64)
    y = np.asarray(problem.data["y"], np.float64)
    flat, unravel = problem.ravel()
    if A.ndim != 2 or A.shape[1] != flat.size:
        raise ValueError(f"`problem` data 'a' must be (n, d) with d = {flat.size} parameters, got {A.shape}")
    x = np.random.default_rng(0).standard_normal(flat.size)
    want = 0.5 * np.mean((A @ x - y) ** 2)
    got = float(problem.full_loss(unravel(jnp.asarray(x, flat.dtype))))
    if not abs(got - want) <= 1e-4 * (1 + abs(want)):
        raise ValueError("`problem` loss is not (1/2)(a_i^T x - y_i)^2 in the raveled parameters")
    return LinearData(A, y)


def split_linear_regression(
    n: int = 16, d: int = 4, head: int = 2, label_noise: float = 1.0, seed: int = 0, init_scale: float = 1.0
) -> ss.Problem:
    """``ss.problems.linear_regression`` with parameters split into two leaves ``{"head": x[:head], "tail": x[head:]}``,
    so a SAM-ON mask (``lambda path: path == "head"``) perturbs a proper subset of the coordinates."""
    base = ss.problems.linear_regression(n=n, d=d, label_noise=label_noise, seed=seed, init_scale=init_scale)
    if not 1 <= head < d:
        raise ValueError(f"`head` must be in [1, {d - 1}], got {head!r}")
    w0 = base.init_params

    def loss_fn(p, ex):
        return 0.5 * jnp.square(jnp.dot(ex["a"], jnp.concatenate([p["head"], p["tail"]])) - ex["y"])

    return ss.Problem(loss_fn, base.data, {"head": w0[:head], "tail": w0[head:]}, name=f"split_linreg_n{n}_d{d}")


# -- batch enumeration ----------------------------------------------------------------------------------


def multisets(n: int, size: int, replace: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """All size-``size`` batches as count vectors ``(N, n)`` with their probabilities: multisets with multinomial
    weights (``replace``) or uniform subsets."""
    count = math.comb(n + size - 1, size) if replace else math.comb(n, size)
    if count > MAX_BATCHES:
        raise ValueError(f"{count} batches of size {size} from n={n} exceed MAX_BATCHES={MAX_BATCHES}; use smaller n")
    it = itertools.combinations_with_replacement(range(n), size) if replace else itertools.combinations(range(n), size)
    counts = np.zeros((count, n))
    for r, row in enumerate(it):
        np.add.at(counts[r], list(row), 1.0)
    if replace:
        logp = math.lgamma(size + 1) - np.sum(np.vectorize(math.lgamma)(counts + 1), axis=1) - size * math.log(n)
        probs = np.exp(logp)
    else:
        probs = np.full(count, 1.0 / count)
    return counts, probs


def is_affine(variant, problem: ss.Problem | None = None) -> bool:
    """Whether the update of ``variant`` is affine in the (augmented) state ``z = (x, state)`` with coefficients that
    depend on the batch only, on linear regression (default: ``split_linear_regression()``): checked numerically from
    the variant's own step (Jacobians at far-apart points and other keys agree), so it holds for any rule."""
    problem = _affine_test_problem() if problem is None else problem
    counts = np.zeros((1, problem.num_examples))
    for i in range(variant.rule.expectation_batch_size(problem.num_examples)):
        counts[0, i % problem.num_examples] += 1
    try:
        _derivation(problem, variant, counts)
    except _NotAffine:
        return False
    return True


@functools.cache
def _affine_test_problem() -> ss.Problem:
    """The default problem of :func:`is_affine`, made once: derivations are kept per problem (:data:`_UNIT_INCREMENTS`),
    so a variant asked about again is not derived (and compiled) anew."""
    return split_linear_regression(n=8, d=3, head=1)


class _NotAffine(ValueError):
    pass


def _check_sampler(sampler, variant, n):
    if isinstance(sampler, ss.WithReplacement):
        return True
    k = variant.num_micro_batches(sampler.batch_size)
    if isinstance(sampler, ss.UniformSubset) and k == 1:
        return False  # i.i.d. uniform subsets
    if isinstance(sampler, ss.WithoutReplacement) and n // sampler.batch_size == 1 and k == 1:
        return False  # one batch per epoch: i.i.d. uniform subsets
    raise ValueError(
        "`sampler` must be WithReplacement (i.i.d. batches), UniformSubset or WithoutReplacement with one batch per "
        "epoch (batch_size > n/2) and no micro-batches, for the exact moment recursion"
    )


#: Unit-step coefficients per (problem, variant, batches), or the reason there are none: every eta of a study, and
#: every question of :func:`is_affine`, reuses one derivation (one compile).
_UNIT_INCREMENTS: dict = {}


def _derivation(problem: ss.Problem, variant, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`_unit_increments`, kept in :data:`_UNIT_INCREMENTS` (a refusal too: raised again as :class:`_NotAffine`);
    a variant that cannot be hashed is derived every time."""
    try:
        key = (id(problem), problem.name, variant, counts.shape, counts.tobytes())
        hit = _UNIT_INCREMENTS.get(key)
    except TypeError:
        return _unit_increments(problem, variant, counts)
    if hit is None:
        try:
            value = _unit_increments(problem, variant, counts)
        except _NotAffine as err:
            value = str(err)
        hit = _UNIT_INCREMENTS[key] = (problem, value)  # the problem kept alive with its id
    _, value = hit
    if isinstance(value, str):
        raise _NotAffine(value)
    return value


def _increments(problem: ss.Problem, variant, counts: np.ndarray, eta: float):
    """``(U, u)`` of :func:`_unit_increments` at learning rate ``eta``: the parameter rows (the first ``d``) scale with
    ``eta``, the state rows (F-USAM's EMA) do not."""
    U, u, d = _derivation(problem, variant, counts)
    U, u = U.copy(), u.copy()
    U[:, :d, :] *= eta
    u[:, :d] *= eta
    return U, u


def _unit_increments(problem: ss.Problem, variant, counts: np.ndarray):
    """Per batch (rows of ``counts``, multiplicities) ``(U, u)`` with ``z' = z + U z + u`` in float64, shapes
    ``(N, D, D)``, ``(N, D)`` at ``eta = 1``, and ``d``, for ``z = (x, state)`` (F-USAM's EMA:
    ``D = 2d``): read off the variant's own step by
    ``jax.jacfwd`` at ``z = 0``; raises :class:`_NotAffine` unless the step is affine in ``z`` and draws no random
    numbers (Jacobian and offset equal at three far-apart points, each under another key). A normalization that is
    not linear (``v/||v||``) is refused without evaluation: on one example it is piecewise affine, on more not."""
    if variant.perturbs and not variant.normalization.linear:
        raise _NotAffine(
            f"variant {variant.name!r} is not affine on linear regression (its normalization "
            f"{type(variant.normalization).__name__} is not linear): no exact moment recursion"
        )
    data = linear_data(problem)
    rows = [np.repeat(np.arange(data.n), np.asarray(c, int)) for c in counts]
    idx = np.stack(rows)
    with jax.enable_x64(True):
        params64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), problem.init_params)
        twin = ss.Problem(
            problem.loss_fn, {"a": jnp.asarray(data.A), "y": jnp.asarray(data.y)}, params64, name=problem.name
        )
        flat0, unravel = ravel_pytree(params64)
        d = flat0.size
        state0 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), variant.init(params64))
        sflat0, sunravel = ravel_pytree(state0)

        def increment(z, row, key):
            x = unravel(z[:d])
            state = sunravel(z[d:]) if sflat0.size else state0
            G, new_state, _ = variant.gradient(twin, x, state, twin.take(row), key)
            dx = -ravel_pytree(G)[0]
            return jnp.concatenate([dx, ravel_pytree(new_state)[0] - z[d:]]) if sflat0.size else dx

        D = d + sflat0.size

        @jax.jit
        def coefficients(z, key):
            one = lambda row: (jax.jacfwd(increment)(z, row, key), increment(z, row, key))  # noqa: E731
            return jax.vmap(one)(jnp.asarray(idx))

        U, w0 = coefficients(jnp.zeros(D), jax.random.key(0))
        U, u = np.asarray(U, np.float64), np.asarray(w0, np.float64)
        # three far-apart points (entries of size ~10): a normalized direction is piecewise affine on linear
        # regression (one example: sign(a_i . x - y_i) a_i/|a_i|), so nearby points could all miss its kinks
        rng = np.random.default_rng(3)
        for i in range(3):
            z = 10.0 * rng.standard_normal(D)
            Ui, wi = (np.asarray(a, np.float64) for a in coefficients(jnp.asarray(z), jax.random.key(i + 1)))
            scale = (1.0 + np.max(np.abs(U)) + np.max(np.abs(u))) * (1.0 + np.max(np.abs(z)))
            if np.max(np.abs(Ui - U)) > 1e-9 * scale or np.max(np.abs(wi - (u + U @ z))) > 1e-9 * scale:
                raise _NotAffine(
                    f"variant {variant.name!r} is not affine on linear regression (normalized, "
                    "reweighted or random): no exact moment recursion"
                )
    return U, u, d


@dataclasses.dataclass(frozen=True)
class Moments:
    """Exact ``E phi`` at the recorded steps/times: ``loss`` and ``param_norm_sq`` arrays ``(T,)``, plus ``mean``
    (T, d)."""

    times: np.ndarray
    loss: np.ndarray
    param_norm_sq: np.ndarray
    mean: np.ndarray

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in ("loss", "param_norm_sq"):
            raise KeyError(f"exact moments give 'loss' and 'param_norm_sq', not {name!r}")
        return getattr(self, name)


def _observe(data: LinearData, vs: np.ndarray, d: int, D: int, times: np.ndarray) -> Moments:
    m = vs[:, 1 : 1 + D][:, :d]
    M = vs[:, 1 + D :].reshape(-1, D, D)[:, :d, :d]
    H, q = data.hessian, data.q
    loss = 0.5 * np.einsum("ij,tji->t", H, M) - m @ q + 0.5 * np.mean(data.y**2)
    return Moments(times, loss, np.einsum("tii->t", M), m)


def batch_moments(problem: ss.Problem, variant, sampler, eta: float):
    """Exact moments of one step's increment ``z' - z = U z + u``: ``(EU, Eu, E[U_ai U_bj], E[U_ai u_b], E[u u^T])``,
    with ``U`` the mean over the ``k`` i.i.d. micro-batches (DESIGN §1: batches with replacement)."""
    data = linear_data(problem)
    n, B = data.n, sampler.batch_size
    replace = _check_sampler(sampler, variant, n)
    k = variant.num_micro_batches(B) if variant.perturbs else 1
    counts, probs = multisets(n, B // k, replace)
    U, u = _increments(problem, variant, counts, eta)
    EU, Eu = np.einsum("r,rij->ij", probs, U), probs @ u
    EUU = np.einsum("r,rai,rbj->aibj", probs, U, U)
    EUu = np.einsum("r,rai,rb->aib", probs, U, u)
    Euu = np.einsum("r,ra,rb->ab", probs, u, u)
    # k i.i.d. micro-batches, U = mean_j U_j: second moments mix E[U_j U_j] and E[U_j] E[U_l] (j != l)
    w = 1.0 / k
    EUU = w * EUU + (1 - w) * np.einsum("ai,bj->aibj", EU, EU)
    EUu = w * EUu + (1 - w) * np.einsum("ai,b->aib", EU, Eu)
    Euu = w * Euu + (1 - w) * np.outer(Eu, Eu)
    return EU, Eu, EUU, EUu, Euu


def transition_matrix(problem: ss.Problem, variant, sampler, eta: float) -> tuple[np.ndarray, int]:
    """``T`` with ``v_{k+1} = T v_k`` for ``v = (1, E z, vec E z z^T)`` (row-major vec), and the state size ``D``."""
    EU, Eu, EUU, EUu, Euu = batch_moments(problem, variant, sampler, eta)
    D = EU.shape[0]
    I = np.eye(D)  # noqa: E741
    EF = I + EU
    EFF = np.einsum("ai,bj->aibj", I, I) + np.einsum("ai,bj->aibj", I, EU) + np.einsum("ai,bj->aibj", EU, I) + EUU
    EFf = np.einsum("ai,b->aib", I, Eu) + EUu  # E[F_ai f_b]
    size = 1 + D + D * D
    T = np.zeros((size, size))
    T[0, 0] = 1.0
    T[1 : 1 + D, 0] = Eu
    T[1 : 1 + D, 1 : 1 + D] = EF
    T[1 + D :, 0] = Euu.reshape(-1)
    # M'_ab = sum_ij E[F_ai F_bj] M_ij + sum_i (E[F_ai f_b] + E[f_a F_bi]) m_i + E[f_a f_b]
    T[1 + D :, 1 + D :] = EFF.transpose(0, 2, 1, 3).reshape(D * D, D * D)
    T[1 + D :, 1 : 1 + D] = (EFf + EFf.transpose(2, 1, 0)).transpose(0, 2, 1).reshape(D * D, D)
    return T, D


def _initial(problem: ss.Problem, D: int, x0=None) -> np.ndarray:
    x = np.asarray(problem.ravel(problem.init_params if x0 is None else x0)[0], np.float64)
    z = np.zeros(D)
    z[: x.size] = x  # F-USAM's EMA starts at mu_0 = 0
    return np.concatenate([[1.0], z, np.outer(z, z).reshape(-1)])


def discrete_moments(
    problem: ss.Problem, variant, sampler, *, eta: float, steps: int, every: int = 1, init_params=None
) -> Moments:
    """Exact ``E loss(x_k)`` and ``E ||x_k||^2`` at ``k = 0, every, ..., steps`` of ``run_discrete`` (DESIGN §6.1)."""
    check_positive("eta", eta)
    check_positive("steps", steps, integer=True)
    if not is_affine(variant):
        raise ValueError(f"variant {variant.name!r} is not affine on linear regression: no exact moment recursion")
    T, D = transition_matrix(problem, variant, sampler, eta)
    Te = np.linalg.matrix_power(T, every)
    v = _initial(problem, D, init_params)
    out = [v]
    for _ in range(steps // every):
        v = Te @ v
        out.append(v)
    data = linear_data(problem)
    return _observe(data, np.stack(out), data.d, D, np.arange(len(out)) * every * eta)


@jax.jit
def _flat_drift(model, x):
    """``model.drift`` at the flat point ``x``, flat: one program for every model of a structure (``eta`` and ``rho``
    are the model's leaves)."""
    flat0, unravel = model.problem.ravel()
    return model.problem.ravel(model.drift(unravel(x.astype(flat0.dtype))))[0]


def affine_drift(model, tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """``(K, k)`` with ``model.drift(x) = K x - k``, read off at ``x = 0`` and the unit vectors and checked at two
    random points (relative ``tol``); raises ``ValueError`` when the drift is not affine."""
    d = model.problem.dim
    b = functools.partial(_flat_drift, model)
    E = np.concatenate([np.zeros((1, d)), np.eye(d)])
    vals = np.stack([np.asarray(b(jnp.asarray(e)), np.float64) for e in E])
    k = -vals[0]
    K = (vals[1:] + k).T
    rng = np.random.default_rng(1)
    for _ in range(2):
        x = rng.standard_normal(d)
        want = K @ x - k
        got = np.asarray(b(jnp.asarray(x)), np.float64)
        if np.linalg.norm(got - want) > tol * (1 + np.linalg.norm(want)):
            raise ValueError(
                f"the drift of {model.variant.name!r} is not affine in x (residual "
                f"{np.linalg.norm(got - want):.2e}); the moment ODE needs an affine drift"
            )
    return K, k


def sde_generator(model) -> np.ndarray:
    """``L`` with ``dv/dt = L v`` for ``v = (1, E X, vec E X X^T)`` of ``dX = -(K X - k) dt + sqrt(eta) S^{1/2} dW``
    (DESIGN §3.2): ``S = c(B) Sigma(x)`` (``"leading"``), ``Sigma(x) = (1/n) sum_i (D_i x - e_i)(D_i x - e_i)^T``;
    ``S = Cov_xi[G(x)]`` from the exact batch law (``"empirical"``); ``S = 0`` (``"none"``)."""
    leading = isinstance(model.diffusion, ss.sde.LeadingDiffusion)
    empirical = isinstance(model.diffusion, ss.sde.EmpiricalDiffusion)
    if not (leading or empirical or isinstance(model.diffusion, ss.sde.NoDiffusion)):
        raise ValueError(f"the moment ODE supports the leading, empirical or no diffusion, not {model.diffusion!r}")
    data = linear_data(model.problem)
    K, k = affine_drift(model)
    d, n = data.d, data.n
    Dm = np.einsum("ij,ik->ijk", data.A, data.A) - data.hessian  # D_i = a_i a_i^T - H
    e = data.A * data.y[:, None] - data.q  # e_i = a_i y_i - q
    c = model.eta * model.noise_factor if leading else 0.0
    size = 1 + d + d * d
    L = np.zeros((size, size))
    I = np.eye(d)  # noqa: E741
    L[1 : 1 + d, 0] = k
    L[1 : 1 + d, 1 : 1 + d] = -K
    # dM = -(K M + M K^T) + k m^T + m k^T + c E Sigma
    L[1 + d :, 1 + d :] = -(np.einsum("ai,bj->abij", K, I) + np.einsum("ai,bj->abij", I, K)).reshape(d * d, d * d)
    L[1 + d :, 1 + d :] += c / n * np.einsum("rai,rbj->abij", Dm, Dm).reshape(d * d, d * d)
    cross = np.einsum("a,bi->abi", k, I) + np.einsum("ai,b->abi", I, k)
    cross -= c / n * (np.einsum("rai,rb->abi", Dm, e) + np.einsum("ra,rbi->abi", e, Dm))
    L[1 + d :, 1 : 1 + d] = cross.reshape(d * d, d)
    L[1 + d :, 0] = c / n * np.einsum("ra,rb->ab", e, e).reshape(-1)
    if empirical:  # eta Cov_xi[G(x)], G = -(U x + u)/eta' for the exact batch law (eta' = 1)
        if model.variant.rule.stateful:
            raise ValueError("the moment ODE's empirical diffusion needs a state-free variant (not F-SAM/F-USAM)")
        EU, Eu, EUU, EUu, Euu = batch_moments(model.problem, model.variant, model.sampler, 1.0)
        e = model.eta
        L[1 + d :, 1 + d :] += e * (EUU - np.einsum("ai,bj->aibj", EU, EU)).transpose(0, 2, 1, 3).reshape(d * d, d * d)
        cx = EUu - np.einsum("ai,b->aib", EU, Eu)
        L[1 + d :, 1 : 1 + d] += e * (cx + cx.transpose(2, 1, 0)).transpose(0, 2, 1).reshape(d * d, d)
        L[1 + d :, 0] += e * (Euu - np.outer(Eu, Eu)).reshape(-1)
    return L


def sde_moments(model, *, t1: float, every_dt: float, init_params=None) -> Moments:
    """Exact ``E loss(X_t)`` and ``E ||X_t||^2`` at ``t = 0, every_dt, ..., t1`` for an affine-drift model on linear
    regression (matrix exponential of :func:`sde_generator`; no time discretization, no Monte Carlo)."""
    L = sde_generator(model)
    num = round(t1 / every_dt)
    Phi = scipy.linalg.expm(L * every_dt)
    data = linear_data(model.problem)
    v = _initial(model.problem, data.d, init_params)
    out = [v]
    for _ in range(num):
        v = Phi @ v
        out.append(v)
    return _observe(data, np.stack(out), data.d, data.d, np.arange(num + 1) * every_dt)
