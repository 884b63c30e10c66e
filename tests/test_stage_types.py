"""The stages' config and data types (stage_types/): presets build their configs unchanged, bad entries
are named before any work, and a stage's data is held to its type."""

import dataclasses
import json
from pathlib import Path

import pytest

from analysis import presets
from analysis.pipeline import Stage, stage_path
from analysis.reproduce import stages_for
from stage_types import (
    CONFIGS,
    DriftConfig,
    EscapeConfig,
    EscapeMapConfig,
    EtaMapConfig,
    config_of,
    mismatches,
)

ROOT = Path(__file__).resolve().parent.parent

NAMED = {
    "quick": presets.QUICK,
    "full": presets.FULL,
    "escape regime": {"escape": presets.ESCAPE_REGIME},
    "eta map medium": {"eta_map": presets.ETA_MAP_MEDIUM},
    "eta map mnist1d": {"eta_map": presets.ETA_MAP_MNIST1D},
}


@pytest.mark.parametrize("which", sorted(NAMED))
def test_every_preset_entry_builds_its_config_and_gives_it_back_unchanged(which):
    """``to_dict`` is the preset's entry as JSON (so the stage's cache hash is what it was), and every stage of the
    two presets has a config type."""
    entries = NAMED[which]
    if which in ("quick", "full"):
        assert set(entries) == set(CONFIGS)
    for name, entry in entries.items():
        config = config_of(name, entry)
        assert json.dumps(config.to_dict(), sort_keys=True) == json.dumps(entry, sort_keys=True), name
        assert config_of(name, config) is config


def test_the_quick_stages_keep_the_cache_files_of_the_recorded_run():
    """The cache file of each quick stage (its name carries the config's hash) is the one the recorded fresh-clone
    run wrote: building the configs changed no hash, and the README's quick-run figures are of these presets."""
    report = json.loads((ROOT / "analysis/recordings/cpu/quick_report_24ad929.json").read_text())
    recorded = {s["stage"]: Path(s["path"]).name for s in report["stages"]}
    got = {st.name: stage_path("results", st).name + ".json" for st in stages_for(list(_all_ids()), "quick")}
    assert got == recorded, "a quick preset entry or its hashing changed: the documented quick run no longer matches"


def _all_ids():
    from figures import FIGURES
    from paper_checks import CHECKS

    return [*FIGURES, *CHECKS]


def test_a_config_is_frozen_and_its_lists_are_tuples():
    config = DriftConfig.from_dict(presets.QUICK["drift"])
    assert config.rhos == (0.04, 0.01)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1  # pyright: ignore[reportAttributeAccessIssue]
    assert config.replace(seed=3).seed == 3 and config.seed == 0


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"num_run": 3}, ["unknown key(s) num_run", "valid keys:", "num_runs"]),
        ({"map": {"etas": [0.1]}}, ["escape map config", "missing key(s) rho_lambdas, num_runs, steps"]),
    ],
)
def test_a_bad_entry_is_named_with_the_valid_keys(change, words):
    entry = dict(presets.QUICK["escape"]) | change
    with pytest.raises(ValueError) as e:
        EscapeConfig.from_dict(entry)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_a_missing_key_is_named():
    entry = dict(presets.QUICK["escape"])
    del entry["eta"]
    with pytest.raises(ValueError, match=r"the escape config: missing key\(s\) eta; valid keys: seed, n"):
        EscapeConfig.from_dict(entry)


def test_the_eta_map_names_one_problem_or_several():
    entry = dict(presets.QUICK["eta_map"])
    with pytest.raises(ValueError, match="one `problem` or several `problems`"):
        EtaMapConfig.from_dict(entry | {"problems": [entry["problem"]]})
    assert EtaMapConfig.from_dict(entry).all_problems == (("digits_mlp", {"hidden": 8}),)


def test_reproduce_refuses_a_bad_preset_before_any_stage_runs(monkeypatch):
    """A typo in any stage's entry stops the run while building the stages, before the first one computes."""
    quick = json.loads(json.dumps(presets.QUICK))
    quick["timing"]["repats"] = quick["timing"].pop("repeats")
    monkeypatch.setitem(presets.PRESETS, "quick", quick)
    with pytest.raises(ValueError, match=r"the timing config: unknown key\(s\) repats; missing key\(s\) repeats"):
        stages_for(["C3", "C7"], "quick")


