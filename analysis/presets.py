"""Configurations of the ``sde-sam reproduce`` stages: ``quick`` (minutes on 2 CPU cores) and ``full``."""

from __future__ import annotations

import copy
from typing import Any

QUICK = {
    "drift": {
        "seed": 0,
        "n": 6,
        "batch_size": 2,
        "m": 1,
        "rhos": [0.04, 0.01],
        "coef_rhos": [5e-4],
        "coef_ms": [1, 2],
        "sigmas": [0.0, 1.0],
    },
    "variance_term": {
        "seed": 0,
        "l2": 0.0,
        "init_scale": 0.3,
        "batch_size": 16,
        "rho": 0.01,
        "num_batches": 1024,
        "ms": [1, 2, 4, 8, 16],
    },
    "grad_norm": {"seed": 0, "batch_sizes": [1, 4, 16, 64], "num_batches": 128},
    "weak_order": {"config": {"exact_only": True}, "parts": ["linreg_exact", "diffusion_ablation"]},
    "eta_rho": {"etas": [0.1, 0.05, 0.025, 0.0125], "rhos": [0.2, 0.1, 0.05, 0.025], "t1": 1.0},
    # map: C5 over rho * lambda_sharp from 0.2 (inside the first-order theory, rho lambda <= 0.5) to 1.6 (outside)
    "escape": {
        "seed": 0,
        "n": 16,
        "sharp_curvature": 16.0,
        "noise_scale": 0.2,
        "batch_size": 8,
        "rho": 0.1,
        "eta": 0.05,
        "steps": 120,
        "every": 10,
        "num_runs": 128,
        "num_paths": 128,
        "drift_samples": 8,
        "map": {
            "etas": [0.025, 0.05],
            "rho_lambdas": [0.4, 0.8, 1.6],
            "num_runs": 128,
            "steps": 240,
            "theory_rho_lambda": 0.5,
            "model": ["expected", "leading"],
        },
    },
    "training": {
        "problem": "digits_mlp",
        "problem_kwargs": {"hidden": 8},
        "batch_size": 32,
        "eta": 0.1,
        "rho": 0.05,
        "steps": 100,
        "every": 25,
        "seeds": [0, 1, 2, 3],
        "ms": [32, 4, 1],
        "timing_repeats": 0,
    },
    "train_sde": {
        "problem": ["digits_mlp", {"hidden": 8}],
        "variants": [["SAM", "sam", {"rho": 0.05}], ["m-SAM (m=4)", "m-sam", {"rho": 0.05, "micro_batch_size": 4}]],
        "batch_size": 32,
        "eta": 0.1,
        "steps": 60,
        "every": 20,
        "seeds": [0, 1, 2, 3],
        "paths": 4,
        "num_samples": 8,
        "noise_batches": 32,
        "top_k": 3,
        "observables": ["loss", "trace_sigma"],
    },
    "sgn": {
        "seed": 0,
        "problem": "digits_mlp",
        "problem_kwargs": {"hidden": 8},
        "batch_size": 32,
        "eta": 0.1,
        "steps": 100,
        "every": 50,
        "k": 5,
        "probes": 8,
        "tail_batches": 128,
    },
    # the model, batch, steps and seeds of the training stage above: run after it in one process, the compiled
    # programs of the variants both train are reused (analysis.m_sharpness.shared_problem); RW-SAM: the RW-SAM
    # study's setting of highest test accuracy (analysis.generalization.RW_SETTING)
    "generalization": {
        "models": [["digits_mlp", {"hidden": 8}, {}]],
        "noise": [0.0, 0.2, 0.4],
        "batch_size": 32,
        "eta": 0.1,
        "rho": 0.05,
        "steps": 100,
        "every": 25,
        "seeds": [0, 1, 2, 3],
        "ms": [32, 16, 4, 1],
        "rw": {"score": "4 probes", "ess": 0.5, "reading": "ascent"},
    },
    "timing": {
        "hidden": 256,
        "batch_size": 128,
        "steps": 20,
        "simulator_steps": 4,
        "repeats": 5,
        "ms": [16],
        "serial_k": [2],
        "paths": 8,
        "cost": "xla_flops",
    },
    "symbolic": {"setting": "default"},
    "eta_map": {
        "seed": 0,
        "problem": ["digits_mlp", {"hidden": 8}],
        "batch_size": 32,
        "etas": [0.025, 0.1],
        "steps": 40,
        "every": 20,
        "num_runs": 32,
        "drift_samples": 4,
        # batches per step of the sampled empirical diffusion (default 256): the draws' covariance is unbiased for
        # Cov[G] at any number >= 2 (docs/sde.md), fewer cost less
        "diffusion_samples": 64,
        "observables": ["loss", "accuracy"],
        "variants": [["SAM", "sam", {"rho": 0.05}]],
        "rungs": [["expected", "empirical", 1]],
        "svag": [8],
        "max_refine": 1,
    },
    "fidelity": {
        "escape": {
            "seed": 0,
            "n": 16,
            "sharp_curvature": 16.0,
            "noise_scale": 0.2,
            "batch_size": 8,
            "eta": 0.05,
            "steps": 120,
            "every": 10,
            "num_runs": 128,
            "num_paths": 128,
            "drift_samples": 8,
            "variants": [
                ["SAM (m=B)", "sam", {"rho": 0.1}],
                ["m-SAM (m=1)", "m-sam", {"rho": 0.1, "micro_batch_size": 1}],
            ],
            "drifts": ["general", "expected"],
            "diffusions": ["leading", "empirical"],
            "orders": [1],
            "svag": [4],
            "max_refine": 1,
            "rungs": ["general/leading/o1", "expected/leading/o1", "expected/empirical/o1"],
        },
        "training": {
            "seed": 0,
            "problem": ["digits_mlp", {"hidden": 8}],
            "batch_size": 32,
            "eta": 0.1,
            "steps": 60,
            "every": 20,
            "num_runs": 8,
            "num_paths": 8,
            "drift_samples": 4,
            "key_observable": "trace_sigma",
            "observables": ["loss", "accuracy", "grad_norm_sq", "trace_sigma"],
            "variants": [["SAM", "sam", {"rho": 0.05}]],
            "drifts": ["general", "expected"],
            "diffusions": ["leading"],
            "orders": [1],
            "svag": [4],
            "max_refine": 0,
        },
    },
}

