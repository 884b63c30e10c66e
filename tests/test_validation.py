"""``ss.validate`` and ``ss.validity_map``: verdicts by equivalence tests (docs/validation.md, DESIGN §3.5).

Each verdict is reached on a case built to give it. The statistical cases use fixed keys; their margins are stated
in Monte Carlo standard errors (z) or in units of the tolerance tau, read from the result itself."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sde_sam as ss
from sde_sam import Validation
from sde_sam.sde import GeneralDrift, LeadingDiffusion
from sde_sam.validation import Agreement, Comparison, Rung, Tolerance, VerdictKind, verdict_of

QUAD = ss.problems.quadratic(spectrum=(1.0,), n=32)  # f = (1/2)(x - z_i)^2, curvature 1, start x = 1
SGD, B4 = ss.variants.sgd(), ss.WithReplacement(4)
RUNG = [Rung(GeneralDrift(), LeadingDiffusion())]
LOSS = ss.observables("loss", every=20)


@dataclasses.dataclass(frozen=True)
class HalfDrift(GeneralDrift):
    """A deliberately wrong drift: half of the true one."""

    name: ClassVar[str] = "half"

    def __call__(self, *args, **kwargs):
        return jax.tree_util.tree_map(lambda b: 0.5 * b, super().__call__(*args, **kwargs))


def _validate(problem=QUAD, variant=SGD, *, eta, steps, num_runs, rungs=RUNG, record=LOSS, **kw):
    return ss.validate(
        problem,
        variant,
        B4,
        eta=eta,
        steps=steps,
        num_runs=num_runs,
        key=jr.key(0),
        rungs=rungs,
        record=record,
        svag=kw.pop("svag", (8,)),
        max_refine=kw.pop("max_refine", 1),
        progress=False,
        **kw,
    )


# -- the equivalence test, by hand --------------------------------------------------------------------------------


def test_the_equivalence_test_by_hand():
    """|gap| + z s <= tau tracks; |gap| - z s > tau departs; else inconclusive (tau = 1, z = 2)."""
    gap = np.array([0.0, 0.5, -0.5, 1.5, 3.5, 2.0])
    se = np.array([0.0, 0.25, 0.3, 0.5, 1.0, 0.1])
    got = [a.value for a in ss.validation.agreement(gap, se, 1.0, 2.0)]
    assert got == ["tracks", "tracks", "inconclusive", "inconclusive", "departs", "departs"]
    # runs that decide the inconclusive times: R (z s / |tau - |gap||)^2 = 10 (0.6/0.5)^2 = 14.4 and 10 (1/0.5)^2 = 40
    c = Comparison("m", gap[:4], se[:4], 1.0, 2.0, 10)
    assert c.agreement is Agreement.INCONCLUSIVE
    assert c.runs_to_decide == 40
    assert Comparison("m", gap[:2], se[:2], 1.0, 2.0, 10).agreement is Agreement.TRACKS
    assert Comparison("m", gap, se, 1.0, 2.0, 10).agreement is Agreement.DEPARTS


def test_tolerance_scale_is_the_change_or_a_share_of_the_level():
    t = Tolerance(relative=0.1, level=0.5)
    assert t.tau("loss", np.array([2.0, 1.0, 0.5])) == pytest.approx(0.1 * 1.5)  # change 1.5 > 0.5 * 2
    assert t.tau("x", np.array([4.0, 4.1, 3.9])) == pytest.approx(0.1 * 0.5 * 4.1)  # level
    assert Tolerance(absolute={"x": 0.25}).tau("x", np.array([1.0, 2.0])) == 0.25
    with pytest.raises(ValueError, match="relative"):
        Tolerance(relative=0.0)
    with pytest.raises(ValueError, match=r"absolute\['x'\]"):
        Tolerance(absolute={"x": -1.0})


def test_verdict_rules():
    """Tracked beats everything; SVAG departing is 'outside'; SVAG tracking with every rung departing is a model gap."""
    t = np.zeros(3)

    def comp(label, gap, se=0.01):
        return Comparison(label, t + gap, t + se, 1.0, 1.645, 16)

    assert verdict_of([comp("a", 3.0), comp("b", 0.2)], comp("svag", 5.0)).kind is VerdictKind.TRACKED
    out = verdict_of([comp("a", 3.0)], comp("SVAG l=8", 5.0))
    assert out.kind is VerdictKind.OUTSIDE and "SVAG l=8 departs" in out.text
    gap = verdict_of([comp("a", 3.0), comp("b", 2.0)], comp("svag", 0.1))
    assert gap.kind is VerdictKind.MODEL_GAP and gap.rung == "b"
    unsure = verdict_of([comp("a", 0.9, se=0.5)], comp("svag", 0.1))
    assert unsure.kind is VerdictKind.INCONCLUSIVE and "runs would decide it" in unsure.text


# -- the verdicts on cases built for them --------------------------------------------------------------------------


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_sgd_on_a_quadratic_at_small_eta_is_tracked_and_stays_tracked_with_16x_the_runs():
    few = _validate(eta=0.01, steps=100, num_runs=32)
    many = _validate(eta=0.01, steps=100, num_runs=512)
    for v in (few, many):
        assert v.verdicts["loss"].kind is VerdictKind.TRACKED, v.verdicts["loss"].text
        assert v.verdicts["loss"].rung == "general/leading/o1"
    c = many.final("general/leading/o1").comparisons["loss"]
    assert c.ratio < 0.5  # the gap is well inside tau, not at its edge
    assert "tracked by general/leading/o1" in str(many)


def test_a_step_beyond_the_sde_regime_is_outside():
    """eta = 1 on curvature 1: the discrete method reaches the minimum in one step, SVAG (the SDE) decays as e^-t."""
    v = _validate(eta=1.0, steps=10, num_runs=32, record=ss.observables("loss", every=2))
    assert v.verdicts["loss"].kind is VerdictKind.OUTSIDE, v.verdicts["loss"].text
    assert v.svag[8]["loss"].agreement is Agreement.DEPARTS


def test_a_wrong_drift_is_a_model_gap():
    v = _validate(eta=0.01, steps=100, num_runs=32, rungs=[Rung(HalfDrift(), LeadingDiffusion())])
    assert v.verdicts["loss"].kind is VerdictKind.MODEL_GAP, v.verdicts["loss"].text
    assert v.verdicts["loss"].rung == "half/leading/o1"


def test_too_few_runs_are_inconclusive_and_say_how_many_would_decide():
    v = _validate(eta=0.01, steps=100, num_runs=2, record=ss.observables("loss", every=20))
    text = v.verdicts["loss"].text
    assert v.verdicts["loss"].kind is VerdictKind.INCONCLUSIVE, text
    assert "runs would decide it" in text


def test_observables_bound_to_the_run_are_accepted():
    """``batch_grad_norm`` and ``effective_sample_size`` take m, the rule and the sampler from the run: validate checks
    the record as the runs bind it (it refused ``batch_grad_norm`` for want of m before)."""
    names = ("loss", "batch_grad_norm", "effective_sample_size")
    v = _validate(
        variant=ss.variants.sam(0.05),
        eta=0.05,
        steps=4,
        num_runs=2,
        svag=(),
        max_refine=0,
        record=ss.observables(*names, every=2),
    )
    assert set(v.verdicts) == set(names)
    assert np.all(np.isfinite(v.discrete["batch_grad_norm"]["mean"]))


# -- the result -----------------------------------------------------------------------------------------------------


def test_validation_saves_loads_prints_and_plots(tmp_path):
    v = _validate(eta=0.05, steps=20, num_runs=8, record=ss.observables("loss", "param_norm_sq", every=10))
    assert v.compiles > 0 and set(v.verdicts) == {"loss", "param_norm_sq"}
    back = Validation.load(v.save(tmp_path / "v"))
    assert back.verdicts == v.verdicts and back.config == v.config
    np.testing.assert_array_equal(
        back.final("general/leading/o1").comparisons["loss"].gap, v.final("general/leading/o1").comparisons["loss"].gap
    )
    assert str(back) == str(v)
    assert len(v.plot().axes) == 2
    rung, svag = v.budget("loss")  # the Euler-Maruyama part of the gap: at dt = h minus at the finest dt
    assert rung["model"] == "general/leading/o1" and svag["model"] == "SVAG l=8"
    assert rung["euler_maruyama"] == pytest.approx(rung["gap_at_h"] - rung["gap"])
    runs = ss.run_discrete(QUAD, SGD, B4, eta=0.1, steps=2, num_runs=2, key=jr.key(0), progress=False)
    with pytest.raises(ValueError, match=r"Runs\.load"):
        Validation.load(runs.save(tmp_path / "r"))


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_refinement_stops_when_the_gap_no_longer_moves():
    v = _validate(eta=0.05, steps=20, num_runs=16, record=ss.observables("loss", every=10), max_refine=3)
    levels = v.rungs["general/leading/o1"]
    assert [lv.refine for lv in levels] == [2**i for i in range(len(levels))]
    if len(levels) < 4:  # stopped early: the last change lies within twice its standard error
        a, b = levels[-2].comparisons["loss"], levels[-1].comparisons["loss"]  # pyright: ignore[reportGeneralTypeIssues]
        assert np.all(np.abs(b.gap - a.gap) <= 2 * np.hypot(a.stderr, b.stderr))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"eta": 0.0}, "`eta`"),
        ({"eta": math.nan}, "`eta`"),
        ({"steps": 0}, "`steps`"),
        ({"num_runs": 1}, "`num_runs`"),
        ({"svag": (1,)}, "`svag`"),
        ({"max_refine": -1}, "`max_refine`"),
        ({"steps": 25}, "multiple"),
        ({"rungs": []}, "`rungs`"),
        ({"rungs": [Rung(order=2)], "variant": ss.variants.rw_sam(0.05)}, "not defined"),
    ],
)
def test_bad_input_is_refused_before_any_run(kw, match):
    args = {"eta": 0.05, "steps": 20, "num_runs": 4} | kw
    with pytest.raises(ValueError, match=match):
        _validate(**args)


# -- user models and rules ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SignAscent(ss.variants.AbstractRule):
    """A rule written outside the package: ascend along sign(g_gamma) (SAM in the l-infinity ball)."""

    def directions(self, problem, params, state, batch, key):
        loss, g = jax.value_and_grad(problem.batch_loss)(params, batch)
        d = jax.tree_util.tree_map(lambda a: jnp.sign(a)[None], g)
        return ss.variants.Directions(d, None, state, loss)


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_validate_takes_a_user_rule_on_an_equinox_model():
    eqx = pytest.importorskip("equinox")
    rng = np.random.default_rng(0)
    data = {
        "x": jnp.asarray(rng.standard_normal((32, 3)), jnp.float32),
        "y": jnp.asarray(rng.standard_normal(32), jnp.float32),
    }
    problem = ss.problems.from_equinox(
        lambda m, ex: 0.5 * (m(ex["x"])[0] - ex["y"]) ** 2,
        data,
        eqx.nn.MLP(3, 1, 4, 1, activation=jnp.tanh, key=jr.key(0)),
    )
    variant = ss.variants.Variant("sign-SAM", rho=0.05, rule=SignAscent(), normalization=ss.variants.Identity())
    rungs = ss.validation.ladder(variant, drifts=(GeneralDrift(),), diffusions=(LeadingDiffusion(),), orders=(1,))
    v = ss.validate(
        problem,
        variant,
        B4,
        eta=0.05,
        steps=20,
        num_runs=8,
        key=jr.key(1),
        rungs=rungs,
        record=ss.observables("loss", every=10),
        svag=(4,),
        max_refine=0,
        progress=False,
    )
    assert v.config["variant"]["name"] == "sign-SAM"
    assert v.verdicts["loss"].kind in VerdictKind
    assert np.all(np.isfinite(v.final("general/leading/o1").comparisons["loss"].gap))


def test_the_ladder_follows_what_the_variant_supports():
    labels = {r.label for r in ss.validation.ladder(ss.variants.rw_sam(0.05))}
    assert labels and not any(lbl.endswith("/o2") for lbl in labels)  # RW-SAM's weights carry stop_gradient
    assert {r.label for r in ss.validation.ladder(SGD)} == {"general/leading/o1", "general/leading/o2"}
    assert all(r.order == 1 for r in ss.validation.ladder(ss.variants.sam(0.05), momentum=ss.Momentum(0.9)))


# -- validity maps ---------------------------------------------------------------------------------------------------


def _map(etas, rhos, d=3, **kw):
    return ss.validity_map(
        ss.problems.linear_regression(n=32, d=d),
        ss.variants.sam(0.05),
        B4,
        etas=etas,
        rhos=rhos,
        steps=10,
        num_runs=4,
        key=jr.key(0),
        rungs=RUNG,
        svag=(2,),
        max_refine=0,
        record=ss.observables("loss", every=5),
        progress=False,
        **kw,
    )


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
@pytest.mark.usefixtures("released_programs")
def test_a_3x3_map_compiles_no_more_programs_than_a_1x1_map(tmp_path):
    """Each on a problem of shapes not compiled before (d = 4 and d = 5), after a map on d = 2 has compiled the
    programs that do not depend on the shapes: both counts start equally cold."""
    _map((0.05,), (0.05,), d=2)
    one = _map((0.05,), (0.05,), d=4)
    grid = _map((0.02, 0.05, 0.1), (0.01, 0.05, 0.1), d=5, out=tmp_path / "map")
    assert 0 < grid.compiles <= one.compiles, (grid.compiles, one.compiles)
    assert grid.verdicts("loss").shape == (1, 3, 3)
    assert set(grid.boundary("loss")) == {(r, None) for r in (0.01, 0.05, 0.1)}
    back = ss.ValidityMap.load(tmp_path / "map")
    assert str(back) == str(grid)
    assert back.at(0.1, 0.05).verdicts == grid.at(0.1, 0.05).verdicts
    grid.plot().savefig(tmp_path / "map.png")


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_an_interrupted_map_resumes_from_its_saved_points(tmp_path):
    out = tmp_path / "map"
    seen = []

    def stop_after_two(line):
        seen.append(line)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _map((0.02, 0.05, 0.1), (0.05,), out=out, log=stop_after_two)
    lines = []
    done = _map((0.02, 0.05, 0.1), (0.05,), out=out, log=lines.append)
    assert sum("reused" in line for line in lines) == 2 and len(done.points) == 3
    fresh = _map((0.02, 0.05, 0.1), (0.05,))
    for where, v in fresh.points.items():
        assert done.points[where].verdicts == v.verdicts


def test_map_refuses_bad_grids_before_any_run():
    with pytest.raises(ValueError, match="`etas`"):
        _map((), (0.05,))
    with pytest.raises(ValueError, match="`rhos`"):
        _map((0.05,), (-0.1,))
    with pytest.raises(ValueError, match="must divide the batch size"):
        _map((0.05,), (0.05,), ms=(3,))
    with pytest.raises(ValueError, match="micro-batch size"):
        ss.validity_map(QUAD, ss.variants.n_sam(0.05), B4, etas=(0.05,), ms=(2,), steps=10, num_runs=4, key=jr.key(0))


_MAP_ON_TWO_DEVICES = """
import json, jax, jax.random as jr
import sde_sam as ss
from sde_sam.sde import GeneralDrift, LeadingDiffusion
assert jax.device_count() == 2
grid = ss.validity_map(ss.problems.linear_regression(n=32, d=3), ss.variants.sam(0.05), ss.WithReplacement(4),
                       etas=(0.02, 0.1), steps=10, num_runs=4, key=jr.key(0),
                       rungs=[ss.validation.Rung(GeneralDrift(), LeadingDiffusion())], svag=(2,), max_refine=0,
                       record=ss.observables("loss", every=5), progress=False, mesh=ss.parallel.make_mesh())
