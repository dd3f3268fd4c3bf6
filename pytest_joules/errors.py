"""Exceptions with messages meant for people: each names the thing that is wrong and the fix."""

from __future__ import annotations



class JoulesError(Exception):
    """Base class for every error pytest-joules raises on purpose."""


class ConfigError(JoulesError):
    """A bad option, marker argument, engine or meter name. Shown as a usage error."""


class DataError(JoulesError):
    """A bad input file (measurements CSV, results JSON, baseline, model file)."""


class WorkloadMismatch(JoulesError):
    """An engine did not run exactly the workload it was asked to run."""


class EngineUnavailable(JoulesError):
    """An engine cannot run here (missing package, no GPU, missing model files)."""


class MeterUnavailable(JoulesError):
    """A meter cannot read energy here (no NVML, no counter, no permission)."""


class InvalidMeasurement(JoulesError):
    """A measurement window produced no trustworthy reading (zero delta, counter reset...)."""
