"""The fidelity ladder (analysis.fidelity): which rungs exist, the gap statistics, a tiny end-to-end study."""

import math

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sde_sam as ss
from analysis import fidelity as fd


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_ladder_has_the_defined_rungs_only():
    full = {r.label for r in fd.ladder(ss.variants.usam(0.1))}
    assert full == {f"{d}/{s}/o{o}" for d in ("general", "expected") for s in ("leading", "first_order", "empirical")
                    for o in (1, 2)}
    sam = {r.label for r in fd.ladder(ss.variants.sam(0.1))}
    assert not any("first_order" in r for r in sam) and len(sam) == 8  # first_order: unnormalized batch rule only
    rw = {r.label for r in fd.ladder(ss.variants.rw_sam(0.1, weights_in_descent=True))}
    assert rw and not any(r.endswith("o2") for r in rw)  # order 2 needs dG/dx; RW weights carry stop_gradient
    assert {r.label for r in fd.ladder(ss.variants.sgd())} == {"general/leading/o1", "general/leading/o2"}
    for rung in fd.ladder(ss.variants.rw_sam(0.1, weights_in_descent=True)):  # every rung builds
        ss.sde_model(ss.problems.linear_regression(n=8, d=2), ss.variants.rw_sam(0.1, weights_in_descent=True),
                     ss.UniformSubset(2), drift=rung.drift, diffusion=rung.diffusion, order=rung.order)


def test_gap_statistics_by_hand_with_diverged_rows_left_out():
    rng = np.random.default_rng(0)
    model, disc = rng.standard_normal((50, 4)) + 1.0, rng.standard_normal((40, 4))
    model[3, 2:] = np.nan  # a diverged path: left out whole
    g = fd.gap(model, disc)
    kept = np.delete(model, 3, axis=0)
    want = kept[:, -1].mean() - disc[:, -1].mean()
    se = math.hypot(kept[:, -1].std(ddof=1) / math.sqrt(49), disc[:, -1].std(ddof=1) / math.sqrt(40))
    assert g["kept"] == {"model": 49, "discrete": 40}
    np.testing.assert_allclose([g["final"]["gap"], g["final"]["stderr"]], [want, se], rtol=1e-12)
    ta = kept.mean(1).mean() - disc.mean(1).mean()
    np.testing.assert_allclose(g["time_avg"]["gap"], ta, rtol=1e-12)
    z_t = np.abs(kept.mean(0) - disc.mean(0)) / np.sqrt(kept.var(0, ddof=1) / 49 + disc.var(0, ddof=1) / 40)
    np.testing.assert_allclose(g["max_abs_z"], z_t.max(), rtol=1e-12)


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_tiny_escape_study_runs_and_tables_render():
    cfg = {"escape": fd.PRESETS["tiny"]["escape"], "training": None}
    res = fd.run(cfg, log=lambda s: None)
    v = res["escape"]["variants"]["m-SAM (m=1)"]
    assert set(v["models"]) == {"general/leading/o1", "expected/leading/o1"} and "2" in v["svag"]
    for m in v["models"].values():
        assert 1 <= len(m["levels"]) <= 2 and m["levels"][0]["dt"] == 0.05
    text = fd.tables(res)
    assert "SVAG l=2" in text and "expected/leading/o1" in text and "best model" in text


def test_sharp_flat_barrier_is_the_interior_maximum():
    pr = ss.problems.sharp_flat_basins(n=16, sharp_curvature=16.0, noise_scale=0.2)
    b = ss.problems.sharp_flat_barrier(pr)
    f = lambda x: float(pr.full_loss(jnp.asarray([x], jnp.float32)))  # noqa: E731
    assert -1.0 < b < 0.0 and f(b) > f(b - 0.02) and f(b) > f(b + 0.02)
    assert bool(ss.problems.in_sharp_basin(jnp.asarray([b - 1e-3]), b))
    assert not bool(ss.problems.in_sharp_basin(jnp.asarray([b + 1e-3]), b))
    with pytest.raises(ValueError, match="barrier"):  # the defaults (noise 0.3, n = 32): the basins have merged
        ss.problems.sharp_flat_barrier(ss.problems.sharp_flat_basins())


def test_rungs_can_be_restricted_by_label():
    cfg = dict(drifts=["general", "expected"], diffusions=["leading", "empirical"], orders=[1],
               rungs=["general/leading/o1", "expected/empirical/o1"])
    assert [r.label for r in fd._rungs(ss.variants.sam(0.1), cfg)] == ["general/leading/o1", "expected/empirical/o1"]
    assert len(fd._rungs(ss.variants.sam(0.1), cfg | {"rungs": None})) == 4


