"""Tests of the training recorder (sde_sam.train), the result io and the training-vs-SDE comparison."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import sde_sam as ss
from sde_sam import train
from sde_sam._problems._networks import is_batch_norm_problem

TINY = {"problem_kwargs": {"hidden": 4}, "batch_size": 32, "eta": 0.2, "steps": 6, "every": 3, "seeds": (0, 1)}


def _dense_trace_sigma(problem, params) -> float:
    """``tr Sigma`` from the dense (n, d) Jacobian of the example losses, in float64 numpy."""
    flat, unravel = ravel_pytree(params)
    J = np.asarray(jax.jacrev(lambda x: problem.example_losses(unravel(x), problem.data))(flat), np.float64)
    Jc = J - J.mean(axis=0)
    return float(np.mean(np.sum(Jc * Jc, axis=1)))


@pytest.fixture(scope="module")
def sam_record():
    cfg = train.TrainConfig(
        variant="sam", variant_kwargs={"rho": 0.05}, observables=("loss", "trace_sigma", "distance"), **TINY
    )
    problem = train.build_problem(cfg)
    return cfg, problem, train.record(cfg, problem=problem, save_params=True)


def test_record_is_deterministic_and_per_seed(sam_record):
    cfg, problem, rec = sam_record
    again = train.record(cfg, problem=problem)
    for name in cfg.observables:
        np.testing.assert_array_equal(again.values[name], rec.values[name])
    alone = train.record(cfg.replace(seeds=(1,)), problem=problem)  # seed 1 alone = seed 1 in the ensemble
    np.testing.assert_allclose(alone.values["loss"][0], rec.values["loss"][1], rtol=1e-5)
    assert not np.array_equal(rec.values["loss"][0], rec.values["loss"][1])  # seeds differ


def test_record_shards_seeds_over_a_mesh(sam_record):
    cfg, problem, rec = sam_record
    sharded = train.record(cfg, problem=problem, mesh=ss.parallel.make_mesh())
    assert sharded.meta["devices"] == jax.device_count() and rec.meta["devices"] == 1
    for name in cfg.observables:
        np.testing.assert_allclose(sharded.values[name], rec.values[name], rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_recorded_trace_sigma_matches_dense(sam_record):
    _cfg, problem, rec = sam_record
    for r in range(2):
        for t in (0, len(rec.steps) - 1):
            params = jax.tree_util.tree_map(lambda a: a[r, t], rec.saved_params)
            np.testing.assert_allclose(rec.values["trace_sigma"][r, t], _dense_trace_sigma(problem, params), rtol=2e-4)
            dist = np.sqrt(
                sum(
                    np.sum((np.asarray(a) - np.asarray(b)) ** 2)
                    for a, b in zip(
                        jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(problem.init_params), strict=False
                    )
                )
            )
            np.testing.assert_allclose(rec.values["distance"][r, t], dist, rtol=1e-4, atol=1e-6)


def test_record_saves_and_loads_with_provenance(sam_record, tmp_path):
    _, _, rec = sam_record
    path = rec.save(tmp_path / "rec")
    assert sorted(os.listdir(tmp_path)) == ["rec.json", "rec.npz"]  # no temporary files left behind
    back = train.TrainRecord.load(tmp_path / "rec")
    assert back.config == rec.config
    np.testing.assert_array_equal(back.values["trace_sigma"], rec.values["trace_sigma"])
    meta = json.loads(path.read_text())
    assert set(meta["provenance"]["versions"]) >= {"jax", "jaxlib", "numpy", "sde_sam"}
    assert meta["provenance"]["device"]["platform"] == jax.devices()[0].platform
    assert meta["seeds"] == [0, 1] and meta["wall_time_s"] > 0


def test_io_roundtrip_and_nonfinite(tmp_path):
    arrays = {"a": np.arange(6.0).reshape(2, 3), "b": np.array([1, 2], np.int32)}
    ss.save_result(tmp_path / "x.json", arrays, {"v": np.float32(1.5), "bad": float("nan"), "t": (1, 2)})
    back, meta = ss.load_result(tmp_path / "x")
    np.testing.assert_array_equal(back["a"], arrays["a"])
    assert back["b"].dtype == np.int32
    assert meta["v"] == 1.5 and meta["bad"] == "nan" and meta["t"] == [1, 2]
    with pytest.raises(TypeError, match="meta"):
        ss.save_result(tmp_path / "y", None, [1, 2])  # pyright: ignore[reportArgumentType]
    with pytest.raises(FileNotFoundError):
        ss.load_result(tmp_path / "missing")


def test_schedule_in_runner_matches_manual_steps():
    problem = ss.problems.quadratic(n=8)
    sched = train.Schedule("step", total_steps=3, milestones=(1, 2), gamma=0.5)
    runs = ss.run_discrete(
        problem,
        ss.variants.sgd(),
        ss.WithoutReplacement(8),
        eta=0.1,
        steps=3,
        key=jr.key(0),
        record=ss.observables("loss", every=1),
        schedule=sched,
        save_params=True,
    )
    x = np.asarray(problem.init_params, np.float64)
    for k, mult in enumerate((1.0, 0.5, 0.25)):  # full batch: x_{k+1} = x_k - eta s(k) g(x_k)
        np.testing.assert_allclose(np.asarray(runs.saved_params)[0, k], x, rtol=1e-5, atol=1e-6)
        x = x - 0.1 * mult * np.asarray(problem.full_grad(jnp.asarray(x, jnp.float32)), np.float64)
    np.testing.assert_allclose(np.asarray(runs.final_params)[0], x, rtol=1e-5, atol=1e-6)
    cos = train.Schedule("cosine", total_steps=10, final=0.1)
    k = np.arange(11)
    np.testing.assert_allclose(cos.values(k), 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * k / 10)), rtol=1e-6)
    step = train.Schedule("step", total_steps=10, milestones=(3, 7), gamma=0.2)  # gamma ** (milestones <= k)
    np.testing.assert_allclose(step.values(k), [1.0] * 3 + [0.2] * 4 + [0.04] * 4, rtol=1e-6)
    np.testing.assert_array_equal(train.Schedule().values(k), np.ones(11))


def test_one_sampler_field_and_recordings_with_the_two_old_booleans():
    """``TrainConfig.sampler`` names the sampler; a config saved with the two booleans it replaced still loads."""
    assert isinstance(train.build_sampler(train.TrainConfig()), ss.WithoutReplacement)
    assert isinstance(train.build_sampler(train.TrainConfig(sampler="uniform_subset")), ss.UniformSubset)
    old = {k: v for k, v in train.TrainConfig().to_dict().items() if k != "sampler"}
    for flags, kind in (
        ((False, False), ss.WithoutReplacement),
        ((True, False), ss.WithReplacement),
        ((False, True), ss.UniformSubset),
    ):
        cfg = train.TrainConfig.from_dict(old | dict(zip(("with_replacement", "uniform_subset"), flags, strict=True)))
        assert isinstance(train.build_sampler(cfg), kind)
    with pytest.raises(ValueError, match="exclude each other"):
        train.TrainConfig.from_dict(old | {"with_replacement": True, "uniform_subset": True})


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_group_norm_cnn_is_per_example_and_batch_norm_is_not():
    gn = train.digits_cnn(channels=(4, 8), norm="group", groups=2)
    batch = gn.take(jnp.arange(5))
    one = jax.tree_util.tree_map(lambda a: a[0], batch)
    np.testing.assert_allclose(gn.example_losses(gn.init_params, batch)[0], gn.loss_fn(gn.init_params, one), rtol=1e-5)
    bn = train.digits_cnn(channels=(4, 8), norm="batch")
    assert is_batch_norm_problem(bn)
    b5 = bn.example_losses(bn.init_params, bn.take(jnp.arange(5)))[0]
    b10 = bn.example_losses(bn.init_params, bn.take(jnp.arange(10)))[0]
    assert abs(float(b5) - float(b10)) > 1e-6  # an example's loss depends on its batch
    np.testing.assert_allclose(
        bn.full_loss(bn.init_params), jnp.mean(bn.example_losses(bn.init_params, bn.data)), rtol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"observables": ("loss", "nope")}, "unknown observable"),
        ({"steps": 10, "every": 3}, "multiple of `every`"),
        ({"seeds": ()}, "seeds"),
        ({"seeds": (1, 1)}, "distinct"),
        ({"problem": "mnist"}, "problem"),
        ({"schedule": "linear"}, "schedule"),
        ({"eta": -1.0}, "eta"),
        ({"hutchinson_probes": 1}, "hutchinson_probes"),
        ({"sampler": "shuffled"}, "sampler"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train.TrainConfig(**kwargs)


def test_bad_schedule_and_network():
    with pytest.raises(ValueError, match="milestones"):
        train.Schedule("step", total_steps=10, milestones=(5, 2))
    with pytest.raises(ValueError, match="milestones"):  # a repeated milestone would count once in optax
        train.Schedule("step", total_steps=10, milestones=(2, 2))
    with pytest.raises(ValueError, match="groups"):
        train.digits_cnn(channels=(6, 8), norm="group", groups=4)
    with pytest.raises(ValueError, match="norm"):
        train.digits_cnn(norm="instance")  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match="schedule"):
        ss.run_discrete(
            ss.problems.quadratic(n=4),
            ss.variants.sgd(),
            ss.WithoutReplacement(4),
            eta=0.1,
            steps=1,
            key=jr.key(0),
            record=ss.observables("loss"),
            schedule=3,
        )


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_training_vs_sde_end_to_end(tmp_path):
    from analysis import training_vs_sde as tvs

    cfg = {
        "problem": ("digits_mlp", {"hidden": 4}),
        "variants": (("SGD", "sgd", {}),),
        "batch_size": 32,
        "eta": 0.2,
        "steps": 6,
        "every": 3,
        "seeds": (0, 1),
        "paths": 2,
        "num_samples": 4,
        "noise_batches": 16,
        "top_k": 2,
        "observables": ("loss", "trace_sigma"),
    }
    res = tvs.run(cfg, tmp_path, log=lambda *_: None)
    v = res["variants"]["SGD"]
    problem = ss.problems.digits_mlp(hidden=4)
    f0 = float(problem.full_loss(problem.init_params))
    comp = v["comparison"]["loss"]
    np.testing.assert_allclose([comp["train_mean"][0], comp["sde_mean"][0]], [f0, f0], rtol=1e-5)  # same start
    assert comp["gap"][0] == pytest.approx(0.0, abs=1e-5) and np.all(np.isfinite(comp["relative_gap"]))
    c = ss.WithoutReplacement(32).factor(32, problem.num_examples)
    np.testing.assert_allclose(
        v["noise"]["pred_trace"][0], c * _dense_trace_sigma(problem, problem.init_params), rtol=2e-4
    )
    assert (tmp_path / "training_vs_sde.json").exists() and (tmp_path / "records" / "train__SGD.npz").exists()


def test_m_sharpness_reuses_only_records_of_the_same_config(tmp_path, monkeypatch):
    from analysis import m_sharpness as ms

    cfg = train.TrainConfig(observables=("loss",), **TINY)
    problem = train.build_problem(cfg)
    path = tmp_path / "rec"
    first = ms.recorded(cfg, path, lambda *_: None, problem=problem)
    calls = []
    real = train.record
    monkeypatch.setattr(train, "record", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    again = ms.recorded(cfg, path, lambda *_: None, problem=problem)
    assert calls == [] and np.array_equal(again.values["loss"], first.values["loss"])  # reused, not retrained
    ms.recorded(cfg, path, lambda *_: None, start={"sharp_start": 1}, problem=problem)  # other start: retrained
    ms.recorded(cfg.replace(eta=0.1), path, lambda *_: None, problem=problem)  # other config: retrained
    ms.recorded(cfg.replace(eta=0.1), path, lambda *_: None, fresh=True, problem=problem)  # fresh: retrained
    assert len(calls) == 3
    path.with_suffix(".json").write_text("{not json")
    ms.recorded(cfg.replace(eta=0.1), path, lambda *_: None, problem=problem)  # unreadable: retrained
    assert len(calls) == 4


@pytest.mark.slow  # 20-45 s; run by CI's slow pass (.ci/run), keeping the default suite under 10 minutes
def test_training_vs_sde_resumes_after_an_interruption(tmp_path, monkeypatch):
    from analysis import training_vs_sde as tvs

    cfg = {
        "problem": ("digits_mlp", {"hidden": 4}),
        "variants": (("SGD", "sgd", {}), ("SAM", "sam", {"rho": 0.05})),
        "batch_size": 32,
        "eta": 0.2,
        "steps": 6,
        "every": 3,
        "seeds": (0, 1),
        "paths": 2,
        "num_samples": 4,
        "noise_batches": 16,
        "top_k": 2,
        "observables": ("loss",),
    }
    real = train.record
    calls = []

    def interrupted(config, **kw):
        calls.append(config.label)
        if config.label == "SAM":
            raise KeyboardInterrupt
        return real(config, **kw)

    monkeypatch.setattr(train, "record", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tvs.run(cfg, tmp_path, log=lambda *_: None)
    partial = json.loads((tmp_path / "training_vs_sde.json").read_text())
    assert partial["complete"] is False and list(partial["variants"]) == ["SGD"]
    monkeypatch.setattr(train, "record", lambda config, **kw: calls.append(config.label) or real(config, **kw))
    res = tvs.run(cfg, tmp_path, log=lambda *_: None)
    assert calls == ["SGD", "SAM", "SAM"] and res["complete"] is True  # SGD was not retrained
    assert res["variants"]["SGD"] == partial["variants"]["SGD"]
    tvs.run(cfg | {"steps": 3}, tmp_path, log=lambda *_: None)  # another config: everything recomputed
    assert calls[3:] == ["SGD", "SAM"]
    with pytest.raises(ValueError, match="unknown preset"):
        tvs.run("huge")


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_effective_sample_size_is_recorded_along_training():
    """The ``effective_sample_size`` observable of an RW-SAM run is the estimator's value at the recorded
    parameters (the estimator is checked against numpy in tests/test_variants.py), below ``B`` and at least 1."""
    cfg = train.TrainConfig(
        variant="rw-sam",
        variant_kwargs={"rho": 0.05, "inverse_temperature": 3.0},
        observables=("loss", "effective_sample_size"),
        **TINY,
    )
    problem = train.build_problem(cfg)
    rec = train.record(cfg, problem=problem, save_params=True)
    ess = rec.values["effective_sample_size"]
    assert ess.shape == (2, 3) and np.all((ess >= 1.0) & (ess < cfg.batch_size))
    params = jax.tree_util.tree_map(lambda a: a[1, -1], rec.saved_params)
    want = ss.noise.expected_effective_sample_size(
        train.build_variant(cfg),
        problem,
        params,
        ss.WithoutReplacement(cfg.batch_size),
        jr.key(cfg.estimator_seed),
        cfg.norm_batches,
    )
    np.testing.assert_allclose(ess[1, -1], float(want.value), rtol=1e-5)
