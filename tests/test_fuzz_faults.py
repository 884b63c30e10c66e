"""Random inputs of each class of fault the reliability sweep found (hypothesis; fixed derandomized examples):
losses that turn non-finite, accuracy functions, learning-rate schedules, test data and the fields of saved
results. Each is either run to finite, correct numbers or refused with an error that names the argument; never a
silent NaN, a silent wrong value or a traceback from deep inside."""

from __future__ import annotations

import json

import hypothesis.strategies as st
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import sde_sam as ss
from sde_sam._io import CorruptResult, load_result, result_paths, save_result

FUZZ = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# the threshold past which the loss is bad rides in the data, so every example runs the same compiled program
def _nan_past(p, ex):
    return jnp.where(p[0] > ex[2], jnp.nan, jnp.sum((p - ex[:2]) ** 2))


def _inf_past(p, ex):
    return jnp.where(p[0] > ex[2], jnp.inf, jnp.sum((p - ex[:2]) ** 2))


def _neg_inf_past(p, ex):
    return jnp.where(p[0] > ex[2], -jnp.inf, jnp.sum((p - ex[:2]) ** 2))


@FUZZ
@given(
    bad=st.sampled_from([_nan_past, _inf_past, _neg_inf_past]), threshold=st.floats(-1.9, 3.0), simulate=st.booleans()
)
def test_a_loss_that_turns_non_finite_is_divergence_never_a_mean(bad, threshold, simulate):
    data = jnp.asarray([[1.0, 0.0], [2.0, 0.5], [1.5, -0.5], [3.0, 1.0]])
    data = jnp.concatenate([data, jnp.full((4, 1), threshold)], axis=1)
    problem = ss.Problem(bad, data, jnp.asarray([-2.0, 0.0]), name="bad-past-threshold")
    record = ss.observables("loss", every=5)
    if simulate:
        model = ss.sde_model(problem, ss.variants.sgd(), ss.WithReplacement(2), eta=0.1)
        runs = ss.simulate(model, t1=4.0, num_paths=4, key=jr.key(1), record=record, progress=False)
    else:
        runs = ss.run_discrete(
            problem,
            ss.variants.sgd(),
            ss.WithReplacement(2),
            eta=0.1,
            steps=40,
            num_runs=4,
            key=jr.key(0),
            record=record,
            progress=False,
        )
    kept = runs.values["loss"][~runs.diverged]
    assert np.all(np.isfinite(kept)), "a run with a non-finite loss was kept"
    assert np.all(runs.diverged_step[runs.diverged] > 0)  # the loss is finite at the start (checked there)
    if runs.num_diverged < 4:
        assert np.all(np.isfinite(runs.mean("loss")))
    else:
        with pytest.raises(ValueError, match="diverged"):
            runs.mean("loss")


def _affine_accuracy(p, ex):
    return ex["a"] * jnp.sum(p) + ex["b"]


@FUZZ
@given(a=st.floats(-3.0, 3.0), b=st.floats(-0.5, 1.5))
def test_an_accuracy_function_is_a_score_in_zero_one_or_refused(a, b):
    """An affine "accuracy" ``a sum(p) + b``: refused at construction when outside [0, 1] at the start, and when it
    leaves [0, 1] along the run; otherwise recorded as it is."""
    n = 6
    data = {"x": jnp.arange(2.0 * n).reshape(n, 2) / n, "a": jnp.full(n, a), "b": jnp.full(n, b)}
    try:
        problem = ss.Problem(
            lambda p, ex: jnp.sum((p - ex["x"]) ** 2), data, jnp.zeros(2), accuracy_fn=_affine_accuracy
        )
    except ValueError as err:
        assert "`accuracy_fn`" in str(err) and not 0.0 <= b <= 1.0  # init_params = 0: the score is b
        return
    try:
        runs = ss.run_discrete(
            problem,
            ss.variants.sgd(),
            ss.WithReplacement(2),
            eta=0.1,
            steps=20,
            num_runs=2,
            key=jr.key(0),
            record=ss.observables("accuracy", every=5),
            progress=False,
        )
    except ValueError as err:
        assert "'accuracy'" in str(err) and "`accuracy_fn`" in str(err)
        return
    acc = runs.values["accuracy"]
    assert np.all((acc >= 0.0) & (acc <= 1.0))


