"""Marks the wheel as platform-specific: it carries the compiled reflow_bindings library.

The rest of the metadata is in pyproject.toml; build with bindings/build-python.sh.
"""
from setuptools import setup
from setuptools.dist import Distribution


class BinaryDistribution(Distribution):
    """A distribution with a native library (not a pure-Python wheel)."""

    def has_ext_modules(self):
        return True


setup(distclass=BinaryDistribution)
