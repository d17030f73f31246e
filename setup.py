"""setuptools entry for the one thing pyproject.toml cannot say: the cffi module."""

from setuptools import setup

setup(cffi_modules=["cffi_build.py:ffibuilder"])
