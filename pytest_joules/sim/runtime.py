"""How the engine drives the GPU: an optimised runtime (`graphs`) or eager transformers (`eager`).

The step model (physics.py) says how long the GPU's kernels take. A real engine also spends host
time on every step: Python, kernel launches, sampling, the scheduler. While the host works the
GPU waits at near-idle power; whether that adds to the step or hides under it is the runtime's.

- `graphs`: an optimised engine (vLLM, TensorRT-LLM: CUDA graphs, in-flight batching), calibrated
  to public measurements of vLLM 0.11.1 on an H100 (data/mlenergy-v3-leaderboard.csv,
  docs/simulator.md). Its host schedules, prepares the inputs and takes the sampled tokens
  between the GPU's steps, 1.4 ms per step: the part of ML.ENERGY's inter-token latency at batch 8
  that the GPU's kernels do not explain (7.3 ms for Llama-3.1-8B, 8.2 ms for Qwen3-8B). Steps last
  GPU + host. An engine that overlaps its host with the GPU (TensorRT-LLM's overlap scheduler)
  would hide some of it: not measured. Its host varies little from run to run (TokenPowerBench's
  ten runs of vLLM differ by 0.2-0.9% in duration), so its speed states are a tenth of eager's.
- `eager`: transformers' eager `generate` (one kernel launch per op, static batches, a host
  sync every step). Calibrated to the H200 measurements in data/h200-hf-llama: about 13 ms per
  decode step for Llama-3.2-1B (16 layers) with the host in its fast state and 18-19 ms in its
  slow one, about 37 ms for Llama-3.1-8B (32 layers): the host's work grows with the layers.
  Eager kernels are unfused (norms, rotary, activations each read and write HBM), so the GPU
  also works less efficiently; `kernel_efficiency` scales the roofline's efficiency factors.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    name: str
    #: host seconds per engine step, independent of the batch: sampling, scheduler, bookkeeping
    host_step_s: float
    #: host seconds per layer per step: the launches of one layer's kernels
    host_layer_s: float
    #: host seconds per sequence in the step: the scheduler's and sampler's per-request work
    host_seq_s: float
    #: True: the host prepares step i+1 while the GPU runs step i (eager launches are asynchronous),
    #: so a step lasts max(GPU, host); False: the host works between the GPU's steps (schedule,
    #: prepare inputs, launch the graph, wait for the sampled tokens), so a step lasts GPU + host
    host_overlap: bool
    #: how much the host's speed varies (1: the H200's eager host, its two speed states and jitter)
    host_variability: float
    #: True: static batches (prefill a batch, decode it to the end, then the next: HF generate);
    #: False: TensorRT-LLM-style in-flight batching
    static_batching: bool
    #: multiplies the memory efficiency of the roofline (1.0: fused, tuned kernels)
    kernel_efficiency: float
    #: attention over a cache that is concatenated anew every step (read and written again)
    unfused_attention: bool
    #: the first run after the model loads: extra host seconds (lazy CUDA/cuBLAS initialisation,
    #: allocator growth, graph capture at a new shape) while the GPU waits
    first_run_extra_s: float
    #: ... and its host time per step is this many times slower (cold caches, lazy imports)
    first_run_host_factor: float
    #: rate (per second of run) and mean length of host hiccups: garbage collection, OS
    #: scheduling, a noisy neighbour on a virtual machine; the GPU waits through each
    hiccups_per_s: float
    hiccup_mean_s: float

    def host_seconds(self, layers: int) -> float:
        """Host seconds per step, before the per-sequence part."""
        return self.host_step_s + self.host_layer_s * layers

    def kv_traffic(self, heads: int, kv_heads: int) -> float:
        """HBM bytes moved per KV-cache byte attention needs (1: read once by a fused kernel)."""
        if not self.unfused_attention:
            return 1.0
        # read the cache (1), and the cache update of every step reads and writes it (2); SDPA
        # takes GQA heads as they are (no repeat_kv copy on CUDA), so heads do not count
        return 3.0


RUNTIMES = {
    "graphs": Runtime(
        name="graphs",
        host_step_s=1.4e-3,
        host_layer_s=0.0,  # one CUDA-graph replay launches every layer
        host_seq_s=0.0,
        host_overlap=False,
        host_variability=0.1,
        static_batching=False,
        kernel_efficiency=1.0,
        unfused_attention=False,
        first_run_extra_s=0.3,
        first_run_host_factor=1.0,
        hiccups_per_s=0.05,
        hiccup_mean_s=0.005,  # overlapped with GPU work most of the time: short stalls only
    ),
    "eager": Runtime(
        name="eager",
        host_step_s=0.5e-3,
        host_layer_s=0.78e-3,  # 16 layers: 13 ms/step fast state; 32 layers: 25.5 ms fast, 36 ms slow
        host_seq_s=0.0,
        host_overlap=True,
        host_variability=1.0,
        static_batching=True,
        kernel_efficiency=0.5,
        unfused_attention=True,
        first_run_extra_s=1.5,
        first_run_host_factor=2.0,
        hiccups_per_s=0.3,
        hiccup_mean_s=0.04,
    ),
}
DEFAULT_RUNTIME = "graphs"


def get_runtime(name: str) -> Runtime:
    runtime = RUNTIMES.get(str(name).strip().lower())
    if runtime is None:
        raise ConfigError(
            f"unknown sim runtime {name!r}; use graphs (an optimised engine with CUDA graphs, the "
            "default) or eager (transformers' eager generate)"
        )
    return runtime