def test_the_command_refuses_a_bad_preset_in_one_line_and_writes_nothing(monkeypatch, tmp_path, capsys):
    from sde_sam import cli

    quick = json.loads(json.dumps(presets.QUICK))
    quick["grad_norm"]["num_batche"] = quick["grad_norm"].pop("num_batches")
    monkeypatch.setitem(presets.PRESETS, "quick", quick)
    out = tmp_path / "out"
    assert cli.main(["reproduce", "--quick", "--only", "C3", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "sde-sam reproduce: error: the grad_norm config: unknown key(s) num_batche; missing key(s) num_batches; "
        "valid keys: seed, batch_sizes, num_batches"
    ]
    assert not out.exists()


def test_the_nested_map_is_a_config_and_its_absent_fields_stay_absent():
    config = EscapeConfig.from_dict(presets.QUICK["escape"])
    assert isinstance(config.map, EscapeMapConfig) and config.map.num_paths is None and config.models is None
    assert "num_paths" not in config.to_dict()["map"] and "models" not in config.to_dict()


def test_a_stage_accepts_its_config_or_the_entry():
    """Stage functions take their config type; the plain entry (scripts, tests) is built into it."""
    st = Stage("grad_norm", lambda c: {"data": {"seed": c.seed}}, config_of("grad_norm", presets.QUICK["grad_norm"]))
    assert st.fn(st.config)["data"] == {"seed": 0}


# -- data --------------------------------------------------------------------------------------------------------


def _grad_norm_data():
    return {"problem": "p", "n": 4, "rows": [{"B": 1, "value": 1.0, "stderr": 0.1}], "full_grad_norm": 0.5}


def test_data_that_conforms_has_no_mismatch():
    assert mismatches("grad_norm", _grad_norm_data()) == []


def test_a_renamed_key_and_a_wrong_type_are_named():
    data = _grad_norm_data()
    data["rows"][0]["std_err"] = data["rows"][0].pop("stderr")
    data["n"] = "four"
    assert sorted(mismatches("grad_norm", data)) == [
        "grad_norm.n: int expected, got str",
        "grad_norm.rows[0]: missing key 'stderr'",
        "grad_norm.rows[0]: unknown key 'std_err'",
    ]


def test_an_optional_part_may_be_absent_or_none_but_not_wrong():
    part = {"problem": "p", "sampler": "s", "key_observable": "loss", "variants": {}}
    assert mismatches("fidelity", {"config": {}, "wall_s": 1.0}) == []
    assert mismatches("fidelity", {"config": {}, "wall_s": 1.0, "escape": None, "training": part}) == []
    assert mismatches("fidelity", {"config": {}, "wall_s": 1.0, "training": {"problem": "p"}}) == [
        "fidelity.training: missing key 'key_observable'",
        "fidelity.training: missing key 'sampler'",
        "fidelity.training: missing key 'variants'",
    ]


def test_unknown_stage_is_named():
    with pytest.raises(ValueError, match="unknown stage 'drfit'; valid: drift"):
        mismatches("drfit", {})
    with pytest.raises(ValueError, match="unknown stage 'drfit'; valid: drift"):
        config_of("drfit", {})


# -- the pipeline holds the stages to their types -----------------------------------------------------------------


def test_a_stage_whose_data_departs_from_its_type_is_refused_with_where(tmp_path):
    """A key it lacks is named (an unknown one, ``std_err``, is allowed: no consumer reads it)."""
    from analysis.pipeline import run_stage

    renamed = {"problem": "p", "n": 4, "rows": [{"B": 1, "value": 1.0, "std_err": 0.1}], "full_grad_norm": 0.5}
    st = Stage("grad_norm", lambda c: {"data": renamed}, {"seed": 0})
    want = r"stage 'grad_norm' returned data .* \(kept at .*\): grad_norm.rows\[0\]: missing key 'stderr'$"
    with pytest.raises(TypeError, match=want):
        run_stage(st, tmp_path, log=lambda m: None)
    assert len(list(tmp_path.glob("stages/grad_norm-*.json"))) == 1  # the computation is not lost


def test_a_cached_result_of_another_shape_is_recomputed(tmp_path):
    """A cache file written by code whose data had another shape (same config, so the same file) is set aside with
    one line and the stage runs again."""
    from analysis.pipeline import run_stage

    good = _grad_norm_data()
    old = dict(good) | {"rows": [{"B": 1, "mean": 1.0, "stderr": 0.1}]}
    lines: list[str] = []
    run_stage(Stage("grad_norm", lambda c: {"data": good}, {"seed": 0}), tmp_path, log=lines.append)
    json_path = next(tmp_path.glob("stages/grad_norm-*.json"))
    meta = json.loads(json_path.read_text())
    from analysis.pipeline import data_checksum

    meta["data"], meta["checksums"]["data"] = old, data_checksum(old)
    json_path.write_text(json.dumps(meta))
    res = run_stage(Stage("grad_norm", lambda c: {"data": good}, {"seed": 0}), tmp_path, log=lines.append)
    assert not res.cached and res.data == good
    assert len(lines) == 1 and "is not of the stage's type" in lines[0] and "missing key 'value'" in lines[0]
    assert list(tmp_path.glob("stages/*.corrupt"))
