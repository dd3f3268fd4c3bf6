"""pytest-joules: energy regression tests for LLM inference.

This module stays import-light on purpose: the pytest plugin imports the package on every
pytest run, so nothing heavy (numpy, scipy, torch) may be imported here.
"""

__version__ = "0.1.0"

from . import _aliases

_aliases.install()  # the module paths of 0.1 (pytest_joules.workload, ...) keep working
