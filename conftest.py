"""Every ``python`` code block of README.md and docs/*.md is a test (sybil), run in a fresh namespace.

A block that only illustrates (minutes of work, or several hosts) is preceded by ``<!-- skip: next -->`` and says
what it costs. Each block must be self-contained: nothing carries over from the block before it.
"""

from __future__ import annotations

from typing import Any

import pytest
from sybil import Sybil
from sybil.evaluators.python import pad
from sybil.parsers.markdown import CodeBlockParser, SkipParser


def _run_alone(example: Any) -> None:
    """Execute one code block in a namespace of its own (the block must define everything it uses)."""
    source = pad(example.parsed, example.line + example.parsed.line_offset)
    exec(compile(source, example.path, "exec", dont_inherit=True), {"__name__": "__docs__"})


pytest_collect_file = Sybil(
    parsers=[CodeBlockParser(language="python", evaluator=_run_alone), SkipParser()],
    patterns=["README.md", "docs/*.md"],
).pytest()


# The default suite's budget (README's test command within 10 minutes on 2 cores): these are correct and kept, but
# each costs over 10 s of compilation on a 2-core machine, so they run in the slow pass (`pytest -m slow`, which
# CI runs after the default suite). Measured with `--durations`; a node id here that no longer exists moves nothing.
SLOW_FOR_TIME = (
    "docs/estimators.md::",
    "docs/design.md::",
    "docs/scaling.md::",
    "tests/test_compiles.py::test_many_programs_in_one_process_stay_below_the_map_limit",
    "tests/test_traced.py::test_a_sweep_over_a_rules_hyperparameters_compiles_no_more_than_its_first_point",
    "tests/test_micro_batch.py::test_rw_sam_exact_score_form_equals_per_example_gradients[two-layers-relative-scores]",
    "tests/test_micro_batch.py::test_low_rank_form_equals_the_generic_step[two-layers-m-SAM-m4]",
    "tests/test_noise.py::test_expected_batch_grad_norm_against_enumeration[True]",
    "tests/test_parallel.py::test_two_devices_equal_one_device",
    "tests/test_problems.py::test_digits_mlp_parameter_paths_and_accuracy",
    "tests/test_problems.py::test_builtin_problem_losses_and_chunked_per_example_grads[user]",
    "tests/test_problems.py::test_builtin_problem_losses_and_chunked_per_example_grads[teacher_student]",
    "tests/test_variants.py::test_rw_one_probe_is_the_unchanged_stream_and_relative_scores_are_scale_free",
    "tests/test_sde.py::test_one_key_gives_common_random_numbers_across_variants",
    "tests/test_sde.py::test_expected_drift_monte_carlo_is_unbiased_for_finite_difference_rw_sam",
    "tests/test_sde.py::test_names_build_the_same_model_as_the_objects",
    "tests/test_sde.py::test_expected_micro_batch_grad_norm_brute_force[WithReplacement]",
    "tests/test_sde.py::test_supports_says_exactly_where_a_choice_is_defined[rw-sam]",
    "tests/test_sde.py::test_general_drift_monte_carlo_stderr",
    "tests/test_once.py::test_rademacher_probe_is_bit_t_of_the_word_stream_in_leaf_order",
    "tests/test_blocks.py::test_simulate_default_block_is_recorded_and_equals_the_explicit_block",
    "tests/test_runner.py::test_records_match_a_direct_replay_of_the_steps[RW-SAM]",
    "tests/test_runner.py::test_vmap_over_runs_equals_a_loop_over_runs",
    "tests/test_weak_order.py::test_discrete_moments_match_monte_carlo[SGD]",
    "tests/test_timing.py::test_serial_m_sam_equals_vmapped_m_sam",
)


@pytest.hookimpl(tryfirst=True)  # before `-m 'not slow'` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(SLOW_FOR_TIME):
            item.add_marker(pytest.mark.slow)