_FIDELITY_VARIANTS = [
    ["SGD", "sgd", {}],
    ["USAM", "usam", {"rho": "R"}],
    ["SAM", "sam", {"rho": "R"}],
    ["n-SAM", "n-sam", {"rho": "R"}],
    ["m-SAM (m=16)", "m-sam", {"rho": "R", "micro_batch_size": 16}],
    ["m-SAM (m=4)", "m-sam", {"rho": "R", "micro_batch_size": 4}],
    ["m-SAM (m=1)", "m-sam", {"rho": "R", "micro_batch_size": 1}],
    ["RW-SAM", "rw-sam", {"rho": "R"}],
    ["RW-SAM (descent)", "rw-sam", {"rho": "R", "weights_in_descent": True}],
    ["F-SAM", "f-sam", {"rho": "R"}],
    ["SAM-ON", "sam-on", {"rho": "R"}],
]
_TRAIN_OBSERVABLES = [
    "loss",
    "accuracy",
    "test_loss",
    "test_accuracy",
    "grad_norm_sq",
    "trace_sigma",
    "lambda_max",
    "trace_hessian",
    "batch_grad_norm",
    "distance",
]


def _fidelity_variants(rho: float, skip=()) -> list:
    return [
        [label, name, {k: (rho if v == "R" else v) for k, v in kw.items()}]
        for label, name, kw in _FIDELITY_VARIANTS
        if label not in skip
    ]


