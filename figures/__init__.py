"""One module per figure of DESIGN §8: each has ``ID``, ``TITLE``, ``STAGES`` and ``render(results, arrays, out)``."""

from . import (
    f1_escape,
    f2_trace_sigma_training,
    f3_weak_error,
    f4_variance_regularizer,
    f5_sgn_structure,
    f6_final_trace_sigma,
    f7_eta_rho_map,
    f8_cost,
    f9_fidelity,
    f10_generalization,
)

FIGURES = {
    m.ID: m
    for m in (
        f1_escape,
        f2_trace_sigma_training,
        f3_weak_error,
        f4_variance_regularizer,
        f5_sgn_structure,
        f6_final_trace_sigma,
        f7_eta_rho_map,
        f8_cost,
        f9_fidelity,
        f10_generalization,
    )
}
