"""The instruction set is chosen once from the CPU's features; SOFTMAX_CE_C_ISA forces a lower one.
(conftest.py runs every other test once per instruction set this CPU has.)"""
import os
import platform
import subprocess
import sys

import pytest

import softmax_ce_c
from conftest import ALL_ISAS, DEFAULT_ISA, available_isas
from softmax_ce_c._kernel import ffi, lib


def fresh_process(environment_value):
    """(stdout, stderr) of a new process that imports the package with SOFTMAX_CE_C_ISA set and prints
    instruction_set()."""
    package_parent = os.path.dirname(os.path.dirname(softmax_ce_c.__file__))  # the one under test
    environment = dict(os.environ, SOFTMAX_CE_C_ISA=environment_value, PYTHONPATH=package_parent)
    code = "import softmax_ce_c; print(softmax_ce_c.instruction_set())"
    # from tests/: the source tree's softmax_ce_c (no compiled kernel) must not shadow the one tested
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True,
                            check=True, cwd=os.path.dirname(__file__))
    return result.stdout.strip(), result.stderr


def isa_in_fresh_process(environment_value):
    isa, errors = fresh_process(environment_value)
    assert "Warning" not in errors
    return isa


def test_default_is_the_best_the_cpu_has():
    assert DEFAULT_ISA == available_isas()[0]
    assert "baseline" in available_isas()


@pytest.mark.parametrize("forced", ALL_ISAS)
def test_environment_variable_forces_a_lower_level(forced):
    available = available_isas()
    at_or_below = [isa for isa in ALL_ISAS[ALL_ISAS.index(forced):] if isa in available]
    assert isa_in_fresh_process(forced) == at_or_below[0]


@pytest.mark.parametrize("unknown", ["sse9", "AVX2", " avx2"])
def test_an_unknown_level_forces_nothing_and_is_warned_of(unknown):
    isa, errors = fresh_process(unknown)
    assert isa == DEFAULT_ISA
    assert f"RuntimeWarning: SOFTMAX_CE_C_ISA={unknown!r} is not one of {', '.join(ALL_ISAS)}" in errors


def test_the_build_names_its_instruction_sets_best_first():
    x86_64 = platform.machine() in ("x86_64", "AMD64")
    expected = ("avx512bf16", "avx512", "avx2", "baseline") if x86_64 else ("baseline",)
    assert softmax_ce_c._api.INSTRUCTION_SETS == expected
    assert lib.sce_isa_name(-1) == ffi.NULL and lib.sce_isa_name(len(expected)) == ffi.NULL


def test_an_empty_level_forces_nothing_silently():
    assert isa_in_fresh_process("") == DEFAULT_ISA


def test_selecting_an_unknown_level_fails_and_changes_nothing(isa):
    assert lib.sce_select_isa(b"sse9") == lib.SCE_ERR_ARGUMENT
    assert lib.sce_select_isa(ffi.NULL) == lib.SCE_ERR_ARGUMENT
    assert softmax_ce_c.instruction_set() == isa
