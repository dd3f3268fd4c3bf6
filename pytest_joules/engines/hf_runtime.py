"""How the hf engine decodes: `graphs` (static KV cache, decode step compiled into CUDA graphs) or
`eager` (transformers' plain `generate`), the names of the simulator's `runtime` option.

What transformers offers (read in the sources of 4.47.0, 4.57.3 and 5.24.0):

- `generate(cache_implementation="static")` pre-allocates the KV cache to the call's length. With
  a static cache on CUDA, `generate` compiles the model's forward for the decode steps only
  (`_valid_auto_compile_criteria`, `get_compiled_call`), with `generation_config.compile_config`,
  a `CompileConfig` whose default mode is "reduce-overhead": inductor kernels replayed as CUDA
  graphs. The prefill stays eager, so a new prompt length costs no compilation. This arrived in
  4.47 (`CompileConfig`); the hf extra allows 4.45, where `graphs` falls back to eager.
- Compiling `model.forward` by hand (the older docs' recipe) compiles the prefill too: a graph per
  prompt length, and CUDA graphs of a static-cache prefill are known to fail (cache_utils). Not done.

On the CPU, `graphs` means the static cache without compilation: CUDA graphs do not exist there,
transformers itself compiles only on accelerators, and inductor's C++ build of even the tiny test
model takes 10-30 s per shape on a 2-core runner (benchmarks/hf_runtime.py), longer than the
whole CPU test of the engine. The static-cache code path, the one CUDA runs, is what CI tests.

Compilation and graph capture happen in `prepare` (called by measure() before the warm-up, never
inside a window): every batch shape of the workload runs twice, since a CUDA graph is recorded
on a shape's second call. `compiles()` counts dynamo's graphs, so a run that compiled anyway says
so in its problems.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

RUNTIMES = ("graphs", "eager")
#: the smallest transformers with CompileConfig and the compiled decode step in `generate`
GRAPHS_SINCE = (4, 47)
#: dynamo's limit of recompilations per function (8 by default): a sweep of many shapes could
#: reach it, and past it dynamo runs the forward eagerly without a word
RECOMPILE_LIMIT = 256


@dataclass
class Runtime:
    """The runtime a model runs with: `name` is what ran ("graphs" or "eager"), `compile` whether
    the decode step is compiled (CUDA graphs), `note` why it differs from what was asked."""

    name: str
    compile: bool = False
    note: str = ""


def parse_runtime(value: Any) -> str | None:
    """The `runtime` engine option: None (the engine's default), "graphs" or "eager"."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text not in RUNTIMES:
        raise ConfigError(
            f"hf engine option runtime must be graphs (static KV cache and CUDA graphs) or eager "
            f"(plain generate), got {value!r}"
        )
    return text


def version_tuple(version: str) -> tuple[int, int]:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def compile_unavailable(transformers_version: str, torch: Any, cuda: bool) -> str | None:
    """Why the decode step cannot be compiled here (None: it can, as far as can be told without trying)."""
    if not cuda:
        return None  # the CPU runs the static cache uncompiled by design (module docstring)
    if version_tuple(transformers_version) < GRAPHS_SINCE:
        return (f"transformers {transformers_version} cannot compile generate's decode step (CompileConfig "
                "arrived in 4.47); pip install 'transformers>=4.47'")
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile; install torch>=2.1"
    try:
        from torch.utils._triton import has_triton
    except ImportError:  # an older torch: let the probe find out
        return None
    if not has_triton():
        return "torch.compile on CUDA needs triton, which is not installed (pip install triton)"
    return None


def generation_kwargs(runtime: Runtime) -> dict[str, Any]:
    """The GenerationConfig settings of a runtime."""
    if runtime.name == "eager":
        return {}
    kwargs: dict[str, Any] = {"cache_implementation": "static"}
    if runtime.compile:
        from transformers import CompileConfig

        # fullgraph=False: a graph break costs a second CUDA graph, not a failed run
        kwargs["compile_config"] = CompileConfig(fullgraph=False, mode="reduce-overhead")
    else:
        from transformers import GenerationConfig

        if hasattr(GenerationConfig(), "disable_compile"):  # 4.50+: say it, whatever the device
            kwargs["disable_compile"] = True
    return kwargs


def fit_cache(model: Any, length: int, last: int | None) -> int:
    """Make the next static-cache `generate` size its cache to `length` positions.

    transformers keeps what it allocated for the longest call so far (4.x reuses `model._cache`
    while it is long enough; 5.x sizes new caches to `_previous_max_cache_length` at least). A
    static cache is attended over in full, masked, so a workload after a longer one would do more
    work and its energy would depend on the order of the tests. Returns the length now set.
    """
    if last is not None and last != length:
        if hasattr(model, "_cache"):
            del model._cache
        if hasattr(model, "_previous_max_cache_length"):
            model._previous_max_cache_length = -1
    return length


def first_line(exc: BaseException) -> str:
    """`Type: first line of the message`: torch's compile errors run to pages."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


def compiles() -> int:
    """How many graphs dynamo has compiled in this process so far."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return 0
    return int(counters["stats"]["unique_graphs"])


def cudagraph_skips() -> int:
    """How many compiled graphs inductor ran without CUDA graphs (it only logs why)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return 0
    return int(counters["inductor"]["cudagraph_skips"])


def raise_recompile_limit(torch: Any) -> None:
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # renamed in torch 2.6
        if hasattr(config, name) and getattr(config, name) < RECOMPILE_LIMIT:
            setattr(config, name, RECOMPILE_LIMIT)
