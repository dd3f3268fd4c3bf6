"""The step model: time and energy of one engine step from the shapes it multiplies.

An engine step runs every active sequence through the model once: prefill sequences with all
their prompt tokens, decode sequences with one token each. Its work splits in two kernel groups
that run one after the other:

- dense (the linear layers and the LM head):
    FLOPs = 2 * tokens * block_params + 2 * logits * vocab * hidden
    bytes = weight bytes (all layers + LM head, read once per step)
          + tokens * activation bytes (GEMM inputs/outputs that go through HBM)
          + logits * vocab * 4 (fp32 logits)
- attention:
    FLOPs = 4 * layers * q_dim * pairs   (QK^T and PV over every (query, key) pair; causal)
    bytes = kv_bytes_per_token * (kv_read + kv_write)   (bf16 K and V of all layers)

Each group takes its roofline time, max(FLOPs / (peak * eff), bytes / (bandwidth * eff_mem)),
and the step adds a fixed overhead (CUDA-graph launch, scheduler, sampling):
    t = dense + attention + overhead

Power follows utilization between idle and board power:
    u_c = compute-busy time / t,  u_m = memory-busy time / t,  u_o = overhead / t
    P = P_idle + (P_board - P_idle) * min(1, W_C * u_c + W_M * u_m + W_O * u_o)
    E = P * t
W_C = 0.90: compute-saturated GEMMs (prefill) draw close to the board limit (H100 prefill is
measured at 600-700 W); W_M = 0.45: memory-bound decode keeps the tensor cores mostly idle and
draws roughly half the dynamic range (batch-1 decode on H100 is reported at 300-400 W);
W_O = 0.10: during launch gaps clocks stay up but little switches. The same power is drawn while
the GPU waits for a slow host (sim/runtime.py): the H200 idled at 127 W in P0 and averaged about
150 W under eager transformers that kept it mostly waiting.

The slowdown knob k divides every efficiency factor and multiplies the overhead: kernels get
slower at the same utilization (the way a worse kernel or a bad build behaves), so time and
energy both grow by about k. This is not the paper's formula: no term here is fitted to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .architectures import Architecture
from .gpus import GPU

W_COMPUTE = 0.90
W_MEMORY = 0.45
W_OVERHEAD = 0.10
#: per step: CUDA-graph replay + in-flight-batching scheduler + sampling (~0.2 ms on TRT-LLM)
STEP_OVERHEAD_S = 0.2e-3
#: per layer per step: launch gaps and tail effects of ~8 kernels (~1.2 us each)
LAYER_OVERHEAD_S = 10e-6
#: fp32 logits written for every token that produces one
LOGIT_BYTES = 4


@dataclass
class StepCost:
    """Time and energy of a batch of steps (arrays: one entry per step)."""

    seconds: np.ndarray
    joules: np.ndarray
    flops: np.ndarray
    bytes: np.ndarray

    @property
    def total_seconds(self) -> float:
        return float(np.sum(self.seconds))

    @property
    def total_joules(self) -> float:
        return float(np.sum(self.joules))


class StepModel:
    """Roofline + utilization power for one architecture on one GPU."""

    def __init__(self, arch: Architecture, gpu: GPU, dtype_bytes: int = 2, slowdown: float = 1.0,
                 efficiency: float = 1.0, kv_traffic: float = 1.0):
        if slowdown <= 0:
            raise ValueError(f"slowdown must be positive, got {slowdown}")
        if not 0 < efficiency <= 1:
            raise ValueError(f"efficiency must be in (0, 1], got {efficiency}")
        self.arch = arch
        self.gpu = gpu
        self.dtype_bytes = dtype_bytes
        self.slowdown = float(slowdown)
        self.weight_bytes = float((arch.block_params + arch.lm_head_params) * dtype_bytes)
        self.kv_bytes_per_token = float(arch.kv_bytes_per_token(dtype_bytes))
        #: HBM traffic of attention per KV byte it needs: 1 for fused kernels; eager attention
        #: copies the cache and repeats GQA heads (sim/runtime.py)
        self.kv_traffic = float(kv_traffic)
        self.act_bytes_per_token = float(self._activation_elements() * dtype_bytes)
        self.overhead_s = (STEP_OVERHEAD_S + LAYER_OVERHEAD_S * arch.layers) * self.slowdown
        self._gemm_rate = gpu.peak_flops * gpu.gemm_efficiency / self.slowdown
        self._attn_rate = gpu.peak_flops * gpu.attention_efficiency / self.slowdown
        # `efficiency` < 1: unfused eager kernels (sim/runtime.py) move more bytes per step (each
        # norm, rotary and activation reads and writes HBM); their GEMMs are the same cuBLAS ones
        self._mem_rate = gpu.bandwidth * gpu.memory_efficiency * efficiency / self.slowdown

    def _activation_elements(self) -> int:
        """Elements per token that GEMMs read or write in HBM, over all layers: the layer input
        (norm, residual), Q/K/V out, attention out in and O out, FFN in, intermediate(s) out and
        in, FFN out."""
        a = self.arch
        ffn_mats = 3 if a.gated_ffn else 2
        per_layer = 6 * a.hidden + 2 * (a.q_dim + 2 * a.kv_dim) + 2 * a.q_dim + 2 * ffn_mats * a.ffn
        return a.layers * per_layer

    @property
    def waiting_watts(self) -> float:
        """Power while the GPU waits for the host (launch gaps, a slow host): clocks up, little work."""
        return self.gpu.idle_watts + (self.gpu.board_watts - self.gpu.idle_watts) * W_OVERHEAD

    def decode_seconds_floor(self) -> float:
        """Weight bytes / bandwidth: the published lower bound of a batch-1 decode step."""
        return self.weight_bytes / self.gpu.bandwidth

    def cost(self, tokens, logits, pairs, kv_read, kv_write) -> StepCost:
        """Cost of steps given (arrays or scalars) the tokens run through the layers, the tokens
        producing logits, the attention (query, key) pairs, and KV-cache tokens read and written."""
        a = self.arch
        tokens = np.asarray(tokens, dtype=float)
        logits = np.asarray(logits, dtype=float)
        pairs = np.asarray(pairs, dtype=float)
        kv_read = np.asarray(kv_read, dtype=float)
        kv_write = np.asarray(kv_write, dtype=float)

        dense_flops = 2.0 * tokens * a.block_params + 2.0 * logits * a.lm_head_params
        dense_bytes = self.weight_bytes + tokens * self.act_bytes_per_token + logits * a.vocab * LOGIT_BYTES
        attn_flops = 4.0 * a.layers * a.q_dim * pairs
        attn_bytes = self.kv_bytes_per_token * (kv_read * self.kv_traffic + kv_write)

        dense_c, dense_m = dense_flops / self._gemm_rate, dense_bytes / self._mem_rate
        attn_c, attn_m = attn_flops / self._attn_rate, attn_bytes / self._mem_rate
        seconds = np.maximum(dense_c, dense_m) + np.maximum(attn_c, attn_m) + self.overhead_s

        u = (W_COMPUTE * (dense_c + attn_c) + W_MEMORY * (dense_m + attn_m) + W_OVERHEAD * self.overhead_s) / seconds
        watts = self.gpu.idle_watts + (self.gpu.board_watts - self.gpu.idle_watts) * np.minimum(1.0, u)
        return StepCost(
            seconds=np.atleast_1d(seconds),
            joules=np.atleast_1d(watts * seconds),
            flops=np.atleast_1d(dense_flops + attn_flops),
            bytes=np.atleast_1d(dense_bytes + attn_bytes),
        )
