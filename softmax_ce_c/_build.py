"""cffi builder for the C kernel (out-of-line API mode); named in setup.py's cffi_modules.

The cdef is the part of csrc/softmax_ce.h between its cdef markers, so declarations live in one place.
"""
import os
import pathlib
import sys

from cffi import FFI

CSRC = pathlib.Path(__file__).resolve().parent.parent / "csrc"
SOURCES = ["kernel_f32.c", "kernel_f64.c", "kernel_f16.c", "kernel_bf16.c"]


def read_cdef(header):
    text = header.read_text()
    begin, end = "/* cdef-begin */", "/* cdef-end */"
    return text[text.index(begin) + len(begin):text.index(end)]


def relative(path):
    """setuptools wants source paths relative to the directory it builds from."""
    return os.path.relpath(path)


ffibuilder = FFI()
ffibuilder.cdef(read_cdef(CSRC / "softmax_ce.h"))
ffibuilder.set_source(
    "softmax_ce_c._kernel",
    '#include "softmax_ce.h"',
    sources=[relative(CSRC / name) for name in SOURCES],
    include_dirs=[relative(CSRC)],
    libraries=[] if sys.platform == "win32" else ["m"],
    # no -ffast-math: it would break NaN and -inf handling
    extra_compile_args=["-O3"] if sys.platform != "win32" else [],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
