"""SAM variants as compositions of perturbation parts (DESIGN §2).

Every variant computes ``G = (1/k) sum_j grad f_{gamma_j}(x + eps_j)`` (or the descent-weighted sum) with

    eps_j = rho * T N(T M d_j)

where ``d_j`` is the direction of micro-batch ``j`` from the *rule* (:class:`~sde_sam.variants.AbstractRule`),
``M`` an optional 0/1 mask (SAM-ON), ``T`` an optional elementwise preconditioner (ASAM) and ``N`` the
normalization (:class:`Identity`, :class:`UnitNorm`, :class:`FullGradientNorm`). A :class:`Variant` is a small
frozen dataclass holding these parts; :meth:`Variant.gradient` is the single pure step shared by all of them.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._checks import Literal, check_number
from .._problems._problem import Problem, tree_norm_sq
from .._pytree import fields_pytree
from .._typing import Real
from ._perturbation import (
    NORM_EPS as NORM_EPS,
)
from ._perturbation import (
    AbstractNormalization,
    AbstractPreconditioner,
    FullGradientNorm,
    Identity,
    ParameterScale,
    UnitNorm,
    apply_mask,
    freeze_mask,
    is_normalization_param,
    resolve_mask,
    scale_by,
)
from ._perturbation import (
    safe_normalize as safe_normalize,
)
from ._rules import (
    AbstractRule,
    BatchGradient,
    Directions,
    Friendly,
    FullGradient,
    NoAscent,
    RandomDirection,
    Reweighted,
    import_named,
    qualified_name,
    type_name,
)
from ._rules import (
    rademacher_like as rademacher_like,
)


class StepOutput(NamedTuple):
    """What one :meth:`Variant.gradient` call returns besides the new state."""

    loss: Float[Array, ""]  # batch loss at x (NaN for rules that never evaluate it)
    direction_norm: Float[Array, ""]  # ||M d|| averaged over micro-batches


def _part_config(part: Any) -> dict:
    """A rule's or a preconditioner's class name and fields."""
    fields = {f.name: getattr(part, f.name) for f in dataclasses.fields(part) if f.init}
    return {"type": type_name(type(part)), **fields}


def _subclasses(base: type) -> dict[str, list[type]]:
    out: dict[str, list[type]] = {}
    todo = [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            out.setdefault(sub.__name__, []).append(sub)
            todo.append(sub)
    return out


def _part_from_config(base: type, config: Any) -> Any:
    """The part that ``config`` (``{"type": class name, **fields}``) describes: a subclass of ``base`` by name."""
    if not isinstance(config, Mapping) or "type" not in config:
        raise ValueError(f"a {base.__name__} config must be a mapping with a 'type', got {config!r}")
    fields = dict(config)
    name = fields.pop("type")
    if ":" in name:  # a user's class, named module:qualname
        try:
            obj = import_named(name)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"{base.__name__} {name!r} cannot be imported ({err})") from None
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise ValueError(f"{name!r} is not a {base.__name__}")
        return obj(**fields)
    found = _subclasses(base).get(name, [])
    if len(found) != 1:
        known = sorted(n for n, c in _subclasses(base).items() if len(c) == 1 and not inspect.isabstract(c[0]))
        why = "is defined twice" if found else "is not a defined class"
        raise ValueError(f"{base.__name__} {name!r} {why}; known: {', '.join(known)}")
    return found[0](**fields)


def _mask_config(mask: Any) -> str:
    return (qualified_name(mask) if callable(mask) else None) or repr(mask)


def _mask_from_config(mask: Any) -> Any:
    if mask is None or mask == "None":
        return None
    if not isinstance(mask, str):
        return mask  # a predicate or a pytree of booleans, passed as it is
    module, sep, qualname = mask.partition(":")
    named = sep and all(p.isidentifier() for p in (*module.split("."), *qualname.split(".")))
    if not named:
        raise ValueError(
            f"`mask` {mask!r} cannot be rebuilt from a config (a lambda or a pytree of booleans): pass mask=..."
        )
    try:
        return import_named(mask)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"`mask` {mask!r} names no importable predicate ({err}): pass mask=...") from None


@fields_pytree(
    leaves=("rho", "rule", "preconditioner"),
    static=("name", "normalization", "mask", "allow_empty_mask", "rho_positive"),
)
@dataclasses.dataclass(frozen=True)
class Variant:
    """A SAM-type method: ``eps_j = rho T N(T M d_j)`` (DESIGN §2). Build it with the factories below, or
    compose your own parts.

    A variant is a pytree whose leaves are ``rho`` and the numbers its rule and preconditioner name as
    ``hyperparameters`` (F-SAM's ``sigma`` and ``lambda``, RW-SAM's ``lambda``, ASAM's ``c``);
    everything else, the sign of ``rho`` included, is static. A compiled step takes them as traced values, so runs
    over a grid of them share one program.

    Fields:
        name: display name (``"m-SAM"``...).
        rho: perturbation radius ``rho >= 0``.
        rule: the direction rule ``d_j`` (an :class:`AbstractRule`; its own parameters live on it).
        normalization: ``N`` (an :class:`AbstractNormalization`), default :class:`UnitNorm`.
        mask: ``M``: ``None``, a predicate on parameter paths or a pytree of booleans (SAM-ON).
        preconditioner: ``T`` (an :class:`AbstractPreconditioner`, ASAM) or ``None``.
    """

    name: str
    rho: Real = 0.0
    rule: AbstractRule = dataclasses.field(default_factory=BatchGradient)
    normalization: AbstractNormalization = dataclasses.field(default_factory=UnitNorm)
    mask: Any = None
    preconditioner: AbstractPreconditioner | None = None
    #: A mask that selects no parameter turns the variant into SGD; refused unless this is set.
    allow_empty_mask: bool = False
    #: ``rho > 0``, fixed at construction: static, so that ``rho`` itself can be traced.
    rho_positive: bool = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "rho", check_number("rho", self.rho))
        object.__setattr__(self, "rho_positive", bool(self.rho > 0))
        if not isinstance(self.rule, AbstractRule):
            raise TypeError(f"`rule` must be a sde_sam.variants.AbstractRule, got {type(self.rule).__name__}")
        if not isinstance(self.normalization, AbstractNormalization):
            raise TypeError(
                "`normalization` must be a sde_sam.variants.AbstractNormalization, "
                f"got {type(self.normalization).__name__}"
            )
        if self.preconditioner is not None and not isinstance(self.preconditioner, AbstractPreconditioner):
            raise TypeError(
                f"`preconditioner` must be a sde_sam.variants.AbstractPreconditioner or None, "
                f"got {type(self.preconditioner).__name__}"
            )
        object.__setattr__(self, "mask", freeze_mask(self.mask))

    # -- static properties -----------------------------------------------------------------------
    @property
    def perturbs(self) -> bool:
        """False when the step is plain SGD: no ascent, or ``rho = 0`` (except a rule whose rho-free update is not
        the batch gradient, e.g. RW-SAM with weights in the descent: ``sum_i p_i g_i`` differs from SGD at
        ``rho = 0``)."""
        if not self.rule.ascends:
            return False
        return self.rho_positive or not self.rule.descent_is_batch_gradient

    @property
    def descent_is_batch_gradient(self) -> bool:
        """Whether the rho-free update ``G_0`` is the plain batch gradient ``g_gamma`` (so its covariance is
        ``c(B) Sigma``). False for RW-SAM with weights in the descent: ``G_0 = sum_i w_i g_i``."""
        return self.rule.descent_is_batch_gradient

    @property
    def differentiable_update(self) -> bool:
        """Whether ``x -> G(x; xi)`` is differentiated correctly by autodiff (needed by the order-2 drift
        ``b + (eta/2)(Db) b``). False for RW-SAM: its weights carry ``stop_gradient``."""
        return self.rule.differentiable

    def num_micro_batches(self, batch_size: int) -> int:
        """``k``: ``B / m`` for micro-batches (raises when ``m`` does not divide ``B``), else ``1``."""
        return self.rule.num_micro_batches(batch_size)

    def check(self, batch_size: int, n: int, params: PyTree | None = None) -> None:
        """Validate against a sampler's batch size ``B``, the problem's ``n`` and (when given) its parameters: a
        mask that selects none of them is refused unless ``allow_empty_mask`` (the step would be SGD's)."""
        self.num_micro_batches(batch_size)
        if params is not None and self.mask is not None and not self.allow_empty_mask:
            selected = jax.tree_util.tree_leaves(resolve_mask(self.mask, params))
            if not any(selected):
                raise ValueError(
                    f"the mask of {self.name} selects none of the {len(selected)} parameter leaves, so it would "
                    "run plain SGD (the default SAM-ON mask selects normalization-layer scales and biases); pass "
                    "a mask that selects some parameters, or allow_empty_mask=True"
                )

    def config(self) -> dict:
        """A JSON-friendly description of the parts (recorded with every result; :meth:`from_config` rebuilds the
        variant from it). A predicate mask is named ``"module:qualname"``."""
        out = {
            "name": self.name,
            "rho": float(self.rho),
            "rule": self.rule.config(),
            "normalization": type(self.normalization).__name__,
            "mask": _mask_config(self.mask),
            "preconditioner": None if self.preconditioner is None else _part_config(self.preconditioner),
        }
        return out | ({"allow_empty_mask": True} if self.allow_empty_mask else {})

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **parts: Any) -> Variant:
        """The variant that :meth:`config` describes: ``Variant.from_config(v.config()) == v`` for a variant whose
        rule, normalization and preconditioner are classes defined when it is called (the package's or a user's,
        found by class name) and whose mask is ``None`` or a module-level predicate. ``parts`` replace entries (a
        pytree mask, which a config only describes: ``mask=...``)."""
        c = dict(config) | parts
        missing = [k for k in ("name", "rho", "rule", "normalization") if k not in c]
        if missing:
            raise ValueError(f"`config` lacks {missing}; it must be a Variant.config() (got keys {sorted(c)})")

        def rebuilt(value, base):
            return value if isinstance(value, base) else _part_from_config(base, value)

        precond = c.get("preconditioner")
        return cls(
            name=c["name"],
            rho=c["rho"],
            rule=rebuilt(c["rule"], AbstractRule),
            normalization=c["normalization"]
            if isinstance(c["normalization"], AbstractNormalization)
            else _part_from_config(AbstractNormalization, {"type": c["normalization"]}),
            mask=_mask_from_config(c.get("mask", "None")),
            preconditioner=None if precond is None else rebuilt(precond, AbstractPreconditioner),
            allow_empty_mask=bool(c.get("allow_empty_mask", False)),
        )

    # -- the step ----------------------------------------------------------------------------------
    def init(self, params: PyTree) -> PyTree:
        """The rule's state (F-SAM's EMA ``mu_0 = 0``; ``()`` for state-free rules)."""
        return self.rule.init(params)

    def directions(
        self, problem: Problem, params: PyTree, state: PyTree, batch: PyTree, key: PRNGKeyArray
    ) -> Directions:
        """The rule's directions ``d_j`` (leading axis ``k``), descent weights, new state and batch loss."""
        return self.rule.directions(problem, params, state, batch, key)

    def unit_perturbations(
        self, problem: Problem, params: PyTree, state: PyTree, batch: PyTree, key: PRNGKeyArray
    ) -> tuple[PyTree, Array | None, PyTree, StepOutput]:
        """``e_j = T N(T M d_j)`` (so ``eps_j = rho e_j``; leading axis ``k``), descent weights or ``None``, the
        new state and a :class:`StepOutput`."""
        d, descent_weights, new_state, loss = self.rule.directions(problem, params, state, batch, key)
        mask_tree = resolve_mask(self.mask, params)
        d = jax.vmap(lambda dj: apply_mask(mask_tree, dj))(d)
        norms = jax.vmap(lambda dj: jnp.sqrt(tree_norm_sq(dj)))(d)
        T = None if self.preconditioner is None else self.preconditioner(params)
        if T is not None:
            d = scale_by(T, d)
        d = self.normalization(d, problem, params, mask_tree)
        if T is not None:
            d = scale_by(T, d)
        return d, descent_weights, new_state, StepOutput(loss, jnp.mean(norms))

    def perturbations(
        self, problem: Problem, params: PyTree, state: PyTree, batch: PyTree, key: PRNGKeyArray
    ) -> tuple[PyTree, Array | None, PyTree, StepOutput]:
        """The perturbations ``eps_j = rho T N(T M d_j)`` (leading axis ``k``), descent weights or ``None``, the
        new state and a :class:`StepOutput` (DESIGN §2)."""
        e, descent_weights, new_state, out = self.unit_perturbations(problem, params, state, batch, key)
        eps = jax.tree_util.tree_map(lambda a: self.rho * a, e)
        return eps, descent_weights, new_state, out

    def gradient(
        self, problem: Problem, params: PyTree, state: PyTree, batch: PyTree, key: PRNGKeyArray
    ) -> tuple[PyTree, PyTree, StepOutput]:
        """One update direction ``G = (1/k) sum_j grad f_{gamma_j}(x + eps_j)`` (DESIGN §2).

        Returns ``(G, new_state, StepOutput)``. ``x_{k+1} = x_k - eta * G`` is the plain step; ``G`` can
        also feed any optax chain (see :func:`sde_sam.with_optax`).
        """
        if not self.perturbs:
            loss, g = jax.value_and_grad(problem.batch_loss)(params, batch)
            zero = jnp.zeros((), dtype=loss.dtype)
            return g, self.rule.advance(problem, params, state, batch, key), StepOutput(loss, zero)

        own_form = self._problem_micro_batch_form(problem, params, batch)
        if own_form is not None:
            G, loss, norm = own_form()
            return G, state, StepOutput(loss, norm)

        eps, descent_weights, new_state, out = self.perturbations(problem, params, state, batch, key)
        k = jax.tree_util.tree_leaves(eps)[0].shape[0]
        B = jax.tree_util.tree_leaves(batch)[0].shape[0]
        micro = jax.tree_util.tree_map(lambda a: a.reshape(k, B // k, *a.shape[1:]), batch)

        weights = None if descent_weights is None else descent_weights.astype(out.loss.dtype)

        def perturbed_loss(p):
            # (1/k) sum_j f_{gamma_j}(p + eps_j): one gradient w.r.t. the shared p sums the k micro-batch
            # gradients inside the backward pass instead of materialising k gradients and averaging them.
            def loss_j(eps_j, batch_j, w_j):
                ell = problem.example_losses(jax.tree_util.tree_map(jnp.add, p, eps_j), batch_j)
                return jnp.mean(ell) if w_j is None else jnp.sum(w_j * ell)

            if k == 1:  # a single perturbation: no vmap over a size-1 axis
                take0 = lambda t: jax.tree_util.tree_map(lambda a: a[0], t)  # noqa: E731
                return loss_j(take0(eps), take0(micro), None if weights is None else weights[0])
            if weights is None:
                return jnp.mean(jax.vmap(lambda e, b: loss_j(e, b, None))(eps, micro))
            return jnp.mean(jax.vmap(loss_j)(eps, micro, weights))

        G = jax.grad(perturbed_loss)(params)
        return G, new_state, out

    def _problem_micro_batch_form(
        self, problem: Problem, params: PyTree, batch: PyTree
    ) -> Callable[[], tuple[PyTree, Array, Array]] | None:
        """The problem's own exact form of this step (:class:`sde_sam.problems.AbstractMicroBatchGradient`), as a
        call returning ``(G, loss, mean direction norm)``, when the step is the plain micro-batch rule with
        ``k > 1``, no mask, no preconditioner and a normalization whose scale is a function of ``||g_j||``
        (m-SAM, m-USAM), and the form says it is the cheaper one here; else ``None`` (the generic form)."""
        form, rule, normalization = problem.micro_batch_gradient, self.rule, self.normalization
        if form is None or type(rule) is not BatchGradient or not isinstance(rule, BatchGradient):
            return None
        m = rule.micro_batch_size
        norm_sq_scale = normalization.norm_sq_scale()
        if m is None or self.mask is not None or self.preconditioner is not None or norm_sq_scale is None:
            return None
        B = jax.tree_util.tree_leaves(batch)[0].shape[0]
        if rule.num_micro_batches(B) == 1 or not form.applies(problem.loss_fn, params, m):
            return None
        return lambda: form(params, batch, m, lambda sq: self.rho * norm_sq_scale(sq))

    def replace(self, **changes) -> Variant:
        """A copy with some fields changed (validated again); a name that is not a field of the variant but of its
        rule (``sigma``, ``micro_batch_size``, ...) changes the rule."""
        own = {f.name for f in dataclasses.fields(self) if f.init}
        rule_changes = {k: changes.pop(k) for k in list(changes) if k not in own}
        if rule_changes:
            if not dataclasses.is_dataclass(self.rule):
                raise TypeError(f"unknown field(s) {sorted(rule_changes)} for Variant")
            fields = {f.name for f in dataclasses.fields(self.rule)}
            unknown = sorted(set(rule_changes) - fields)
            if unknown:
                raise TypeError(f"unknown field(s) {unknown}: valid are {sorted(own | fields)}")
            changes["rule"] = dataclasses.replace(self.rule, **rule_changes)
        return dataclasses.replace(self, **changes)


# -- factories ----------------------------------------------------------------------------------------


def sgd() -> Variant:
    """SGD: ``G = g_gamma(x)``."""
    return Variant("SGD", rho=0.0, rule=NoAscent())


def usam(rho: Real) -> Variant:
    """USAM (Andriushchenko & Flammarion 2022): ``G = g_gamma(x + rho g_gamma(x))``."""
    return Variant("USAM", rho=rho, normalization=Identity())


def sam(rho: Real) -> Variant:
    """SAM (Foret et al. 2021): ``G = g_gamma(x + rho g_gamma/||g_gamma||)``."""
    return Variant("SAM", rho=rho)


def n_usam(rho: Real) -> Variant:
    """n-USAM: full-data ascent direction, ``G = g_gamma(x + rho g(x))``."""
    return Variant("n-USAM", rho=rho, rule=FullGradient(), normalization=Identity())


def n_sam(rho: Real) -> Variant:
    """n-SAM: ``G = g_gamma(x + rho g(x)/||g(x)||)`` (Andriushchenko & Flammarion 2022)."""
    return Variant("n-SAM", rho=rho, rule=FullGradient())


def m_usam(rho: Real, micro_batch_size: int) -> Variant:
    """m-USAM: ``G = (1/k) sum_j g_{gamma_j}(x + rho g_{gamma_j}(x))``, micro-batches of size ``m``."""
    return Variant("m-USAM", rho=rho, rule=BatchGradient(micro_batch_size), normalization=Identity())


def m_sam(rho: Real, micro_batch_size: int) -> Variant:
    """m-SAM (Foret et al. 2021, m-sharpness): one normalized ascent per micro-batch, all at once (vmap)."""
    return Variant("m-SAM", rho=rho, rule=BatchGradient(micro_batch_size))


def f_sam(rho: Real, sigma: Real = 1.0, ema_decay: Real = 0.9) -> Variant:
    """F-SAM (Li et al. 2024): ``d = g_gamma - sigma mu_{k-1}``, ``mu_k = lambda mu_{k-1} + (1-lambda) g_gamma``,
    ``mu_0 = 0`` (so the first step uses ``g_gamma``); ``ema_decay`` is the paper's ``lambda``."""
    return Variant("F-SAM", rho=rho, rule=Friendly(sigma, ema_decay))


def f_usam(rho: Real, sigma: Real = 1.0, ema_decay: Real = 0.9) -> Variant:
    """F-USAM: F-SAM without the normalization."""
    return Variant("F-USAM", rho=rho, rule=Friendly(sigma, ema_decay), normalization=Identity())


def sam_on(
    rho: Real,
    mask: Callable[[str], bool] | PyTree | None = None,
    normalize: bool = True,
    allow_empty_mask: bool = False,
) -> Variant:
    """SAM-ON (Mueller et al. 2023): perturb only the masked coordinates; norm over them alone.

    ``mask``: a predicate on parameter paths (``"layer_norm_0/scale"``) or a pytree of booleans; default
    :func:`is_normalization_param` (normalization-layer scale and bias). A mask that selects no parameter of the
    problem is refused when the variant is run, unless ``allow_empty_mask``.
    """
    return Variant(
        "SAM-ON" if normalize else "USAM-ON",
        rho=rho,
        normalization=UnitNorm() if normalize else Identity(),
        mask=is_normalization_param if mask is None else mask,
        allow_empty_mask=allow_empty_mask,
    )


def rw_sam(
    rho: Real,
    inverse_temperature: Real = 1.0,
    fd_delta: Real = 1e-3,
    score: Literal["finite_difference", "exact"] = "finite_difference",
    weights_in_descent: bool = False,
    num_probes: int = 1,
    relative_scores: bool = False,
) -> Variant:
    """RW-SAM (Luo et al. 2025; docs/rw-sam.md): ascent along ``sum_i p_i g_i``, ``p = softmax(lambda s)``
    (``num_probes``, ``relative_scores``: see :class:`~sde_sam.variants.Reweighted`)."""
    rule = Reweighted(inverse_temperature, fd_delta, score, weights_in_descent, num_probes, relative_scores)
    return Variant("RW-SAM", rho=rho, rule=rule)


def rw_usam(
    rho: Real,
    inverse_temperature: Real = 1.0,
    fd_delta: Real = 1e-3,
    score: Literal["finite_difference", "exact"] = "finite_difference",
    weights_in_descent: bool = False,
    num_probes: int = 1,
    relative_scores: bool = False,
) -> Variant:
    """RW-USAM: RW-SAM without the normalization."""
    rule = Reweighted(inverse_temperature, fd_delta, score, weights_in_descent, num_probes, relative_scores)
    return Variant("RW-USAM", rho=rho, rule=rule, normalization=Identity())


def asam(rho: Real, c: Real = 0.01, micro_batch_size: int | None = None) -> Variant:
    """ASAM (Kwon et al. 2021): ``eps = rho T^2 g_gamma / ||T g_gamma||`` with ``T = |x| + c`` elementwise."""
    return Variant("ASAM", rho=rho, rule=BatchGradient(micro_batch_size), preconditioner=ParameterScale(c))


def asam_on(rho: Real, mask: Callable[[str], bool] | PyTree | None = None, c: Real = 0.01) -> Variant:
    """ASAM-ON (Mueller et al. 2023, their default): ASAM on the masked (normalization) parameters only,
    ``eps = rho M T^2 g_gamma / ||M T g_gamma||``."""
    return Variant(
        "ASAM-ON", rho=rho, mask=is_normalization_param if mask is None else mask, preconditioner=ParameterScale(c)
    )


def dnsam(rho: Real) -> Variant:
    """DNSAM (Compagnoni et al. 2023): the batch direction normalized by the full-gradient norm,
    ``G = g_gamma(x + rho g_gamma(x)/||g(x)||)``."""
    return Variant("DNSAM", rho=rho, normalization=FullGradientNorm())


def random_sam(rho: Real, normalize: bool = True) -> Variant:
    """Random-direction SAM: ``G = g_gamma(x + rho z/||z||)``, ``z ~ N(0, I)`` afresh each step (``normalize=False``:
    ``x + rho z``); a control for whether the gradient direction of the ascent matters."""
    return Variant(
        "random-SAM" if normalize else "random-USAM",
        rho=rho,
        rule=RandomDirection(),
        normalization=UnitNorm() if normalize else Identity(),
    )


_FACTORIES: dict[str, Callable[..., Variant]] = {
    "sgd": sgd,
    "usam": usam,
    "sam": sam,
    "n-usam": n_usam,
    "n-sam": n_sam,
    "m-usam": m_usam,
    "m-sam": m_sam,
    "f-sam": f_sam,
    "f-usam": f_usam,
    "sam-on": sam_on,
    "rw-sam": rw_sam,
    "rw-usam": rw_usam,
    "asam": asam,
    "asam-on": asam_on,
    "dnsam": dnsam,
    "random-sam": random_sam,
}

NAMES = tuple(_FACTORIES)


def get(name: str, **kwargs) -> Variant:
    """A variant by name (case-insensitive, ``_`` or ``-``): ``get("m-sam", rho=0.05, micro_batch_size=4)``.

    ``m`` is accepted as an alias of ``micro_batch_size`` (the CLI's name), not both at once."""
    key = str(name).lower().replace("_", "-")
    if key not in _FACTORIES:
        raise ValueError(f"unknown variant {name!r}; valid names: {', '.join(NAMES)}")
    if "m" in kwargs:
        if "micro_batch_size" in kwargs:
            raise TypeError("pass `micro_batch_size` or its alias `m`, not both")
        kwargs["micro_batch_size"] = kwargs.pop("m")
    try:
        return _FACTORIES[key](**kwargs)
    except TypeError as err:
        params = list(inspect.signature(_FACTORIES[key]).parameters)
        raise TypeError(f"variant {key!r} takes {', '.join(params) or 'no arguments'}; {err}") from None