FULL = {
    "drift": {
        "seed": 0,
        "n": 8,
        "batch_size": 4,
        "m": 2,
        "rhos": [0.08, 0.04, 0.02, 0.01, 0.005],
        "coef_rhos": [2e-3, 1e-3, 5e-4],
        "coef_ms": [1, 2, 4],
        "sigmas": [0.0, 0.25, 0.5, 0.75, 1.0],
    },
    "variance_term": {
        "seed": 0,
        "l2": 0.0,
        "init_scale": 0.3,
        "batch_size": 32,
        "rho": 0.01,
        "num_batches": 2048,
        "ms": [1, 2, 4, 8, 16, 32],
    },
    "grad_norm": {"seed": 0, "batch_sizes": [1, 2, 4, 8, 16, 32, 64, 128, 256], "num_batches": 1024},
    "weak_order": {"config": {"exact_only": False}, "parts": None},
    "eta_rho": {"etas": [0.1, 0.05, 0.025, 0.0125, 0.00625], "rhos": [0.4, 0.2, 0.1, 0.05, 0.025], "t1": 1.0},
    "escape": {
        "seed": 0,
        "n": 16,
        "sharp_curvature": 16.0,
        "noise_scale": 0.2,
        "batch_size": 16,
        "rho": 0.1,
        "eta": 0.05,
        "steps": 400,
        "every": 10,
        "num_runs": 1024,
        "num_paths": 1024,
        "drift_samples": 64,
        "map": {
            "etas": [0.025, 0.05],
            "rho_lambdas": [0.2, 0.4, 0.8, 1.2, 1.6],
            "num_runs": 2048,
            "steps": 480,
            "theory_rho_lambda": 0.5,
            "model": ["expected", "leading"],
        },
    },
    "training": {
        "problem": "digits_mlp",
        "problem_kwargs": {"hidden": 64},
        "batch_size": 64,
        "eta": 0.1,
        "rho": 0.05,
        "steps": 3000,
        "every": 250,
        "seeds": list(range(8)),
        "ms": [64, 32, 16, 8, 4, 1],
        "timing_repeats": 0,
        "rw_ess": [0.5, 0.1],
    },
    "train_sde": {
        "problem": ["digits_mlp", {"hidden": 32}],
        "variants": [
            ["SGD", "sgd", {}],
            ["SAM", "sam", {"rho": 0.05}],
            ["m-SAM (m=16)", "m-sam", {"rho": 0.05, "micro_batch_size": 16}],
            ["m-SAM (m=4)", "m-sam", {"rho": 0.05, "micro_batch_size": 4}],
            ["m-SAM (m=1)", "m-sam", {"rho": 0.05, "micro_batch_size": 1}],
        ],
        "batch_size": 64,
        "eta": 0.1,
        "steps": 1000,
        "every": 100,
        "seeds": list(range(8)),
        "paths": 16,
        "num_samples": 32,
        "noise_batches": 512,
        "top_k": 5,
        "observables": ["loss", "trace_sigma"],
    },
    "sgn": {
        "seed": 0,
        "problem": "digits_mlp",
        "problem_kwargs": {"hidden": 64},
        "batch_size": 64,
        "eta": 0.1,
        "steps": 2000,
        "every": 250,
        "k": 10,
        "probes": 64,
        "tail_batches": 2048,
    },
    # the GroupNorm CNN is ~20x slower per step than the MLP on a CPU (m = 1 much more: one convolution per
    # example): its rows train shorter (8 seeds, as every row of the full preset) and say that a GPU settles them
    # (benchmarks/gpu_session.sh)
    "generalization": {
        "models": [
            ["digits_mlp", {"hidden": 64}, {}],
            ["digits_cnn", {"norm": "group"}, {"steps": 300, "every": 150, "gpu_settles": True}],
        ],
        "noise": [0.0, 0.2, 0.4],
        "batch_size": 64,
        "eta": 0.1,
        "rho": 0.05,
        "steps": 3000,
        "every": 1000,
        "seeds": list(range(8)),
        "ms": [64, 16, 4, 1],
        "rw": {"score": "4 probes", "ess": 0.5, "reading": "ascent"},
    },
    "timing": {
        "hidden": 256,
        "batch_size": 128,
        "steps": 50,
        "repeats": 7,
        "ms": [4, 16, 64],
        "serial_k": [2, 8],
        "paths": 64,
        "cost": "xla_flops",
    },
    "symbolic": {"setting": "default"},
    # digits and MNIST-1D (the second real data set)
    "eta_map": {
        "seed": 0,
        "problems": [["digits_mlp", {"hidden": 16}], ["mnist1d_mlp", {"hidden": 32}]],
        "batch_size": 64,
        "etas": [0.0125, 0.025, 0.05, 0.1],
        "steps": 100,
        "every": 25,
        "num_runs": 16,
        "drift_samples": 8,
        "observables": ["loss", "accuracy", "trace_sigma"],
        "variants": [
            ["SAM", "sam", {"rho": 0.05}],
            ["m-SAM (m=4)", "m-sam", {"rho": 0.05, "micro_batch_size": 4}],
            ["RW-SAM", "rw-sam", {"rho": 0.05}],
        ],
        "rungs": [
            ["general", "leading", 1],
            ["expected", "leading", 1],
            ["expected", "empirical", 1],
            ["expected", "empirical", 2],
        ],
        "svag": [2, 4, 8],
        "max_refine": 1,
    },
    # the escape problem is 1-D (SAM-ON's mask would be everything: SAM); digits: the rungs that matter there
    "fidelity": {
        # B = 8 of n = 16 (as the escape stage): a full batch would make every variant deterministic
        "escape": {
            "seed": 0,
            "n": 16,
            "sharp_curvature": 16.0,
            "noise_scale": 0.2,
            "batch_size": 8,
            "eta": 0.05,
            "steps": 120,
            "every": 10,
            "num_runs": 512,
            "num_paths": 512,
            "drift_samples": 8,
            "variants": _fidelity_variants(0.1, skip=("SAM-ON", "m-SAM (m=16)")),
            "drifts": ["general", "expected"],
            "diffusions": ["leading", "first_order", "empirical"],
            "orders": [1, 2],
            "svag": [2, 4, 8],
            "max_refine": 2,
        },
        "training": {
            "seed": 0,
            "problem": ["digits_mlp", {"hidden": 16}],
            "batch_size": 64,
            "eta": 0.1,
            "steps": 200,
            "every": 50,
            "num_runs": 16,
            "num_paths": 16,
            "drift_samples": 8,
            "key_observable": "lambda_max",
            "observables": _TRAIN_OBSERVABLES,
            "variants": _fidelity_variants(0.05),
            "drifts": ["general", "expected"],
            "diffusions": ["leading"],
            "orders": [1],
            "svag": [4],
            "max_refine": 1,
        },
    },
}

