"""The statistics every recorded ensemble shares (sde_sam/_ensemble.py): runs, paths and training records count a
diverged member and never average it in, and none gives a standard error from one member."""

from __future__ import annotations

import numpy as np
import pytest

import sde_sam as ss
from sde_sam import train
from sde_sam._ensemble import Ensemble


def _record(values, diverged):
    cfg = train.TrainConfig(batch_size=8, eta=0.1, steps=2, every=1, seeds=tuple(range(len(diverged))))
    return train.TrainRecord(cfg, np.arange(values.shape[1]), {"loss": values}, np.asarray(diverged), {})


def test_runs_paths_and_training_records_share_one_ensemble():
    assert issubclass(ss.Runs, Ensemble) and issubclass(ss.Paths, Ensemble) and issubclass(train.TrainRecord, Ensemble)


def test_a_diverged_seed_is_counted_and_never_averaged_in():
    values = np.array([[1.0, 2.0], [3.0, 6.0], [np.nan, np.nan]])
    rec = _record(values, [False, False, True])
    assert rec.num_diverged == 1 and rec.num_runs == 3
    np.testing.assert_array_equal(rec.mean("loss"), [2.0, 4.0])
    # two-pass standard error by hand: std([1, 3], ddof=1) / sqrt(2) = 1, std([2, 6], ddof=1) / sqrt(2) = 2
    np.testing.assert_allclose(rec.stderr("loss"), [1.0, 2.0])


def test_one_seed_has_no_standard_error():
    """A training record of one kept seed used to report a standard error of 0: a silent wrong number."""
    rec = _record(np.array([[1.0, 2.0], [np.nan, np.nan]]), [False, True])
    with pytest.raises(ValueError, match="at least 2 non-diverged runs"):
        rec.stderr("loss")
    with pytest.raises(KeyError, match="'accuracy' was not recorded"):
        rec.mean("accuracy")


def test_mean_stderr_is_two_pass_and_has_no_standard_error_from_one_value():
    """The one mean ± s.e. helper the studies, figures and checks share: ``std(ddof=1) / sqrt(n)``; NaN, never 0,
    from one value (a standard error of 0 would read as an exact number)."""
    v = np.array([[1.0, 10.0], [3.0, 14.0], [5.0, 18.0]])
    mean, se = ss.mean_stderr(v)
    np.testing.assert_allclose(mean, [3.0, 14.0])
    np.testing.assert_allclose(se, [2.0 / np.sqrt(3), 4.0 / np.sqrt(3)])  # std [2, 4] by hand
    np.testing.assert_allclose(ss.mean_stderr(v, axis=1)[0], [5.5, 8.5, 11.5])
    mean, se = ss.mean_stderr([7.0])
    assert float(mean) == 7.0 and np.isnan(se)
    # a large offset: the two-pass form keeps the spread (a one-pass sum of squares loses it in float64)
    np.testing.assert_allclose(ss.mean_stderr(1e9 + np.array([0.0, 1.0, 2.0]))[1], 1.0 / np.sqrt(3), rtol=1e-6)