@pytest.mark.slow  # 20-45 s; run by CI's slow pass (.ci/run), keeping the default suite under 10 minutes
def test_an_interrupted_study_resumes_from_its_finished_variants(tmp_path, monkeypatch):
    """The CLI saves after every variant; interrupted in the training part, a rerun into the same folder reuses the
    finished escape variant (study_variant not called for it again) and ends with the same escape result."""
    calls = []
    real = fd.study_variant

    def counting(problem, *a, **kw):
        calls.append(problem.name)
        if problem.name.startswith("digits") and len(calls) == 2:
            raise KeyboardInterrupt
        return real(problem, *a, **kw)

    monkeypatch.setattr(fd, "study_variant", counting)
    with pytest.raises(KeyboardInterrupt):
        fd.main(["--preset", "tiny", "--out", str(tmp_path)])
    _, partial = ss.load_result(tmp_path / "fidelity")
    assert partial["complete"] is False and "m-SAM (m=1)" in partial["escape"]["variants"]
    res = fd.main(["--preset", "tiny", "--out", str(tmp_path)])
    assert calls == ["sharp_flat_1d", calls[1], calls[1]]  # escape once; training twice (interrupted, then done)
    _, final = ss.load_result(tmp_path / "fidelity")
    assert final["complete"] is True and "SAM" in final["training"]["variants"]
    assert final["escape"]["variants"]["m-SAM (m=1)"] == partial["escape"]["variants"]["m-SAM (m=1)"]
    assert set(res["escape"]["variants"]) == {"m-SAM (m=1)"}


def _linear_loss(x, ex):  # f_i(x) = a_i . x: a constant gradient, where the warm-up correction is exact
    return jnp.sum(ex["a"] * x)


def test_momentum_ladder_reads_the_warmup_corrected_time():
    """Constant gradient (f_i = a_i . x, full batch: no noise on either side) under heavy-ball momentum 0.9: the
    runs move ``eta / (1 - beta) * elapsed_steps(k)`` gradients, the rescaled SDE (exact here) ``k eta / (1 - beta)``.
    So the plain reading is ahead by ``beta (1 - beta^k) / (1 - beta)`` steps, the warm-up-corrected one only by
    the rounding of that time to a recorded step (at most half a step); SVAG and order 2 are refused."""
    a = jnp.linspace(0.5, 1.5, 8)[:, None]  # mean gradient 1
    pr = ss.Problem(_linear_loss, {"a": a}, jnp.zeros(1), name="linear")
    sampler = ss.UniformSubset(8)
    mom, eta, every = ss.Momentum(0.9), 0.002, 20
    h = eta / (1 - 0.9)

    def observe(kind, out):
        return {"x": np.asarray(out.saved_params if kind == "runs" else out.paths, np.float64)[..., 0]}

    res = fd.study_variant(pr, ss.variants.sgd(), sampler, eta=eta, steps=200, every=every, observe=observe,
                           num_runs=2, num_paths=2, key=jr.key(0), rungs=[fd.Rung("general", "leading", 1)],
                           svag=(1, 2), max_refine=0, key_observable="x", stat="final", momentum=mom,
                           log=lambda s: None)
    assert "svag_skipped" in res and res["svag"] == {}
    k = np.arange(0, 201, every)
    assert res["momentum"]["warmup_steps"] == np.rint(k - 0.9 * (1 - 0.9**k) / 0.1).astype(int).tolist()
    lvl = res["models"]["general/leading/o1"]["levels"][0]
    assert lvl["dt"] == pytest.approx(h)
    plain, warm = lvl["gaps"]["x"]["final"]["gap"], lvl["gaps_warmup"]["x"]["final"]["gap"]
    assert plain == pytest.approx(-h * 0.9 * (1 - 0.9**200) / 0.1, rel=1e-3)  # x = -t on the SDE side
    assert abs(warm) <= 0.5 * h + 1e-5
    rows = fd.budget_rows(res, "x", "final")
    assert [r["model"] for r in rows] == ["general/leading/o1", "general/leading/o1, warm-up time"]
    with pytest.raises(ValueError, match="first order"):
        fd.study_variant(pr, ss.variants.sgd(), sampler, eta=eta, steps=20, every=20, observe=observe,
                         num_runs=1, num_paths=1, key=jr.key(0), rungs=[fd.Rung("general", "leading", 2)],
                         key_observable="x", momentum=mom, log=lambda s: None)
