"""The fidelity study (analysis.fidelity): presets over ss.validate, its rungs, a tiny end-to-end study and F9."""

from typing import cast

import jax.numpy as jnp
import pytest

import sde_sam as ss
from analysis import fidelity as fd
from stage_types import Results

LADDER = {
    "drift_samples": 4,
    "drifts": ["general", "expected"],
    "diffusions": ["leading", "first_order", "empirical"],
    "orders": [1, 2],
}


def test_rungs_of_a_config_are_those_the_variant_supports_with_the_configured_samples():
    full = {r.label for r in fd.rungs_of(ss.variants.usam(0.1), LADDER)}
    assert full == {
        f"{d}/{s}/o{o}"
        for d in ("general", "expected")
        for s in ("leading", "first_order", "empirical")
        for o in (1, 2)
    }
    sam = {r.label for r in fd.rungs_of(ss.variants.sam(0.1), LADDER)}
    assert not any("first_order" in r for r in sam) and len(sam) == 8  # first_order: unnormalized batch rule only
    rw = {r.label for r in fd.rungs_of(ss.variants.rw_sam(0.1, weights_in_descent=True), LADDER)}
    assert rw and not any(r.endswith("o2") for r in rw)  # order 2 needs dG/dx; RW weights carry stop_gradient
    assert {r.label for r in fd.rungs_of(ss.variants.sgd(), LADDER)} == {"general/leading/o1", "general/leading/o2"}
    # momentum: the rescaled model is first order only
    mom = {r.label for r in fd.rungs_of(ss.variants.sam(0.1), LADDER | {"momentum": {"beta": 0.9}})}
    assert mom and not any(r.endswith("o2") for r in mom)
    # every Monte Carlo choice carries the configured sample count (the old flat num_samples of sde_model)
    for r in fd.rungs_of(ss.variants.sam(0.1), LADDER):
        assert r.drift.num_samples == 4
        assert getattr(r.diffusion, "num_samples", 4) == 4


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_tiny_study_is_validate_per_variant_and_its_tables_and_f9_render(tmp_path):
    from figures import f9_fidelity

    res = fd.run(fd.PRESETS["tiny"], log=lambda s: None)
    v = res["escape"]["variants"]["m-SAM (m=1)"]
    val = ss.Validation.from_dict(v)  # each variant's result is a Validation
    assert set(val.rungs) == {"general/leading/o1", "expected/leading/o1"} and set(val.svag) == {2}
    assert set(val.verdicts) == {"loss", "outside"} and v["m"] == 1
    for levels in val.rungs.values():
        assert 1 <= len(levels) <= 2 and levels[0].dt == 0.05
    assert [r["model"] for r in v["budget"]] == ["general/leading/o1", "expected/leading/o1", "SVAG l=2"]
    assert v["budget"] == val.budget("outside")
    train = ss.Validation.from_dict(res["training"]["variants"]["SAM"])
    assert set(train.verdicts) == {"loss", "trace_sigma"} and not train.svag
    text = fd.tables(res)
    assert "SVAG l=2" in text and "expected/leading/o1" in text and "Error budget of outside" in text
    assert "Error budget of loss" in text  # the training part's key observable
    files = f9_fidelity.render(cast(Results, {"fidelity": res}), {}, tmp_path)
    assert [f.name for f in files] == ["F9_fidelity.png", "F9_fidelity.pdf"] and all(f.stat().st_size for f in files)


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
    cfg = {
        "drift_samples": 4,
        "drifts": ["general", "expected"],
        "diffusions": ["leading", "empirical"],
        "orders": [1],
        "rungs": ["general/leading/o1", "expected/empirical/o1"],
    }
    assert [r.label for r in fd.rungs_of(ss.variants.sam(0.1), cfg)] == ["general/leading/o1", "expected/empirical/o1"]
    assert len(fd.rungs_of(ss.variants.sam(0.1), cfg | {"rungs": None})) == 4


@pytest.mark.slow  # 20-45 s; run by CI's slow pass (.ci/run), keeping the default suite under 10 minutes
def test_an_interrupted_study_resumes_from_its_finished_variants(tmp_path, monkeypatch):
    """The CLI saves after every variant; interrupted in the training part, a rerun into the same folder reuses the
    finished escape variant (validate not called for it again) and ends with the same escape result."""
    calls = []
    real = ss.validate

    def counting(problem, *a, **kw):
        calls.append(problem.name)
        if problem.name.startswith("digits") and len(calls) == 2:
            raise KeyboardInterrupt
        return real(problem, *a, **kw)

    monkeypatch.setattr(ss, "validate", counting)
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
