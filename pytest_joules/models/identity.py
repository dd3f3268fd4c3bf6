"""Which device and engine a fitted model was fitted on, so it judges nothing else.

`joules fit --save` (from a results file) and `joules calibrate --save` write the fingerprint of
the runs the model was fitted to (store/fingerprint.py: GPU, power limit, driver, engine kind,
version, model, dtype, runtime) into the model file. The plugin uses a model only for a session
of the same fingerprint: a model fitted on the graphs runtime predicts an eager run 2-3 times too
low, and `--joules-model-tolerance` would fail the session for that, not for the energy. A model
without a fingerprint (fitted from a CSV, or saved before 0.2) is used as before.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..store.fingerprint import differences, fingerprint


def of_results(engine: Mapping[str, Any], device: Mapping[str, Any], simulated: bool) -> dict[str, Any] | None:
    """The fingerprint a model fitted to these runs records; None when the runs do not say."""
    if not engine and not device:
        return None
    return fingerprint(engine, device, simulated)


def recorded(data: Any) -> dict[str, Any] | None:
    """The fingerprint a model document records (None: a CSV fit, or a file from before 0.2)."""
    fp = data.get("fingerprint") if isinstance(data, dict) else None
    return fp if isinstance(fp, dict) else None


def refusal(path: Any, data: Any, session: Mapping[str, Any]) -> str | None:
    """Why the model file at `path` must not judge this session; None when it may."""
    fp = recorded(data)
    if fp is None or fp == session:
        return None
    what = "; ".join(differences(fp, session, then="model")) or "its fingerprint differs"
    return (f"fitted model {path} was fitted on another device or engine ({what}); it is not used: "
            "fit one for this one with `joules calibrate ... --save` or `joules fit RESULTS --save`")