#: The eta map of digits training recorded in analysis/recordings (C10 over its regime, three variants, two rungs).
ETA_MAP_MEDIUM = {
    "seed": 0,
    "problem": ["digits_mlp", {"hidden": 8}],
    "batch_size": 32,
    "etas": [0.0125, 0.025, 0.05, 0.1],
    "steps": 40,
    "every": 20,
    "num_runs": 32,
    "drift_samples": 4,
    "observables": ["loss", "accuracy"],
    "variants": [
        ["SAM", "sam", {"rho": 0.05}],
        ["m-SAM (m=4)", "m-sam", {"rho": 0.05, "micro_batch_size": 4}],
        ["RW-SAM", "rw-sam", {"rho": 0.05}],
    ],
    "rungs": [["general", "leading", 1], ["expected", "empirical", 1]],
    "svag": [4, 8],
    "max_refine": 1,
}
#: SAM's eta map on MNIST-1D (the LayerNorm MLP, hidden width 32).
ETA_MAP_MNIST1D = dict(
    ETA_MAP_MEDIUM, problem=["mnist1d_mlp", {"hidden": 32}], variants=[["SAM", "sam", {"rho": 0.05}]]
)

#: C5 where the first-order theory applies (``python -m analysis.escape_map --preset regime``): the full preset's
#: escape problem with batch noise, B = 8 of n = 16 as in the quick preset (at B = n the full map sees no escape
#: inside the regime), rho * lambda_sharp 0.2, 0.35 and 0.5 inside and 0.8 outside, a horizon 8x the quick map's,
#: and the full map's model (expected drift, leading diffusion) from fewer paths than runs: its exact drift at m = 4
#: enumerates 1820 micro-batches per path step. Sizes fixed by the budget (under an hour on 2 CPU cores) before any
#: point was computed.
ESCAPE_REGIME: dict[str, Any] = dict(
    FULL["escape"],
    batch_size=8,
    map={
        "etas": [0.025, 0.05],
        "rho_lambdas": [0.2, 0.35, 0.5, 0.8],
        "num_runs": 2048,
        "num_paths": 512,
        "steps": 1920,
        "theory_rho_lambda": 0.5,
        "model": ["expected", "leading"],
    },
)

PRESETS = {"quick": QUICK, "full": FULL}


def preset(name: str) -> dict:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
