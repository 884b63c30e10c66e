"""Momentum for every variant in the discrete runner, and its first-order SDE (the rescaled learning rate)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import optax


@dataclasses.dataclass(frozen=True)
class Momentum:
    """Heavy-ball momentum on a variant's update ``G``: ``v <- beta v + G``, ``x <- x - eta v`` (Polyak), or
    with ``nesterov=True`` ``x <- x - eta (G + beta v)`` (the form of ``optax.sgd(nesterov=True)`` and PyTorch);
    the buffer ``v`` starts at 0 and is part of the runner's state.

    To first order in ``eta`` (``beta`` fixed), either form follows the SDE of the plain method with step
    ``eta / (1 - beta)`` in the time ``t = k eta / (1 - beta)`` (Li, Tai & E 2017, 2019: the rescaled-learning-rate
    model; the Nesterov correction is of higher order). Valid once ``k`` is well past the buffer's relaxation
    time ``1 / (1 - beta)`` steps (the buffer starts at 0) and while that time is short against the fastest mode
    of the rescaled SDE, ``(1 - beta) / (eta lambda_max)`` steps: ``eta lambda_max / (1 - beta)^2 << 1``. On a
    quadratic, heavy ball is underdamped in the directions with ``eta lambda > (1 - sqrt(beta))^2`` (for
    ``beta = 0.9``: ``eta lambda / (1 - beta)^2 > 0.26``) and contracts there by only ``sqrt(beta)`` per step.
    """

    beta: float
    nesterov: bool = False

    def __post_init__(self):
        b = self.beta
        if isinstance(b, bool) or not isinstance(b, (int, float, np.integer, np.floating)) or not math.isfinite(b):
            raise ValueError(f"`beta` must be a number in [0, 1), got {b!r}")
        if not 0.0 <= float(b) < 1.0:
            raise ValueError(f"`beta` must be in [0, 1), got {b!r}")
        if not isinstance(self.nesterov, bool):
            raise TypeError(f"`nesterov` must be a bool, got {type(self.nesterov).__name__}")
        object.__setattr__(self, "beta", float(b))

    @property
    def time_scale(self) -> float:
        """``1 / (1 - beta)``: one step advances the rescaled SDE by ``eta / (1 - beta)``."""
        return 1.0 / (1.0 - self.beta)

    def elapsed_steps(self, k):
        """Steps the rescaled SDE has advanced after ``k`` steps from a zero buffer:
        ``k - c (1 - beta^k) / (1 - beta)`` with ``c = beta`` (heavy ball) or ``beta^2`` (Nesterov).

        Under a constant update ``G`` the runner moves ``eta / (1 - beta)`` times this many ``G`` (the sum of the
        buffer ``v_j = G (1 - beta^j) / (1 - beta)``), so the run lags the rescaled SDE by
        ``c / (1 - beta)`` steps once ``beta^k`` is small: time ``eta / (1 - beta) * elapsed_steps(k)`` is the
        SDE time of step ``k`` with the warm-up of the buffer accounted for (DESIGN §3, momentum).
        """
        k = np.asarray(k, dtype=float)
        if np.any(k < 0):
            raise ValueError(f"`k` must be >= 0, got {k.min()}")
        c = self.beta**2 if self.nesterov else self.beta
        return k - c * (1.0 - self.beta**k) / (1.0 - self.beta)

    def transform(self) -> optax.GradientTransformation:
        """The buffer's update as optax's ``trace``: ``v <- G + beta v``, the step along ``v`` (heavy ball) or along
        ``G + beta v`` (Nesterov); its state (``TraceState``) is the runner's buffer."""
        return optax.trace(decay=self.beta, nesterov=self.nesterov)

    def config(self) -> dict:
        return {"beta": self.beta, "nesterov": self.nesterov}


def as_momentum(momentum: Momentum | float | None) -> Momentum | None:
    """``None`` (or 0) for none, a number for heavy-ball ``beta``, or a :class:`Momentum`."""
    if momentum is None or isinstance(momentum, Momentum):
        return momentum
    try:
        m = Momentum(momentum)
    except ValueError:
        raise ValueError(
            f"`momentum` must be a number in [0, 1) (heavy-ball beta) or a sde_sam.Momentum, got {momentum!r}"
        ) from None
    return None if m.beta == 0.0 else m
