"""A recorded training ensemble (DESIGN §6.3): the observables of every seed at the recorded steps, with the config
that made them; saved and loaded atomically."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from jaxtyping import PyTree

from .._ensemble import Ensemble
from .._io import load_result, save_result, wrong_kind
from ._config import TrainConfig, sde_time


@dataclasses.dataclass
class TrainRecord(Ensemble):
    """A recorded training ensemble: ``values[name]`` is ``(R, T)`` over seeds and recorded ``steps``.

    ``meta`` holds the config, seeds, provenance (versions, device), wall time and divergence counts.
    """

    config: TrainConfig
    steps: np.ndarray
    values: dict[str, np.ndarray]
    diverged: np.ndarray
    meta: dict
    init_params: PyTree | None = None
    final_params: PyTree | None = None
    saved_params: PyTree | None = None

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.config.seeds

    @property
    def times(self) -> np.ndarray:
        """SDE time ``t = k * eta`` of the recorded steps (constant schedule; see :func:`sde_time`)."""
        return sde_time(self.config, self.steps)

    def save(self, path) -> Any:
        """Write ``<path>.json`` (config, seeds, provenance, wall time) and ``<path>.npz`` (``steps``,
        ``values/<name>`` as ``value__<name>``, ``diverged``), atomically."""
        arrays = {"steps": self.steps, "diverged": self.diverged}
        arrays |= {f"value__{k}": v for k, v in self.values.items()}
        return save_result(path, arrays, self.meta)

    @classmethod
    def load(cls, path) -> TrainRecord:
        arrays, meta = load_result(path)
        if meta.get("kind") != "train_record":
            raise wrong_kind(path, meta.get("kind"), "a TrainRecord")
        config = TrainConfig.from_dict(meta["config"])
        values = {k[len("value__") :]: v for k, v in arrays.items() if k.startswith("value__")}
        return cls(config, arrays["steps"], values, arrays["diverged"].astype(bool), meta)
