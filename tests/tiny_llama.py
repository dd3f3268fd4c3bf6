"""A tiny random-weight Llama and a WordLevel tokenizer, made at test time (no hub, no download).

2 layers, hidden size 128, a vocabulary of 1024 words ("w0".."w1020" and three special tokens),
1024 positions, saved with transformers' `save_pretrained` in bfloat16 beside a `tokenizers`
WordLevel tokenizer: enough for vLLM to load it in-process (no tokenizer needed) and to serve it
(the OpenAI server needs one). Used by the vllm tests; importable as a script too:
`python -m tests.tiny_llama DIR`.
"""

from __future__ import annotations

import sys
from pathlib import Path

VOCAB = 1024
SPECIAL = ("<s>", "</s>", "<unk>")  # ids 0, 1, 2: bos, eos, unk
MAX_POSITIONS = 1024


def make(directory: str | Path, seed: int = 0) -> Path:
    """Write the model and tokenizer into `directory`; returns it."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=MAX_POSITIONS,
                         bos_token_id=0, eos_token_id=1, pad_token_id=None, tie_word_embeddings=False,
                         torch_dtype="bfloat16")
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    words = {token: i for i, token in enumerate(SPECIAL)}
    words.update({f"w{i}": i for i in range(len(SPECIAL), VOCAB)})
    tok = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(out)
    return out


if __name__ == "__main__":
    print(make(sys.argv[1] if len(sys.argv) > 1 else "tiny-llama"))
