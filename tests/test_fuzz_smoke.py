"""A short run of the loader fuzzer (``tests/hostile_files.py``) in CI: mutated files for every loader, only the
pack's own errors.

Hypothesis draws a seed file and a list of mutations (200 per fast loader, 100 per generator format, which take
10-30 ms a file); a crash (any exception other than the loader's documented error) fails the test after
Hypothesis has shrunk it to the fewest mutations, and the report counts hangs. The full run (10,000 inputs per
loader) is ``python benchmarks/fuzz_loaders.py``.
"""

from __future__ import annotations

import logging

import pytest
from hostile_files import HANG_SECONDS, Report, build_targets, mutate, operations_strategy, run_one
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

INPUTS_PER_LOADER = 200
INPUTS_PER_GENERATOR_FORMAT = 100
TARGETS = {target.name: target for target in build_targets()}


@pytest.fixture(autouse=True)
def quiet_loaders():
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


@pytest.mark.parametrize("name", list(TARGETS))
def test_mutated_files_give_only_the_loaders_own_errors(name, tmp_path_factory):
    target = TARGETS[name]
    inputs = INPUTS_PER_GENERATOR_FORMAT if name.startswith("generator-") else INPUTS_PER_LOADER
    report = Report(name)
    path = tmp_path_factory.mktemp(name) / f"input{target.suffix}"

    @settings(
        max_examples=inputs,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(index=st.integers(0, len(target.seeds) - 1), operations=operations_strategy())
    def fuzz(index, operations):
        run_one(target, mutate(target.seeds[index], operations, target.seeds), path, report, reraise=True)

    fuzz()
    assert report.inputs >= inputs
    assert report.hangs == 0, f"{report.hangs} input(s) took longer than {HANG_SECONDS} s"
    assert report.refused > inputs // 2  # the mutations really damage the files
    assert len(report.messages) >= 3  # and reach several distinct checks


def test_mutation_is_deterministic_and_changes_the_file():
    seed = TARGETS["safetensors"].seeds[0]
    operations = [(0, 0.5, 3), (4, 0.1, 7)]
    assert mutate(seed, operations, [seed]) == mutate(seed, operations, [seed]) != seed
