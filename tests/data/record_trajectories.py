"""Record the discrete trajectories of every built-in variant on a fixed problem and seed.

``python tests/data/record_trajectories.py OUT.npz`` writes one array of final parameters (float32 runs of 12 steps,
3 runs, shuffled epochs of size 4) and the recorded losses per variant, with what they were made with (JAX version,
architecture, host CPU: :func:`platform_of`). ``tests/test_rules_unchanged.py`` compares the current code against
the files recorded with the code before the perturbation-rule redesign.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys

import jax
import jax.random as jr
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from helpers import user_problem

import sde_sam as ss

V = ss.variants


def variants() -> dict:
    on = lambda p: p.endswith("offset")  # noqa: E731
    return {
        "sgd": V.sgd(),
        "usam": V.usam(0.2),
        "sam": V.sam(0.2),
        "n-usam": V.n_usam(0.2),
        "n-sam": V.n_sam(0.2),
        "m-usam": V.m_usam(0.2, 2),
        "m-sam": V.m_sam(0.2, 2),
        "f-sam": V.f_sam(0.2, sigma=0.5, ema_decay=0.8),
        "f-usam": V.f_usam(0.2),
        "f-sam-rho0": V.f_sam(0.0),
        "sam-on": V.sam_on(0.2, mask=on),
        "usam-on": V.sam_on(0.2, mask=on, normalize=False),
        "rw-sam": V.rw_sam(0.2, inverse_temperature=2.0),
        "rw-sam-exact": V.rw_sam(0.2, 2.0, score="exact"),
        "rw-sam-descent": V.rw_sam(0.2, 2.0, score="exact", weights_in_descent=True),
        "rw-usam-descent": V.rw_usam(0.2, 2.0, weights_in_descent=True),
        "rw-sam-descent-rho0": V.rw_sam(0.0, 2.0, weights_in_descent=True),
    }


def cpu_flags() -> str:
    """A short hash of the host CPU's instruction-set flags (``/proc/cpuinfo``), or ``platform.processor()`` where
    there is none. XLA:CPU compiles for the host's vector units, so a reduction may round differently on another
    CPU of the same architecture (1-2 ulp in these trajectories between two x86_64 hosts)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = " ".join(sorted(set(line.split(":", 1)[1].split())))
                    return hashlib.sha256(flags.encode()).hexdigest()[:16]
    except OSError:
        pass
    return platform.processor() or "unknown"


def platform_of() -> list[str]:
    """What a recording is bit-identical on: JAX version, architecture and host CPU flags."""
    return [jax.__version__, platform.machine(), cpu_flags()]


def record() -> dict:
    problem = user_problem()
    out = {}
    for name, variant in variants().items():
        runs = ss.run_discrete(
            problem,
            variant,
            ss.WithoutReplacement(4),
            eta=0.1,
            steps=12,
            num_runs=3,
            key=jr.key(7),
            record=ss.observables("loss", every=4),
            save_params=False,
        )
        flat = jax.vmap(lambda p: problem.ravel(p)[0])(runs.final_params)
        out[f"{name}/final"] = np.asarray(flat)
        out[f"{name}/loss"] = np.asarray(runs.values["loss"])
    return out


if __name__ == "__main__":
    arrays = record()
    arrays["versions"] = np.array(platform_of())
    np.savez(sys.argv[1], **arrays)
