"""Every test runs once per instruction set this CPU has (avx512bf16, avx512, avx2, baseline on
x86-64), so that each compiled copy of the kernel is held to the same reference."""
import pytest

from softmax_ce_c._api import INSTRUCTION_SETS
from softmax_ce_c._kernel import ffi, lib

ALL_ISAS = list(INSTRUCTION_SETS)
DEFAULT_ISA = ffi.string(lib.sce_isa()).decode()


def available_isas():
    available = [isa for isa in ALL_ISAS if lib.sce_select_isa(isa.encode()) == lib.SCE_OK]
    lib.sce_select_isa(DEFAULT_ISA.encode())
    return available


@pytest.fixture(autouse=True, params=available_isas())
def isa(request):
    assert lib.sce_select_isa(request.param.encode()) == lib.SCE_OK
    assert ffi.string(lib.sce_isa()).decode() == request.param
    yield request.param
    lib.sce_select_isa(DEFAULT_ISA.encode())
