"""The step model: time and energy of one engine step from the shapes it multiplies.

An engine step runs every active sequence through the model once: prefill sequences with all
their prompt tokens, decode sequences with one token each. Its work splits in kernel groups that
run one after the other:

- dense (the linear layers and the LM head):
    FLOPs = 2 * tokens * block_params + 2 * logits * vocab * hidden
    bytes = weight bytes (all layers + LM head, read once per step)
          + tokens * activation bytes (GEMM inputs/outputs that go through HBM)
          + logits * vocab * 4 (fp32 logits)
- attention:
    FLOPs = 4 * layers * q_dim * pairs   (QK^T and PV over every (query, key) pair; causal)
    bytes = kv_bytes_per_token * (kv_read + kv_write)   (bf16 K and V of all layers)
    plus a fixed latency per sequence, query head and layer (ATTN_HEAD_LAYER_S): decode attention
    over a paged cache does not stream at HBM speed at chat-length contexts
- tensor parallelism over tp GPUs: each GPU does 1/tp of the above, and two all-reduces of the
  hidden states per layer add a latency each and their ring's bytes over NVLink.

Each group takes its roofline time, max(FLOPs / (peak * eff), bytes / (bandwidth * eff_mem)),
and the step adds a fixed GPU overhead (launch gaps, kernel tails):
    t = dense + attention + attention latency + all-reduces + overhead

Power follows utilization between idle and board power:
    u_c = compute-busy time / t,  u_m = HBM-busy time (and attention latency) / t,
    u_o = (overhead, all-reduces, eager's small-kernel slack) / t
    P = P_idle + (P_board - P_idle) * min(1, W_C * u_c + W_M * u_m + W_O * u_o)
    E = P * t  (times tp GPUs)
W_C = 0.90: compute-saturated GEMMs (prefill) draw close to the board limit (H100 prefill is
measured at 600-700 W); W_M = 0.75: streaming HBM at full speed keeps most of the chip busy
(ML.ENERGY measured Llama-3.1-8B decode at batch 8 on an H100 at 486 W, 610 W at batch 64, and
the board's ~690 W limit from batch 192; docs/simulator.md); W_O = 0.10: during launch gaps clocks
stay up but little switches. The same power is drawn while the GPU waits for the host
(sim/runtime.py): the H200 idled at 127 W in P0 and averaged about 150 W under eager transformers
that kept it mostly waiting.

The slowdown knob k divides every efficiency factor and multiplies the overheads: kernels get
slower at the same utilization (the way a worse kernel or a bad build behaves), so time and
energy both grow by about k. This is not the paper's formula: no term here is fitted to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .architectures import Architecture
from .gpus import GPU

W_COMPUTE = 0.90
W_MEMORY = 0.75
W_OVERHEAD = 0.10
#: per step, on the GPU: graph replay, sampling kernels (the engine's host time is in runtime.py)
STEP_OVERHEAD_S = 0.2e-3
#: per layer per step: launch gaps and tail effects of ~8 kernels (~1.2 us each)
LAYER_OVERHEAD_S = 10e-6
#: per sequence, per query head on the GPU and per layer of a step: the fixed latency of decode
#: attention's work for one head of one sequence (paging, softmax, reductions), beyond its bytes.
#: From ML.ENERGY's median inter-token latency on an H100, which grows 74 us per running request
#: for Llama-3.1-8B (its KV bytes explain 23) and ~95 us for Qwen3-8B (32): 1.4 us per sequence
#: and layer for their 32 heads. Per head, not per KV head: Argonne's Llama-2-7B (32 KV heads)
#: costs no more per sequence than Llama-3-8B (8), and Llama-3.1-70B on 4 GPUs (16 heads each)
#: about half as much per layer
ATTN_HEAD_LAYER_S = 44e-9
#: fp32 logits written for every token that produces one
LOGIT_BYTES = 4
#: tensor parallelism: the latency of one all-reduce of a decode step's hidden states over NVLink
#: (vLLM's custom all-reduce on 4 H100s: 8.5-9.2 us for 4-32 KB, sgl-project/sglang#2904)
ALLREDUCE_LATENCY_S = 8e-6
#: the share of NVLink's one-way bandwidth an all-reduce's ring reaches (an assumption; it only
#: matters for prefill chunks of thousands of tokens)
NVLINK_EFFICIENCY = 0.8


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
                 efficiency: float = 1.0, kv_traffic: float = 1.0, tp: int = 1):
        if slowdown <= 0:
            raise ValueError(f"slowdown must be positive, got {slowdown}")
        if not 0 < efficiency <= 1:
            raise ValueError(f"efficiency must be in (0, 1], got {efficiency}")
        self.arch = arch
        self.gpu = gpu
        self.dtype_bytes = dtype_bytes
        self.slowdown = float(slowdown)
        #: tensor parallelism: every GPU holds 1/tp of each weight matrix and of the KV heads (a KV
        #: head is replicated when there are more GPUs than KV heads) and does 1/tp of the FLOPs;
        #: figures below are per GPU, and `cost` returns the energy of all tp GPUs
        self.tp = int(tp)
        self.weight_bytes = float((arch.block_params + arch.lm_head_params) * dtype_bytes) / self.tp
        kv_heads = max(1.0, arch.kv_heads / self.tp)
        self.kv_bytes_per_token = float(2 * arch.layers * kv_heads * arch.head_dim * dtype_bytes)
        #: HBM traffic of attention per KV byte it needs: 1 for fused kernels; eager attention
        #: copies the cache and repeats GQA heads (sim/runtime.py)
        self.kv_traffic = float(kv_traffic)
        self.act_bytes_per_token = float(self._activation_elements() * dtype_bytes) / self.tp
        self.overhead_s = (STEP_OVERHEAD_S + LAYER_OVERHEAD_S * arch.layers) * self.slowdown
        self.attn_seq_s = ATTN_HEAD_LAYER_S * arch.heads / self.tp * arch.layers * self.slowdown
        self._gemm_rate = gpu.peak_flops * gpu.gemm_efficiency * self.tp / self.slowdown
        self._attn_rate = gpu.peak_flops * gpu.attention_efficiency * self.tp / self.slowdown
        # `efficiency` < 1: eager's unfused kernels (sim/runtime.py) take 1/efficiency times as long
        # for their bytes (small kernels, each with its launch latency); their GEMMs are the same
        self._mem_rate = gpu.bandwidth * gpu.memory_efficiency * efficiency / self.slowdown
        self.efficiency = float(efficiency)
        # two all-reduces of the hidden state per layer: a latency each, and the ring's bytes
        self._allreduces = 2 * arch.layers if self.tp > 1 else 0
        self._allreduce_bytes = 2 * (self.tp - 1) / self.tp * arch.hidden * dtype_bytes
        self._link_rate = gpu.nvlink_gbs * 1e9 / 2 * NVLINK_EFFICIENCY / self.slowdown if self.tp > 1 else 1.0

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
        return (self.gpu.idle_watts + (self.gpu.board_watts - self.gpu.idle_watts) * W_OVERHEAD) * self.tp

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
        dense_bytes = self.weight_bytes + tokens * self.act_bytes_per_token + logits * a.vocab * LOGIT_BYTES / self.tp
        attn_flops = 4.0 * a.layers * a.q_dim * pairs
        attn_bytes = self.kv_bytes_per_token * (kv_read * self.kv_traffic + kv_write)

        dense_c, dense_m = dense_flops / self._gemm_rate, dense_bytes / self._mem_rate
        # every sequence in the step (one logit each) costs its attention kernel a fixed latency
        attn_c, attn_m = attn_flops / self._attn_rate, attn_bytes / self._mem_rate
        attn_l = logits * self.attn_seq_s
        link = self._allreduces * (ALLREDUCE_LATENCY_S * self.slowdown + tokens * self._allreduce_bytes / self._link_rate)
        seconds = np.maximum(dense_c, dense_m) + np.maximum(attn_c, attn_m) + attn_l + link + self.overhead_s

        # HBM streams at the fused kernels' rate for efficiency x the memory time; the rest is the
        # latency of small unfused kernels (eager), with the GPU mostly waiting
        stream = (dense_m + attn_m) * self.efficiency
        slack = dense_m + attn_m - stream
        u = (W_COMPUTE * (dense_c + attn_c) + W_MEMORY * (stream + attn_l)
             + W_OVERHEAD * (slack + link + self.overhead_s)) / seconds
        watts = self.gpu.idle_watts + (self.gpu.board_watts - self.gpu.idle_watts) * np.minimum(1.0, u)
        return StepCost(
            seconds=np.atleast_1d(seconds),
            joules=np.atleast_1d(watts * seconds * self.tp),
            flops=np.atleast_1d(dense_flops + attn_flops),
            bytes=np.atleast_1d((dense_bytes + attn_bytes) * self.tp),
        )
