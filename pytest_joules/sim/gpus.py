"""GPUs from public spec sheets, plus the efficiency factors the step model applies to them.

Peak rates are the vendor's dense (no sparsity) BF16 tensor-core figures and HBM bandwidths.
Idle power is a typical `nvidia-smi` reading of an idle, clocks-unlocked board; it varies by a
few tens of watts between boards and drivers, so treat it as representative, not exact.

Efficiency factors (the fraction of peak that real kernels reach):
- gemm_efficiency: prefill as vLLM runs it (GEMMs, at the board's power limit, with the unfused
  elementwise kernels between them): Argonne's time to first token for 16 prompts of 1024 tokens
  of Llama-3-8B (LLM-Inference-Bench, Plots/Fig_22) is 0.43 s on an H100 (60% of its 989
  TFLOPS), 0.38 s on a GH200 whose 1000 W module lets the clocks stay up (68%), 1.04 s on an
  A100 (77%, 0.80 kept).
- attention_efficiency: fused attention (FlashAttention-2/3, TRT-LLM FMHA) reaches less than a
  GEMM: about 50-75% on Hopper, 60-70% on Ampere (FlashAttention-2/3 papers' forward numbers).
- memory_efficiency: streaming kernels reach about 85-90% of HBM peak (STREAM-like copies,
  batch-1 decode reaching ~2.9 of 3.35 TB/s on H100).
- B200: Hopper's factors, an assumption (no kernel measurements of ours or in the public data).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class GPU:
    name: str
    bf16_tflops: float  # dense BF16 tensor-core peak, TFLOP/s
    bandwidth_tbs: float  # HBM bandwidth, TB/s
    memory_gb: float  # HBM capacity, GB (10^9 bytes)
    board_watts: float  # maximum board power (TDP)
    idle_watts: float  # typical idle draw
    gemm_efficiency: float
    attention_efficiency: float
    memory_efficiency: float
    source: str
    nvlink_gbs: float = 0.0  # NVLink bandwidth per GPU, GB/s, both directions (0: none)

    @property
    def peak_flops(self) -> float:
        return self.bf16_tflops * 1e12

    @property
    def bandwidth(self) -> float:
        return self.bandwidth_tbs * 1e12

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 1e9


_ALL = [
    # NVIDIA H100 Tensor Core GPU datasheet (SXM5): 989 TFLOPS dense BF16, 3.35 TB/s HBM3, 80 GB, up to 700 W.
    GPU("H100-SXM", 989.4, 3.35, 80, 700, 70, 0.60, 0.55, 0.85, "NVIDIA H100 datasheet, SXM5 column", nvlink_gbs=900),
    # Same datasheet, PCIe column: 756 TFLOPS dense BF16, 2.0 TB/s HBM2e, 80 GB, 300-350 W.
    GPU("H100-PCIe", 756.0, 2.0, 80, 350, 45, 0.60, 0.55, 0.85, "NVIDIA H100 datasheet, PCIe column", nvlink_gbs=600),
    # NVIDIA H200 datasheet (SXM): same Hopper compute as H100 SXM, 4.8 TB/s HBM3e, 141 GB, up to 700 W.
    GPU("H200", 989.4, 4.8, 141, 700, 75, 0.60, 0.55, 0.85, "NVIDIA H200 datasheet, SXM column", nvlink_gbs=900),
    # NVIDIA A100 datasheet (SXM4 80GB): 312 TFLOPS dense BF16, 2.039 TB/s HBM2e, 400 W.
    GPU("A100-SXM-80GB", 312.0, 2.039, 80, 400, 55, 0.80, 0.65, 0.90, "NVIDIA A100 datasheet, 80GB SXM column", nvlink_gbs=600),
    # Same datasheet, 40GB SXM column: 1,555 GB/s HBM2, 40 GB, 400 W (ALCF Polaris's A100s).
    GPU("A100-SXM-40GB", 312.0, 1.555, 40, 400, 50, 0.80, 0.65, 0.90, "NVIDIA A100 datasheet, 40GB SXM column", nvlink_gbs=600),
    # NVIDIA GH200 Grace Hopper Superchip datasheet: the H100's 989 TFLOPS dense BF16 with 96 GB HBM3
    # at 4 TB/s (or 144 GB HBM3e at 4.9 TB/s); the module (Grace CPU, its LPDDR5X and the GPU) is
    # configurable from 450 to 1000 W, and NVML reads the module on a superchip, so 1000 W here.
    GPU("GH200", 989.4, 4.0, 96, 1000, 120, 0.68, 0.55, 0.85, "NVIDIA GH200 datasheet, 96GB HBM3 module", nvlink_gbs=900),
    GPU("GH200-144GB", 989.4, 4.9, 144, 1000, 120, 0.68, 0.55, 0.85, "NVIDIA GH200 datasheet, 144GB HBM3e module", nvlink_gbs=900),
    # NVIDIA HGX B200 datasheet, per GPU: 2.25 PFLOPS dense BF16 (4.5 with sparsity), 8 TB/s HBM3e,
    # 180 GB (1.44 TB per 8-GPU board), 1000 W. Efficiency factors: Hopper's, an assumption.
    GPU("B200", 2250.0, 8.0, 180, 1000, 140, 0.60, 0.55, 0.85, "NVIDIA HGX B200 datasheet, per GPU", nvlink_gbs=1800),
]

GPUS: dict[str, GPU] = {g.name: g for g in _ALL}


def _key(name: str) -> str:
    # "H100 SXM", "h100_sxm", "H100-SXM5" all name the same board
    key = re.sub(r"[\s_\-]+", "", str(name).lower())
    return key.replace("sxm5", "sxm").replace("sxm4", "sxm")


def known_gpus() -> list[str]:
    return list(GPUS)


def get_gpu(name: str) -> GPU:
    """Look up a GPU, ignoring case, spaces, dashes and underscores; ConfigError lists the known ones."""
    if isinstance(name, GPU):
        return name
    wanted = _key(name)
    aliases = {"h100": "H100-SXM", "a100": "A100-SXM-80GB", "a100sxm": "A100-SXM-80GB", "h200sxm": "H200",
               "a10040gb": "A100-SXM-40GB", "gh20096gb": "GH200", "b200sxm": "B200"}
    for gpu in _ALL:
        if _key(gpu.name) == wanted:
            return gpu
    if wanted in aliases:
        return GPUS[aliases[wanted]]
    raise ConfigError(f"unknown simulated GPU {name!r}; known GPUs: {', '.join(known_gpus())}")
