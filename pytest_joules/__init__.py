"""pytest-joules: energy regression tests for LLM inference.

This module stays import-light on purpose: the pytest plugin imports the package on every
pytest run, so nothing heavy (numpy, scipy, torch) may be imported here.
"""

__version__ = "0.1.0"
