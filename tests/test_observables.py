"""One observable registry: every name works in run_discrete, simulate and the training recorder, with values held
against closed forms (a quadratic with a known Hessian) and bound to the run's variant and sampler."""

from __future__ import annotations

import dataclasses

import jax.random as jr
import numpy as np
import pytest

import sde_sam as ss
from sde_sam import train
from sde_sam._estimators._observables import REGISTRY, AbstractObservable, BatchGradNorm, LambdaMax

# f_i(x) = (1/2) sum_j h_j (x_j - z_ij)^2: the Hessian is diag(4, 1, 0.25) at every x
QUAD = ss.problems.quadratic(spectrum=(4.0, 1.0, 0.25), n=16)


def test_every_name_of_the_training_recorder_is_in_the_registry_and_states_its_cost():
    assert set(train.OBSERVABLES) <= set(REGISTRY)
    for name, obs in REGISTRY.items():
        assert isinstance(obs, AbstractObservable), name
        assert type(obs).cost, name


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_every_name_records_in_a_discrete_run_and_on_sde_paths():
    names = [n for n in REGISTRY if n not in ("accuracy", "test_loss", "test_accuracy")]  # QUAD has no labels
    record = ss.observables(*names, every=5)
    variant, sampler = ss.variants.m_sam(0.05, 2), ss.WithReplacement(4)
    runs = ss.run_discrete(
        QUAD, variant, sampler, eta=0.05, steps=10, num_runs=2, key=jr.key(0), record=record, progress=False
    )
    paths = ss.simulate(
        ss.sde_model(QUAD, variant, sampler, eta=0.05),
        t1=0.5,
        num_paths=2,
        key=jr.key(1),
        record=record,
        progress=False,
    )
    for out in (runs, paths):
        assert set(out.values) == set(names)
        for n in names:
            assert np.all(np.isfinite(out.values[n])), n
        np.testing.assert_allclose(out.values["lambda_max"], 4.0, rtol=1e-4)  # the largest curvature
        np.testing.assert_allclose(out.values["trace_hessian"], 5.25, rtol=1e-4)  # Rademacher probes: exact on diag
        np.testing.assert_allclose(out.values["distance"][:, 0], 0.0)
        np.testing.assert_allclose(out.values["effective_sample_size"], 4.0, rtol=1e-6)  # equal weights: B


def test_batch_grad_norm_takes_m_from_the_variant():
    """Bound in a run, ``batch_grad_norm`` uses the variant's micro-batch size: m-SAM m = 1 against SAM (m = B = 4)
    at the same point differ as E||g_1|| > E||g_4||; given ``m`` by hand it keeps it."""
    sampler, params = ss.WithReplacement(4), QUAD.init_params
    one = REGISTRY["batch_grad_norm"].bind(QUAD, ss.variants.m_sam(0.05, 1), sampler)
    four = REGISTRY["batch_grad_norm"].bind(QUAD, ss.variants.sam(0.05), sampler)
    assert (one.m, four.m) == (1, 4)  # pyright: ignore[reportAttributeAccessIssue]
    assert float(one(QUAD, params)) > float(four(QUAD, params))
    assert BatchGradNorm(m=2).bind(QUAD, ss.variants.sam(0.05), sampler).m == 2
    with pytest.raises(ValueError, match="needs m"):
        BatchGradNorm()(QUAD, params)


def test_an_observable_with_other_estimator_sizes_goes_by_keyword():
    record = ss.observables("loss", lambda_max=LambdaMax(num_matvecs=3), every=5)
    runs = ss.run_discrete(
        QUAD,
        ss.variants.sgd(),
        ss.WithReplacement(4),
        eta=0.05,
        steps=5,
        num_runs=2,
        key=jr.key(0),
        record=record,
        progress=False,
    )
    np.testing.assert_allclose(runs.values["lambda_max"], 4.0, rtol=1e-4)  # 3 Lanczos steps suffice in d = 3
    assert dataclasses.replace(LambdaMax(), num_matvecs=3) == LambdaMax(num_matvecs=3)  # hashable values: one program


def test_the_docs_list_every_observable_with_its_cost():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "estimators.md").read_text()
    for name, obs in REGISTRY.items():
        assert f"| `{name}` | `{type(obs).__name__}` | {type(obs).cost} |" in text, name


@pytest.mark.slow
def test_lambda_max_warm_started_along_a_run_tracks_the_converged_value():
    """``LambdaMax(warm_matvecs=4)``: its first point is the cold estimate bit for bit; later points start Lanczos
    from the previous top Ritz vector, so 4 products per point stay within 5 % of a converged 80-product estimate
    along a SAM run, where a cold 4-product estimate is further off (the start vector is random)."""
    from sde_sam.quantities import LambdaMax

    problem = ss.problems.digits_mlp(hidden=8)
    variant, sampler = ss.variants.sam(0.05), ss.WithoutReplacement(32)

    def run(lm):
        return ss.run_discrete(
            problem,
            variant,
            sampler,
            eta=0.1,
            steps=60,
            num_runs=2,
            key=jr.key(0),
            record=ss.observables(lambda_max=lm, every=10),
            progress=False,
        ).values["lambda_max"]

    exact, cold = run(LambdaMax(num_matvecs=80)), run(LambdaMax(num_matvecs=20))
    warm, cold4 = run(LambdaMax(num_matvecs=20, warm_matvecs=4)), run(LambdaMax(num_matvecs=4))
    np.testing.assert_array_equal(warm[:, 0], cold[:, 0])
    err_warm, err_cold4 = np.abs(warm / exact - 1).max(), np.abs(cold4 / exact - 1).max()
    assert err_warm < 0.05 and err_warm < err_cold4, (err_warm, err_cold4)
    with pytest.raises(ValueError, match="`warm_matvecs` must be a positive integer"):
        LambdaMax(warm_matvecs=0)