print(json.dumps({str(k[0]): {"kind": v.verdicts["loss"].kind.value,
                              "gap": v.final("general/leading/o1").comparisons["loss"].gap.tolist(),
                              "devices": v.config["devices"]} for k, v in grid.points.items()}))
"""


@pytest.mark.slow  # a second process with two host devices
def test_a_map_over_two_devices_gives_the_verdicts_of_one():
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_FLAGS", "JAX_"))}
    env |= {
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "PYTHONPATH": root + os.pathsep + env.get("PYTHONPATH", ""),
    }
    proc = subprocess.run(
        [sys.executable, "-c", _MAP_ON_TWO_DEVICES], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(proc.stdout.strip().splitlines()[-1])
    one = ss.validity_map(
        ss.problems.linear_regression(n=32, d=3),
        ss.variants.sam(0.05),
        B4,
        etas=(0.02, 0.1),
        steps=10,
        num_runs=4,
        key=jr.key(0),
        rungs=RUNG,
        svag=(2,),
        max_refine=0,
        record=ss.observables("loss", every=5),
        progress=False,
    )
    for (eta, _, _), v in one.points.items():
        got = two[str(eta)]
        assert got["devices"] == 2
        assert got["kind"] == v.verdicts["loss"].kind.value
        np.testing.assert_allclose(
            got["gap"], v.final("general/leading/o1").comparisons["loss"].gap, rtol=1e-5, atol=1e-7
        )


def test_validate_with_momentum_uses_the_rescaled_model_and_skips_svag():
    v = _validate(eta=0.01, steps=40, num_runs=8, momentum=ss.Momentum(0.5), record=ss.observables("loss", every=20))
    assert v.svag == {} and any("SVAG" in n for n in v.notes)
    assert v.config["momentum"] == {"beta": 0.5, "nesterov": False}
    assert v.verdicts["loss"].kind in VerdictKind
    with pytest.raises(ValueError, match="not defined"):
        _validate(eta=0.01, steps=40, num_runs=8, momentum=ss.Momentum(0.5), rungs=[Rung(order=2)])
