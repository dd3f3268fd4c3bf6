"""The suite decides per test whether it runs "in CI": with the `CI` environment variable set (as
.ci/run's CI sets it), the plugin fails a test without a baseline (plugin/missing.py), which the
inner pytest runs of most tests are not about. Tests of that rule set it themselves."""

import pytest


@pytest.fixture(autouse=True)
def _not_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
