"""What every recorded ensemble shares: ``values[name]`` of shape ``(R, T)`` over ``R`` runs (paths, seeds) and
``T`` recorded points, ``diverged`` of shape ``(R,)``, and statistics over the members that never diverged.

:class:`~sde_sam.Runs`, :class:`~sde_sam.Paths` and :class:`~sde_sam.train.TrainRecord` derive from it, so a
diverged member is counted (``num_diverged``) and never averaged in, the same way for all three.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def mean_stderr(values: ArrayLike, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The mean of ``values`` along ``axis`` and its Monte Carlo standard error ``std / sqrt(n)`` (two-pass,
    ``ddof=1``), in float64. The standard error is NaN where fewer than two values are given: one value has none
    (never 0, which would read as an exact number)."""
    v = np.asarray(values, np.float64)
    n = v.shape[axis]
    mean = np.asarray(v.mean(axis=axis) if n else np.full(np.delete(v.shape, axis), np.nan))
    if n < 2:
        return mean, np.full(np.shape(mean), np.nan)
    return mean, np.asarray(v.std(axis=axis, ddof=1) / np.sqrt(n))


class Ensemble:
    """Statistics over the members of a recorded ensemble that never diverged; a subclass has ``values`` (name ->
    ``(R, T)`` array) and ``diverged`` (``(R,)`` bool)."""

    values: dict[str, np.ndarray]
    diverged: np.ndarray

    @property
    def num_runs(self) -> int:
        return int(self.diverged.shape[0])

    @property
    def num_diverged(self) -> int:
        return int(np.sum(self.diverged))

    def kept(self, name: str) -> np.ndarray:
        """The records of ``name`` of the members that never diverged, ``(R_kept, T)``."""
        if name not in self.values:
            raise KeyError(f"observable {name!r} was not recorded; recorded: {sorted(self.values)}")
        kept = self.values[name][~np.asarray(self.diverged, bool)]
        if kept.shape[0] == 0:
            raise ValueError(f"all {self.num_runs} runs diverged: no statistic of {name!r} can be formed")
        return kept

    def mean(self, name: str) -> np.ndarray:
        """Mean over non-diverged members, shape ``(T,)``."""
        return self.kept(name).mean(axis=0)

    def stderr(self, name: str) -> np.ndarray:
        """Monte Carlo standard error of :meth:`mean`, ``std / sqrt(R_kept)`` (two-pass, ``ddof=1``).

        Raises ``ValueError`` when fewer than 2 members are kept: one run has no standard error."""
        kept = self.kept(name)
        if kept.shape[0] < 2:
            raise ValueError(
                f"a standard error needs at least 2 non-diverged runs; {kept.shape[0]} of {self.num_runs} kept "
                f"(pass `num_runs` >= 2)"
            )
        return kept.std(axis=0, ddof=1) / np.sqrt(kept.shape[0])
