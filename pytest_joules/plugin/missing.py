"""Tests without a baseline: what a run says and does about them, so a gate cannot pass unseen.

- In CI (the `CI` environment variable set to anything but empty/0/false/no/off, as GitHub
  Actions, GitLab CI and most others set it) a test without a baseline fails, and its failure
  gives the command that records it; `--joules-allow-new` (ini `joules_allow_new`) lets it pass
  as "new" there. Outside CI it passes as "new" unless `--joules-new-fails`.
- When the store holds no baselines at all for this device and engine but holds others' (another
  GPU, runtime, dtype, model), the summary names them: a run with `--joules-gpu H200` against H100
  baselines, or a CI runner with another GPU model, is not gated and says so.
  `--joules-require-baselines` fails every test of such a run.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ..values import FALSE_WORDS

if TYPE_CHECKING:
    from ..store.baselines import BaselineStore


def in_ci(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this run is CI: `CI` set to something other than empty, 0, false, no or off."""
    value = (os.environ if environ is None else environ).get("CI")
    return value is not None and value.strip().lower() not in ("", *FALSE_WORDS)


def base_command(args: Sequence[str], positional: Sequence[str]) -> list[str]:
    """The run's own command line without its test paths (they are replaced by the one test)."""
    left = list(positional)
    kept = []
    for arg in args:
        if arg in left:
            left.remove(arg)
            continue
        kept.append(arg)
    return kept


@dataclass
class Missing:
    """What the session knows about tests without a baseline."""

    #: `pytest` and the run's options, without test paths and with --joules-update-baselines
    command: list[str] = field(default_factory=lambda: ["pytest", "--joules", "--joules-update-baselines"])
    #: where the command runs, and the anchor that baseline keys are relative to
    invocation_dir: Path | None = None
    key_base: Path | None = None
    _others: list[str] | None = None

    @classmethod
    def from_config(cls, config: Any, key_base: Path | None) -> Missing:
        args = [str(a) for a in config.invocation_params.args]
        positional = [str(a) for a in (getattr(config.option, "file_or_dir", None) or [])]
        command = ["pytest", *base_command(args, positional)]
        if "--joules-update-baselines" not in command:
            command.append("--joules-update-baselines")
        return cls(command, Path(config.invocation_params.dir), key_base)

    def record_command(self, test: str) -> str:
        """The command that records one test's baselines; `test` is its key without a measurement's
        name (a test path relative to the anchor, then pytest's `::` parts)."""
        path, sep, rest = test.partition("::")
        if self.key_base is not None and self.invocation_dir is not None and sep:
            path = os.path.relpath(self.key_base / path, self.invocation_dir).replace(os.sep, "/")
        return shlex.join([*self.command, path + sep + rest])

    def others(self, store: BaselineStore, fp: Mapping[str, Any]) -> list[str]:
        """The store's baseline files of other identities, each with what differs from this one."""
        if self._others is None:
            self._others = []
            for path, recorded, count in store.inventory():
                if store.path_for(recorded) == store.path_for(fp):
                    continue
                diff = _compact(recorded, fp)
                shown = os.path.relpath(path, store.root.parent) if store.root.parent != path else str(path)
                self._others.append(f"{shown} ({count} baseline{'s' if count != 1 else ''}; {diff})")
        return self._others

    def note(self, store: BaselineStore, fp: Mapping[str, Any], describe: Callable[[Mapping[str, Any]], str]) -> str | None:
        """The summary's line when the store holds nothing for this identity (None when it does)."""
        if store.holds(fp):
            return None
        others = self.others(store, fp)
        if not others:
            return None
        return (f"{store.root} holds no baselines for this device and engine ({describe(fp)}), so its tests "
                f"were not gated; it holds {'; '.join(others)}. Record this one's with --joules-update-baselines, "
                "or make such a run fail with --joules-require-baselines")


def _compact(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """"gpu 'H100-SXM' (not 'H200'), runtime 'eager' (not 'graphs')": what a stored file differs in."""
    parts = []
    for section in ("device", "engine"):
        old, new = recorded.get(section) or {}, current.get(section) or {}
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                parts.append(f"{key} {old.get(key)!r} (not {new.get(key)!r})")
    return ", ".join(parts) or "same identity"
