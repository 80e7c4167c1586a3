"""cffi builder for the C kernel (out-of-line API mode); named in setup.py's cffi_modules.

The cdef is the part of csrc/softmax_ce.h between its cdef markers, so declarations live in one place.
The row kernels (csrc/kernel_template.h) are compiled once per logit type and instruction set (and
bfloat16's once more, for AVX512_BF16): this builder writes the small translation unit of each pair,
and csrc/dispatch.c picks the instruction set at run time.

SOFTMAX_CE_C_EXTRA_CFLAGS, if set, holds more flags (split as a shell would) for both compiling and
linking, after the ones below; CI's sanitizer builds (.ci/sanitize) pass -fsanitize=... through it.
"""
import os
import pathlib
import platform
import shlex
import sys

from cffi import FFI

CSRC = pathlib.Path(__file__).resolve().parent.parent / "csrc"
GENERATED = pathlib.Path("build") / "softmax_ce_c_kernels"
TYPES = ["f32", "f64", "f16", "bf16"]
# dispatch.c expects the x86-64 ones exactly when it is compiled for x86-64
ISAS = ["baseline", "avx2", "avx512"] if platform.machine().lower() in ("x86_64", "amd64") else ["baseline"]
# (instruction set, type) pairs beyond every type's ISAS: bfloat16's rounding by AVX512_BF16
EXTRA_KERNELS = [("avx512bf16", "bf16")] if "avx512" in ISAS else []


def read_cdef(header):
    text = header.read_text()
    begin, end = "/* cdef-begin */", "/* cdef-end */"
    return text[text.index(begin) + len(begin):text.index(end)]


def relative(path):
    """setuptools wants source paths relative to the directory it builds from."""
    return os.path.relpath(path)


def kernel_sources():
    """One translation unit per (instruction set, type): an isa_*.h, a type_*.h, the template."""
    GENERATED.mkdir(parents=True, exist_ok=True)
    sources = []
    for isa, type_name in [(isa, type_name) for isa in ISAS for type_name in TYPES] + EXTRA_KERNELS:
        path = GENERATED / f"kernel_{type_name}_{isa}.c"
        text = f'#include "isa_{isa}.h"\n#include "type_{type_name}.h"\n#include "kernel_template.h"\n'
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        sources.append(relative(path))
    return sources


EXTRA_FLAGS = shlex.split(os.environ.get("SOFTMAX_CE_C_EXTRA_CFLAGS", ""))

ffibuilder = FFI()
ffibuilder.cdef(read_cdef(CSRC / "softmax_ce.h"))
ffibuilder.set_source(
    "softmax_ce_c._kernel",
    '#include "softmax_ce.h"',
    sources=[relative(CSRC / "dispatch.c"), relative(CSRC / "thread_pool.c")] + kernel_sources(),
    include_dirs=[relative(CSRC)],
    depends=[relative(header) for header in sorted(CSRC.glob("*.h"))],  # rebuild when a header changes
    libraries=[] if sys.platform == "win32" else ["m", "pthread"],
    # no -ffast-math: it would break NaN and -inf handling. -fno-trapping-math only says that no FP
    # trap is ever enabled, which lets the compiler turn the selects of the row loops into vector
    # blends; NaN and inf results are unchanged. -ffp-contract=off: a fused multiply-add the code
    # did not ask for makes one value computed twice differ (max - softcap * tanh(x / softcap) is
    # then not 0 at the max); vector_exp.h asks for its FMAs explicitly. -falign-loops=32: every
    # loop starts on 32 bytes, so that a hot loop's speed does not move with the size of unrelated
    # code before it (on Zen 3 the row max took 1.6x its time with the out= gradient, 8192x1000,
    # where a smaller exp loop had moved it; the flag alone measured 0.98-1.02).
    extra_compile_args=(["-O3", "-fno-trapping-math", "-ffp-contract=off", "-falign-loops=32"]
                        if sys.platform != "win32" else [])
    + EXTRA_FLAGS,
    extra_link_args=EXTRA_FLAGS,  # a sanitizer's runtime must be linked as well as compiled for
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
