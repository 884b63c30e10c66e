"""One check per claim of DESIGN §8: each module has ``ID``, ``CLAIM``, ``STAGES`` and ``evaluate(results)``."""

from . import (
    batch_grad_norm,
    cost,
    drift_order,
    escape,
    f_sam,
    fidelity,
    generalization,
    sam_on,
    trace_sigma_order,
    variance_coefficient,
    weak_order,
)

CHECKS = {
    m.ID: m
    for m in (
        drift_order,
        variance_coefficient,
        batch_grad_norm,
        weak_order,
        escape,
        trace_sigma_order,
        cost,
        f_sam,
        sam_on,
        fidelity,
        generalization,
    )
}
