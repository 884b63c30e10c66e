"""The stage cache: atomic writes, resume after interruption, corrupted files detected and recomputed."""

import json
import os

import numpy as np
import pytest

from analysis import pipeline as _pipeline
from analysis.pipeline import AFTER_STAGE_HOOKS, Stage, run_stage, stage_path
from sde_sam import _io


class Counter:
    def __init__(self):
        self.calls = {}

    def stage(self, name):
        def fn(cfg):
            self.calls[name] = self.calls.get(name, 0) + 1
            rng = np.random.default_rng(cfg["seed"])
            return {
                "data": {"name": name, "value": float(rng.normal()), "list": [1, 2.5]},
                "arrays": {"x": rng.normal(size=(3, 4)), "i": np.arange(5)},
            }

        return fn


def _stages(counter):
    return [Stage("first", counter.stage("first"), {"seed": 1}), Stage("second", counter.stage("second"), {"seed": 2})]


def _run_all(stages, out, log=lambda m: None):
    return [run_stage(s, out, log=log) for s in stages]


def test_resume_after_interruption(tmp_path):
    c = Counter()
    stages = _stages(c)

    def interrupt(name):
        if name == "first":
            raise KeyboardInterrupt

    AFTER_STAGE_HOOKS.append(interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            _run_all(stages, tmp_path)
    finally:
        AFTER_STAGE_HOOKS.remove(interrupt)
    assert c.calls == {"first": 1}
    first_json = _io.result_paths(stage_path(tmp_path, stages[0]))[0]
    mtime = first_json.stat().st_mtime_ns
    res = _run_all(stages, tmp_path)
    assert c.calls == {"first": 1, "second": 1}  # the finished stage was loaded, not recomputed
    assert first_json.stat().st_mtime_ns == mtime
    assert res[0].cached and not res[1].cached
    # identical to an uninterrupted run in a fresh folder
    c2 = Counter()
    ref = _run_all(_stages(c2), tmp_path / "ref")
    for a, b in zip(res, ref, strict=False):
        assert a.data == json.loads(json.dumps(b.data))
        for k in b.arrays:
            np.testing.assert_array_equal(a.arrays[k], b.arrays[k])


def test_config_change_recomputes(tmp_path):
    c = Counter()
    s1 = Stage("first", c.stage("first"), {"seed": 1})
    s2 = Stage("first", c.stage("first"), {"seed": 3})
    assert stage_path(tmp_path, s1) != stage_path(tmp_path, s2)
    run_stage(s1, tmp_path, log=lambda m: None)
    run_stage(s1, tmp_path, log=lambda m: None)
    run_stage(s2, tmp_path, log=lambda m: None)
    assert c.calls == {"first": 2}


def test_result_carries_provenance(tmp_path):
    res = run_stage(Stage("first", Counter().stage("first"), {"seed": 1}), tmp_path, log=lambda m: None)
    meta = json.loads(res.path.read_text())
    for key in ("config", "seed", "git_revision", "provenance", "checksums", "config_hash", "wall_s"):
        assert key in meta
    assert meta["seed"] == 1 and "jax" in meta["provenance"]["versions"] and "device" in meta["provenance"]


def _corrupt_truncate_npz(json_path, npz_path):
    npz_path.write_bytes(npz_path.read_bytes()[:40])


def _corrupt_garble_json(json_path, npz_path):
    json_path.write_text(json_path.read_text()[:-30])


def _corrupt_change_data(json_path, npz_path):
    meta = json.loads(json_path.read_text())
    meta["data"]["value"] = 123.0
    json_path.write_text(json.dumps(meta))


def _corrupt_change_array(json_path, npz_path):
    with np.load(npz_path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["x"] = arrays["x"] + 1
    np.savez(npz_path, **arrays)


def _corrupt_json_not_an_object(json_path, npz_path):
    json_path.write_text("[]")


def _corrupt_checksums_null(json_path, npz_path):
    meta = json.loads(json_path.read_text())
    meta["checksums"] = None
    json_path.write_text(json.dumps(meta))


def _corrupt_checksums_string(json_path, npz_path):
    meta = json.loads(json_path.read_text())
    meta["checksums"] = "abc"
    json_path.write_text(json.dumps(meta))


def _corrupt_wall_not_a_number(json_path, npz_path):
    meta = json.loads(json_path.read_text())
    meta["wall_s"] = "slow"
    json_path.write_text(json.dumps(meta))


def _corrupt_sha_removed(json_path, npz_path):
    meta = json.loads(json_path.read_text())
    del meta["arrays_sha256"]
    json_path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "corrupt",
    [
        _corrupt_truncate_npz,
        _corrupt_garble_json,
        _corrupt_change_data,
        _corrupt_change_array,
        _corrupt_json_not_an_object,
        _corrupt_checksums_null,
        _corrupt_checksums_string,
        _corrupt_wall_not_a_number,
        _corrupt_sha_removed,
    ],
)
def test_corrupted_cache_is_reported_and_recomputed(tmp_path, corrupt):
    c = Counter()
    stage = Stage("first", c.stage("first"), {"seed": 1})
    good = run_stage(stage, tmp_path, log=lambda m: None)
    json_path, npz_path = _io.result_paths(stage_path(tmp_path, stage))
    corrupt(json_path, npz_path)
    messages = []
    res = run_stage(stage, tmp_path, log=messages.append)
    assert c.calls["first"] == 2
    assert len(messages) == 1 and "corrupted" in messages[0] and "first" in messages[0]
    assert not res.cached and res.data == good.data
    np.testing.assert_array_equal(res.arrays["x"], good.arrays["x"])
    assert list(tmp_path.glob("stages/*.corrupt"))  # the bad files are kept, nothing is lost
    assert run_stage(stage, tmp_path, log=messages.append).cached and len(messages) == 1


def test_a_second_corruption_keeps_the_first(tmp_path):
    c = Counter()
    stage = Stage("first", c.stage("first"), {"seed": 1})
    for _ in range(2):
        run_stage(stage, tmp_path, log=lambda m: None)
        json_path, _ = _io.result_paths(stage_path(tmp_path, stage))
        json_path.write_text("[]")
    run_stage(stage, tmp_path, log=lambda m: None)
    assert len(list(tmp_path.glob("stages/*.json.*.corrupt"))) == 2  # unique names: nothing overwritten


def test_records_carry_a_checksum(tmp_path):
    path = _io.save_result(tmp_path / "r", {"x": np.arange(4.0)}, {"seed": 0})
    assert len(json.loads(path.read_text())["arrays_sha256"]) == 64
    np.savez(tmp_path / "r.npz", x=np.arange(4.0) + 1)  # valid npz, wrong contents
    with pytest.raises(_io.CorruptResult, match="checksum"):
        _io.load_result(tmp_path / "r")
    (tmp_path / "r.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(_io.CorruptResult, match="unreadable"):
        _io.load_result(tmp_path / "r")


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    c = Counter()
    stage = Stage("first", c.stage("first"), {"seed": 1})
    good = run_stage(stage, tmp_path, log=lambda m: None)
    json_path, npz_path = _io.result_paths(stage_path(tmp_path, stage))
    before = (json_path.read_bytes(), npz_path.read_bytes())

    real_savez = np.savez

    def crashing_savez(fh, **arrays):  # writes part of the file, then the process "dies"
        real_savez(fh, **arrays)
        fh.truncate(20)
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crashing_savez)
    with pytest.raises(KeyboardInterrupt):
        run_stage(stage, tmp_path, log=lambda m: None, force=True)
    assert (json_path.read_bytes(), npz_path.read_bytes()) == before  # the previous result is intact
    assert [p.name for p in (tmp_path / "stages").iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.setattr(np, "savez", real_savez)
    res = run_stage(stage, tmp_path, log=lambda m: None)
    assert res.cached and res.data == good.data

    # a crash while writing the JSON of a fresh stage: no JSON appears, so the stage is not taken as done
    fresh = Stage("second", c.stage("second"), {"seed": 2})
    real_dumps = json.dumps

    def crashing_dumps(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(_io.json, "dumps", crashing_dumps)
    with pytest.raises(KeyboardInterrupt):
        run_stage(fresh, tmp_path, log=lambda m: None)
    monkeypatch.setattr(_io.json, "dumps", real_dumps)
    assert not _io.result_paths(stage_path(tmp_path, fresh))[0].exists()
    assert not run_stage(fresh, tmp_path, log=lambda m: None).cached


def test_git_revision_is_string_or_none():
    rev = _pipeline.git_revision()
    assert rev is None or (isinstance(rev, str) and len(rev) >= 7)
    assert os.path.exists(_pipeline.__file__)


# -- one resume mechanism -------------------------------------------------------------------------------------


def test_earlier_result_reads_reports_and_sets_aside(tmp_path):
    """``earlier_result``: nothing there -> None; a readable result -> it; an unreadable one -> None, one line naming
    the file, the bad file kept aside; an error ``load`` is not told to expect propagates."""
    from analysis.pipeline import earlier_result

    messages = []
    assert earlier_result(tmp_path / "r", messages.append) is None and not messages
    _io.save_result(tmp_path / "r", {}, {"config": {"a": 1}, "variants": {"SGD": 1}})
    assert earlier_result(tmp_path / "r", messages.append)["variants"] == {"SGD": 1} and not messages  # pyright: ignore[reportOptionalSubscript]
    (tmp_path / "r.json").write_text("{not json")
    assert earlier_result(tmp_path / "r", messages.append) is None
    assert len(messages) == 1 and "r.json" in messages[0] and "recomputing" in messages[0]
    assert list(tmp_path.glob("r.json.*.corrupt")) and not (tmp_path / "r.json").exists()
    _io.save_result(tmp_path / "r", {}, {"config": {}})

    def broken(path):
        raise RuntimeError("not a reading fault")

    with pytest.raises(RuntimeError):
        earlier_result(tmp_path / "r", messages.append, load=broken)


@pytest.mark.parametrize("study", ["fidelity", "training_vs_sde"])
def test_the_studies_resume_through_earlier_result(tmp_path, study):
    """The fidelity and training-vs-SDE studies: a summary of the same config is reused, another config's is not,
    an unreadable one is set aside and reported (not a crash, nothing lost)."""
    import importlib

    mod = importlib.import_module(f"analysis.{study}")
    key, where = ("config", tmp_path / "fidelity") if study == "fidelity" else ("preset_config", tmp_path)
    path = where if study == "fidelity" else tmp_path / "training_vs_sde"
    cfg = {"seed": 3}
    stored = {"escape": {"variants": {"SGD": {"x": 1}}}} if study == "fidelity" else {"variants": {"SGD": {"x": 1}}}
    _io.save_result(path, {}, {key: cfg, **stored})
    expected = {"escape": {"SGD": {"x": 1}}} if study == "fidelity" else {"SGD": {"x": 1}}
    assert mod._previous(where, cfg, print) == expected
    assert mod._previous(where, {"seed": 4}, print) == {}
    messages = []
    _io.result_paths(path)[0].write_text("[")
    assert mod._previous(where, cfg, messages.append) == {} and len(messages) == 1
    assert list(tmp_path.glob("*.corrupt"))


def test_non_finite_numbers_reach_consumers_as_floats(tmp_path):
    """JSON stores NaN and inf as strings; a stage's data hands them to its figures and checks as floats, computed
    or read from the cache alike (they once had to convert each cell themselves)."""
    stage = Stage("nans", lambda cfg: {"data": {"row": {"gap": float("nan"), "se": [float("inf"), 1.5]}}}, {"seed": 0})
    for cached in (False, True):
        res = run_stage(stage, tmp_path, log=lambda m: None)
        assert res.cached is cached
        gap, (se, ok) = res.data["row"]["gap"], res.data["row"]["se"]
        assert isinstance(gap, float) and np.isnan(gap) and se == float("inf") and ok == 1.5
