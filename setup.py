"""Build the C kernel through cffi; everything else is in pyproject.toml."""
from setuptools import setup

setup(cffi_modules=["softmax_ce_c/_build.py:ffibuilder"])
