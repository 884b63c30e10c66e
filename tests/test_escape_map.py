"""The escape map alone (``analysis.escape_map``): the stage's layout, C5 read from it, resume after every point."""

import copy
from typing import cast

import pytest

import sde_sam as ss
from analysis import escape_map, stages
from analysis.presets import preset
from paper_checks import escape as c5
from sde_sam._io import load_result
from stage_types import Results


def _cfg() -> dict:
    cfg = copy.deepcopy(preset("quick")["escape"])
    cfg["batch_size"] = 2  # m-SAM at m = 1 and SAM (m = B = 2): two programs a side
    cfg["map"].update(etas=[0.05], rho_lambdas=[0.4, 1.6], num_runs=16, steps=20)
    return cfg


def _counted(monkeypatch) -> list:
    calls = []
    real = ss.run_discrete

    def run_discrete(*args, **kwargs):
        calls.append(kwargs["eta"])
        return real(*args, **kwargs)

    monkeypatch.setattr(stages.ss, "run_discrete", run_discrete)
    return calls


def test_the_map_alone_is_read_by_c5_and_a_rerun_keeps_its_points(tmp_path, monkeypatch):
    calls = _counted(monkeypatch)
    cfg = _cfg()
    data = escape_map.run(cfg, tmp_path, "test", log=lambda s: None)
    ms = [1, 2]
    assert len(calls) == 2 * len(ms)
    assert [(p["eta"], p["rho_lambda"]) for p in data["map"]["points"]] == [(0.05, 0.4), (0.05, 1.6)]
    assert sorted(r["m"] for r in data["map"]["points"][0]["rows"].values()) == ms
    res = c5.evaluate({"escape": data})
    assert res.status in ("PASS", "FAIL", "INCONCLUSIVE") and "rho*lambda <= 0.5" in res.format()
    saved = load_result(tmp_path / "escape_map")[1]
    assert saved["map"] == data["map"] and saved["config"]["map"]["rho_lambdas"] == [0.4, 1.6]
    assert c5.evaluate(cast(Results, {"escape": saved})).format() == res.format()  # the file as C5 reads it
    calls.clear()
    again = escape_map.run(cfg, tmp_path, "test", log=lambda s: None)
    assert calls == [] and again["map"] == data["map"]


def test_an_interrupted_map_resumes_after_its_last_point(tmp_path, monkeypatch):
    """The file written after the first point is all a killed run leaves: the rerun computes only the second
    point, and the map equals an uninterrupted one (common random numbers: a point does not depend on others)."""
    calls = _counted(monkeypatch)
    cfg = _cfg()

    class Killed(Exception):
        pass

    real = stages.escape_map

    def killed_after_one(*args, on_point, **kwargs):
        def once(points):
            on_point(points)
            raise Killed

        return real(*args, on_point=once, **kwargs)

    monkeypatch.setattr(escape_map, "escape_map", killed_after_one)
    with pytest.raises(Killed):
        escape_map.run(cfg, tmp_path / "a", "test", log=lambda s: None)
    monkeypatch.setattr(escape_map, "escape_map", real)
    calls.clear()
    resumed = escape_map.run(cfg, tmp_path / "a", "test", log=lambda s: None)
    assert len(calls) == 2  # the second point's two values of m
    whole = escape_map.run(cfg, tmp_path / "b", "test", log=lambda s: None)
    assert resumed["map"] == whole["map"]


def test_a_map_of_another_config_is_not_reused(tmp_path, monkeypatch):
    calls = _counted(monkeypatch)
    cfg = _cfg()
    escape_map.run(cfg, tmp_path, "test", log=lambda s: None)
    other = copy.deepcopy(cfg)
    other["map"]["num_runs"] = 8
    calls.clear()
    data = escape_map.run(other, tmp_path, "test", log=lambda s: None)
    assert len(calls) == 4 and data["map"]["num_runs"] == 8


def test_the_regime_preset_has_batch_noise_and_stays_inside_the_first_order_regime(tmp_path):
    """``--preset regime``: B < n (batch noise), every rho*lambda but the last inside C5's first-order limit, and
    its model runs on the map at a small size from its own number of paths."""
    from analysis.presets import ESCAPE_REGIME

    cfg = copy.deepcopy(ESCAPE_REGIME)
    mp = cfg["map"]
    assert cfg["batch_size"] < cfg["n"] and mp["model"] == ["expected", "leading"]
    assert [r <= mp["theory_rho_lambda"] for r in mp["rho_lambdas"]] == [True] * (len(mp["rho_lambdas"]) - 1) + [False]
    cfg["batch_size"] = 2
    mp.update(etas=[0.05], rho_lambdas=[0.4], num_runs=8, num_paths=4, steps=20)
    data = escape_map.run(cfg, tmp_path, "test", log=lambda s: None)
    assert data["map"]["model"] == "expected/leading" and data["B"] == 2 and data["map"].get("num_paths") == 4
    assert c5.evaluate({"escape": data}).status in ("PASS", "FAIL", "INCONCLUSIVE")