@FUZZ
@given(c0=st.floats(-1.0, 2.0), c1=st.floats(-0.2, 0.2), steps=st.integers(1, 12))
def test_a_schedule_is_run_when_it_is_a_multiplier_and_refused_otherwise(c0, c1, steps):
    problem = ss.problems.linear_regression(n=16, d=2)
    multipliers = [c0 + c1 * k for k in range(steps)]
    try:
        runs = ss.run_discrete(
            problem,
            ss.variants.sgd(),
            ss.WithReplacement(4),
            eta=0.05,
            steps=steps,
            num_runs=2,
            key=jr.key(0),
            schedule=lambda k: c0 + c1 * k.astype(jnp.float32),
            progress=False,
        )
    except ValueError as err:
        assert "`schedule`" in str(err)
        assert min(multipliers) < 0, f"refused a valid schedule: {err}"
        return
    assert min(multipliers) >= -1e-6  # float32 rounding at a zero crossing
    assert np.all(np.isfinite(runs.values["loss"]))


@FUZZ
@given(change=st.sampled_from(["drop y", "extra z", "x width", "x rank", "y shape", "fewer", "y float", "none"]))
def test_test_data_is_checked_at_construction_or_works(change):
    x, y = jnp.arange(12.0).reshape(6, 2), jnp.asarray([0, 1, 0, 1, 1, 0])
    test = {"x": jnp.ones((4, 2)), "y": jnp.zeros(4, jnp.int32)}
    test = {
        "drop y": {"x": test["x"]},
        "extra z": test | {"z": jnp.ones(4)},
        "x width": test | {"x": jnp.ones((4, 3))},
        "x rank": test | {"x": jnp.ones((4, 2, 1))},
        "y shape": test | {"y": jnp.zeros((4, 2), jnp.int32)},
        "fewer": {"x": jnp.ones((1, 2)), "y": jnp.zeros(1, jnp.int32)},
        "y float": test | {"y": jnp.zeros(4)},
        "none": test,
    }[change]
    try:
        problem = ss.Problem(
            lambda p, ex: jnp.sum((p - ex["x"]) ** 2) + 0.0 * ex["y"].astype(jnp.float32),
            {"x": x, "y": y},
            jnp.zeros(2),
            test_data=test,
        )
    except (ValueError, TypeError) as err:
        assert "`test_data`" in str(err), err
        assert change not in ("none", "fewer", "y float")
        return
    assert np.isfinite(float(problem.test_loss(problem.init_params)))


@FUZZ
@given(
    field=st.sampled_from(["arrays", "arrays_sha256", "kind", "config", "seed"]),
    value=st.one_of(
        st.none(),
        st.integers(-2, 2),
        st.text(max_size=3),
        st.lists(st.integers(0, 2), max_size=2),
        st.dictionaries(st.text(max_size=2), st.integers(0, 1), max_size=2),
        st.just("DELETE"),
    ),
)
def test_a_saved_result_with_a_changed_field_loads_as_it_was_or_is_corrupt(tmp_path_factory, field, value):
    path = tmp_path_factory.mktemp("r") / "r"
    arrays = {"a": np.arange(3.0), "b": np.eye(2)}
    save_result(path, arrays, {"kind": "runs", "config": {"eta": 0.1}, "seed": 0})
    json_path = result_paths(path)[0]
    meta = json.loads(json_path.read_text())
    if value == "DELETE":
        meta.pop(field, None)
    else:
        meta[field] = value
    json_path.write_text(json.dumps(meta))
    try:
        got, got_meta = load_result(path)
    except CorruptResult:
        return
    # loaded: the arrays are exactly the saved ones (a changed descriptive field is the caller's to read)
    assert got.keys() == arrays.keys() and all(np.array_equal(got[k], arrays[k]) for k in arrays)
    assert field not in ("arrays", "arrays_sha256") or got_meta.get(field) == json.loads(json.dumps(meta)).get(field)
