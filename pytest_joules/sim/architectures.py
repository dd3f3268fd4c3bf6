"""Transformer shapes of real models, from their public Hugging Face `config.json` files.

Only the shapes matter to the simulator: energy depends on how many FLOPs and bytes a step moves,
not on the weight values. Biases and norm weights are left out of the parameter count (they are
well under 0.1% of it and cost no GEMM work).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class Architecture:
    """A decoder-only transformer's shapes.

    `gated_ffn`: SwiGLU/GeGLU FFNs have three d x ffn matrices (gate, up, down), plain ones two.
    `tied_embeddings`: the LM head is the embedding matrix, so it is stored once.
    `source`: the Hugging Face repo whose config.json the numbers come from.
    """

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    gated_ffn: bool
    vocab: int
    tied_embeddings: bool
    max_positions: int
    source: str

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def attention_kind(self) -> str:
        if self.kv_heads == self.heads:
            return "MHA"
        return "MQA" if self.kv_heads == 1 else "GQA"

    @property
    def layer_params(self) -> int:
        """Weights of one layer's matrices: Q, K, V, O projections and the FFN."""
        attn = self.hidden * self.q_dim + 2 * self.hidden * self.kv_dim + self.q_dim * self.hidden
        ffn = (3 if self.gated_ffn else 2) * self.hidden * self.ffn
        return attn + ffn

    @property
    def block_params(self) -> int:
        """Weights every token multiplies through (all layers, LM head excluded)."""
        return self.layers * self.layer_params

    @property
    def lm_head_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        """Stored parameters: layers + embedding (+ a separate LM head when untied)."""
        embeddings = self.lm_head_params * (1 if self.tied_embeddings else 2)
        return self.block_params + embeddings

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """K and V of every layer for one token."""
        return 2 * self.layers * self.kv_dim * dtype_bytes

    def describe(self) -> str:
        return (
            f"{self.name}: {self.params / 1e9:.2f}B params, {self.layers} layers, d={self.hidden}, "
            f"{self.heads} heads / {self.kv_heads} KV ({self.attention_kind}), ffn={self.ffn}"
            f"{' gated' if self.gated_ffn else ''}, vocab={self.vocab}, {self.max_positions} positions"
        )


def _arch(name, layers, hidden, heads, kv_heads, ffn, gated, vocab, tied, positions, source, head_dim=None):
    return Architecture(
        name=name, layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads,
        head_dim=head_dim or hidden // heads, ffn=ffn, gated_ffn=gated, vocab=vocab,
        tied_embeddings=tied, max_positions=positions, source=source,
    )


_ALL = [
    # name, layers, hidden, heads, kv, ffn, gated, vocab, tied, positions, HF repo (config.json)
    _arch("Llama-3.2-1B", 16, 2048, 32, 8, 8192, True, 128256, True, 131072, "meta-llama/Llama-3.2-1B"),
    _arch("Llama-3.2-3B", 28, 3072, 24, 8, 8192, True, 128256, True, 131072, "meta-llama/Llama-3.2-3B"),
    _arch("Llama-3.1-8B", 32, 4096, 32, 8, 14336, True, 128256, False, 131072, "meta-llama/Llama-3.1-8B"),
    # Llama-3-8B: the shapes of Llama-3.1-8B with 8192 positions (the public Argonne measurements)
    _arch("Llama-3-8B", 32, 4096, 32, 8, 14336, True, 128256, False, 8192, "meta-llama/Meta-Llama-3-8B"),
    _arch("Llama-3.1-70B", 80, 8192, 64, 8, 28672, True, 128256, False, 131072, "meta-llama/Llama-3.1-70B"),
    # Llama-2-7B: the MHA counterpart of Llama-3.1-8B (same depth and width, 32 KV heads).
    _arch("Llama-2-7B", 32, 4096, 32, 32, 11008, True, 32000, False, 4096, "meta-llama/Llama-2-7b-hf"),
    _arch("Qwen2-1.5B", 28, 1536, 12, 2, 8960, True, 151936, True, 131072, "Qwen/Qwen2-1.5B"),
    _arch("Qwen2-7B", 28, 3584, 28, 4, 18944, True, 152064, False, 131072, "Qwen/Qwen2-7B"),
    # Qwen3: head_dim 128 with hidden / heads = 128 (8B) and 128 (14B); per-head q/k norms (no GEMM)
    _arch("Qwen3-8B", 36, 4096, 32, 8, 12288, True, 151936, False, 40960, "Qwen/Qwen3-8B", head_dim=128),
    _arch("Qwen3-14B", 40, 5120, 40, 8, 17408, True, 151936, False, 40960, "Qwen/Qwen3-14B", head_dim=128),
    # Gemma-2: head_dim 256 (so q_dim != hidden), GeGLU FFN, alternating 4096-token sliding window.
    _arch("Gemma-2-2B", 26, 2304, 8, 4, 9216, True, 256000, True, 8192, "google/gemma-2-2b", head_dim=256),
    _arch("Gemma-2-9B", 42, 3584, 16, 8, 14336, True, 256000, True, 8192, "google/gemma-2-9b", head_dim=256),
    # Falcon-7B: multi-query attention (one KV head), plain GELU 4x FFN, parallel attention/MLP.
    _arch("Falcon-7B", 32, 4544, 71, 1, 18176, False, 65024, True, 2048, "tiiuae/falcon-7b"),
    _arch("Granite-3.0-2B", 40, 2048, 32, 8, 8192, True, 49155, True, 4096, "ibm-granite/granite-3.0-2b-base"),
    _arch("Granite-3.0-8B", 40, 4096, 32, 8, 12800, True, 49155, True, 4096, "ibm-granite/granite-3.0-8b-base"),
    # OPT: MHA, plain ReLU 4x FFN, learned positions (2048).
    _arch("OPT-1.3B", 24, 2048, 32, 32, 8192, False, 50272, True, 2048, "facebook/opt-1.3b"),
    _arch("OPT-2.7B", 32, 2560, 32, 32, 10240, False, 50272, True, 2048, "facebook/opt-2.7b"),
    _arch("OPT-6.7B", 32, 4096, 32, 32, 16384, False, 50272, True, 2048, "facebook/opt-6.7b"),
    # Tiny shapes for fast tests (not real models): one GQA, one MHA of the same size.
    _arch("tiny-gqa", 2, 256, 8, 2, 1024, True, 1024, True, 2048, "test shape, not a real model"),
    _arch("tiny-mha", 2, 256, 8, 8, 1024, True, 1024, True, 2048, "test shape, not a real model"),
    # small enough for the hf engine to generate with on a CPU in tests (milliseconds per token)
    _arch("tiny-llama", 2, 64, 4, 2, 128, True, 512, True, 512, "test shape, not a real model"),
    _arch("tiny-llama-mha", 2, 64, 4, 4, 128, True, 512, True, 512, "test shape, not a real model"),
]

ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in _ALL}


def known_architectures() -> list[str]:
    return list(ARCHITECTURES)


def get_architecture(name: str) -> Architecture:
    """Look up an architecture by name, case-insensitively; ConfigError lists the known ones."""
    if isinstance(name, Architecture):
        return name
    wanted = str(name).strip().lower()
    for arch in _ALL:
        if arch.name.lower() == wanted or arch.source.lower() == wanted:
            return arch
    raise ConfigError(
        f"unknown simulated model {name!r}; known models: {', '.join(known_architectures())}"
    )
