"""The `hf` engine: transformers `generate` with exactly n_in prompt tokens and n_out new tokens.

The model is a local checkpoint directory (`from_pretrained`, local files only) or a named
architecture built with random weights (`from_config`): energy depends on the shapes, not on
the weight values. Names are those of the simulator's architecture table (so a real run and a
simulated one describe the same model) plus a few tiny ones for tests.

EOS is disabled and `min_new_tokens = max_new_tokens = n_out`, so every request generates
exactly n_out tokens; requests run in batches of at most `max_batch_size`. A length mix
(engines/mix.py) runs as static batches of each distinct (n_in, n_out) in turn: generate has no
in-flight batching, so it cannot serve requests over time (rate= / concurrency= are refused).
Text prompts (prompts=FILE) are cut with the checkpoint directory's tokenizer. CUDA when present
(synchronized at the window edges), CPU otherwise. torch and transformers are imported only in
`create`, so listing engines stays cheap.

Engine option `runtime` (hf_runtime.py): `graphs`, the default on CUDA, decodes with a static KV
cache and CUDA graphs; `eager` is plain `generate`, the default on the CPU. Where graphs cannot
work the engine runs eager and says why in its identity (`runtime_note`) and in a warning.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, EngineUnavailable, WorkloadMismatch
from .workload import EngineRun, Workload
from . import hf_runtime as R
from .base import DeviceRef, EngineSpec, reject_unknown_options
from .mix import groups
from .prompts import load_tokenizer, prompt_ids, random_prompts

if TYPE_CHECKING:
    import torch

    from ..sim.architectures import Architecture

INSTALL_HINT = "pip install 'pytest-joules[hf]' (transformers and torch)"

_DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
           "half": "float16", "fp32": "float32", "float32": "float32", "float": "float32"}
_SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
#: engine options (--joules-engine-option); `seed` picks the random weights of a named architecture
OPTIONS = ("device", "dtype", "seed", "runtime")
#: the workload of the graphs probe at load time: short, but long enough to replay a CUDA graph
PROBE = Workload(n_in=8, n_out=4, requests=1)


_FAMILIES = ("llama", "qwen2", "qwen3", "gemma-2", "falcon", "granite", "opt")


def _family(name: str) -> str:
    low = name.lower()
    if low.startswith("tiny-"):
        return "llama"
    for fam in _FAMILIES:
        if low.startswith(fam):
            return fam.replace("-", "")
    raise ConfigError(f"hf engine: no transformers config family known for architecture {name!r}")


def known_architectures() -> list[str]:
    """The architectures the hf engine can build with random weights: the simulator's table."""
    from ..sim.architectures import known_architectures as names

    return names()


def lookup_architecture(name: str) -> Architecture | None:
    """The named architecture, or None when the name is not one."""
    from ..sim.architectures import get_architecture

    try:
        return get_architecture(name)
    except ConfigError:
        return None


def build_config(shape: Architecture) -> Any:
    """A transformers config of the architecture's family (no download, no weights)."""
    import transformers as tf

    family = _family(shape.name)

    common = dict(vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                  num_attention_heads=shape.heads, max_position_embeddings=shape.max_positions,
                  tie_word_embeddings=shape.tied_embeddings, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    gqa = dict(num_key_value_heads=shape.kv_heads, intermediate_size=shape.ffn)
    if family in ("llama", "granite"):
        cls = tf.LlamaConfig if family == "llama" else tf.GraniteConfig
        return cls(**common, **gqa, head_dim=shape.head_dim)
    if family == "qwen2":
        return tf.Qwen2Config(**common, **gqa)
    if family == "qwen3":  # transformers 4.51+
        return tf.Qwen3Config(**common, **gqa, head_dim=shape.head_dim)
    if family == "gemma2":
        return tf.Gemma2Config(**common, **gqa, head_dim=shape.head_dim)
    if family == "falcon":
        common.pop("tie_word_embeddings")
        return tf.FalconConfig(**common, num_kv_heads=shape.kv_heads, multi_query=shape.kv_heads == 1,
                               new_decoder_architecture=False, parallel_attn=True, bias=False,
                               ffn_hidden_size=shape.ffn)
    if family == "opt":
        return tf.OPTConfig(**common, ffn_dim=shape.ffn, word_embed_proj_dim=shape.hidden)
    raise ConfigError(f"hf engine: unsupported family {family!r}")


def _dtype_name(spec: EngineSpec, cuda: bool) -> str:
    raw = spec.options.get("dtype") or spec.dtype  # the engine option is the more specific setting
    if raw is None:
        return "bfloat16" if cuda else "float32"
    try:
        return _DTYPES[str(raw).lower()]
    except KeyError:
        raise ConfigError(f"hf engine: unknown dtype {raw!r}; use bf16, fp16 or fp32") from None


def _dtype_kwarg(transformers_version: str) -> str:
    """transformers renamed `torch_dtype` to `dtype` in 4.56 (and 5.x drops the old name)."""
    return "dtype" if R.version_tuple(transformers_version) >= (4, 56) else "torch_dtype"


class HFEngine:
    kind = "hf"
    simulated = False
    serves_over_time = False
    over_time_refusal = "transformers' generate runs static batches, with no in-flight batching"

    def __init__(self, model: Any, model_name: str, torch_mod: Any, device: str, dtype: str,
                 versions: dict[str, str], default_meter: str, runtime: str | None = None,
                 tokenizer_path: str | None = None) -> None:
        self._model = model
        self._torch = torch_mod
        self._device = device
        self._dtype = dtype
        self._model_name = model_name
        self._versions = versions
        self.default_meter = default_meter
        cfg = model.config
        self.max_positions: int | None = getattr(cfg, "max_position_embeddings", None)
        self.vocab_size = int(model.get_input_embeddings().weight.shape[0])
        gen = getattr(model, "generation_config", None)
        self._special = {getattr(cfg, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
        if gen is not None:
            self._special |= {getattr(gen, k, None) for k in ("bos_token_id", "pad_token_id")}
            eos = getattr(gen, "eos_token_id", None)
            self._special |= set(eos) if isinstance(eos, (list, tuple)) else {eos}
        self._special = {s for s in self._special if isinstance(s, int)}
        self._pad = next((s for s in (getattr(cfg, "pad_token_id", None),) if isinstance(s, int)), 0)
        self._prompt_cache: dict[tuple[Any, ...], Any] = {}
        self._tokenizer_path = tokenizer_path
        self._encode: Any = None
        self._cache_len: int | None = None  # the static cache's length of the last generate
        self._prepared: set[tuple[int, int, int]] = set()
        self.runtime = self._choose_runtime(runtime)

    # -- protocol -----------------------------------------------------------------------------
    def identity(self) -> dict[str, str]:
        # torch's kernels change energy as much as transformers' code: both key a baseline
        version = f"transformers {self._versions['transformers']}, torch {self._versions['torch']}"
        ident = {"kind": "hf", "model": self._model_name, "dtype": _SHORT[self._dtype],
                 "version": version, "device": self._device.split(":")[0], "runtime": self.runtime.name}
        if self.runtime.note:
            ident["runtime_note"] = self.runtime.note
        return ident

    # -- runtime ------------------------------------------------------------------------------
    def _choose_runtime(self, asked: str | None) -> R.Runtime:
        """The runtime to run: `asked` (default graphs on CUDA, eager on the CPU) when it works here,
        else eager with the reason. graphs is tried on a short generate, so a model or a torch
        that cannot compile is found at load time, before any measurement."""
        cuda = self._device.startswith("cuda")
        name = asked or ("graphs" if cuda else "eager")
        if name == "eager":
            return R.Runtime("eager")
        reason = R.compile_unavailable(self._versions["transformers"], self._torch, cuda)
        if reason is None:
            candidate = R.Runtime("graphs", compile=cuda, note="" if cuda else (
                "CPU: static KV cache without torch.compile (CUDA graphs need a GPU)"))
            if cuda:
                R.raise_recompile_limit(self._torch)
            reason = self._probe(candidate)
            if reason is None:
                return candidate
        warnings.warn(f"hf engine: runtime=graphs does not work here, running eager: {reason}", stacklevel=2)
        return R.Runtime("eager", note=f"graphs unavailable: {reason}")

    def _probe(self, runtime: R.Runtime) -> str | None:
        """Run PROBE twice with `runtime`; why it failed, or None."""
        self.runtime = runtime
        skips = R.cudagraph_skips()
        try:
            for _ in range(2):
                self._generate(self.prompts(PROBE), PROBE.n_out)
        except Exception as exc:  # any failure of static cache or compilation means: not here
            if runtime.compile:
                self._torch._dynamo.reset()
            return R.first_line(exc)
        finally:
            self._cache_len = None
        if runtime.compile and not hasattr(self._model, "_compiled_call"):
            return "transformers did not compile the decode step (its conditions for compiling were not met)"
        self._note_cudagraph_skips(skips)
        return None

    def _note_cudagraph_skips(self, before: int) -> None:
        """Compiled, but without CUDA graphs: inductor only logs why. Say it in the runtime's note."""
        skipped = R.cudagraph_skips() - before
        if self.runtime.compile and skipped > 0 and "without CUDA graphs" not in self.runtime.note:
            self.runtime.note = (f"torch.compile ran {skipped} graph(s) without CUDA graphs (TORCH_LOGS=perf_hints "
                                 "says why): compiled kernels, but a launch per kernel")

    def prepare(self, workload: Workload) -> None:
        """Compile and capture every batch shape of `workload` (graphs; nothing to do eager).
        measure() calls this before the warm-up runs, outside any measured window."""
        if self.runtime.name != "graphs":
            return
        workload.check_positions(self.max_positions, self.kind)
        batch = workload.max_batch_size or workload.requests
        skips = R.cudagraph_skips()
        for idx, ids, n_out in self._plan(workload):
            sizes = sorted({min(batch, len(idx) - start) for start in range(0, len(idx), batch)})
            for size in sizes:
                key = (size, int(ids.shape[1]), n_out)
                if key in self._prepared:
                    continue
                try:
                    for _ in range(2):  # a CUDA graph is recorded on a shape's second call
                        self._generate(ids[:size], n_out)
                except Exception as exc:
                    raise EngineUnavailable(
                        f"hf engine: runtime=graphs failed to prepare {workload.label()} at batch {size}: "
                        f"{R.first_line(exc)}; use --joules-engine-option runtime=eager"
                    ) from None
                self._prepared.add(key)
        self._note_cudagraph_skips(skips)

    def prompts(self, workload: Workload) -> Any:
        """The prompt ids for a workload, as a (requests, n_in) tensor; built once per workload."""
        key = (workload.n_in, workload.requests, workload.seed)
        if key not in self._prompt_cache:
            ids = random_prompts(workload, self.vocab_size, self._special)
            self._prompt_cache = {key: self._torch.tensor(ids, dtype=self._torch.long, device=self._device)}
        return self._prompt_cache[key]

    def _plan(self, workload: Workload) -> list[tuple[list[int], Any, int]]:
        """(request indices, their prompts as one tensor, n_out) of each static batch group: the
        whole workload at one length, or each distinct length of a mix; built once per workload."""
        if workload.mix is None and workload.prompts is None:
            return [(list(range(workload.requests)), self.prompts(workload), workload.n_out)]
        key = (workload.mix, workload.prompts, workload.n_in, workload.n_out, workload.requests, workload.seed)
        if key not in self._prompt_cache:
            if workload.prompts is not None and self._encode is None:
                self._encode = load_tokenizer(self._tokenizer_path)
            ids = prompt_ids(workload, self.vocab_size, self._special, self._encode,
                             engine=f"the hf engine's {self._model_name} (random weights, no tokenizer)")
            tensor = self._torch.tensor
            self._prompt_cache = {key: [(idx, tensor([ids[i] for i in idx], dtype=self._torch.long, device=self._device), m)
                                        for _, m, idx in groups(workload.lengths())]}
        return list(self._prompt_cache[key])

    def run(self, workload: Workload) -> EngineRun:
        torch = self._torch
        workload.check_positions(self.max_positions, self.kind)
        plan = self._plan(workload)
        batch = workload.max_batch_size or workload.requests
        outs_in: list[int] = [0] * workload.requests  # per request, in the order they were asked for
        outs_out: list[int] = [0] * workload.requests
        sizes: list[int] = []
        ttft: list[float] = []
        tpot: list[float] = []
        compiled_before = R.compiles() if self.runtime.compile else 0
        t0 = time.perf_counter()
        with torch.inference_mode():
            for idx, ids, n_out in plan:
                for start in range(0, len(idx), batch):
                    chunk = ids[start:start + batch]
                    steps: list[float] = []
                    out = self._generate(chunk, n_out, steps)
                    if len(steps) == n_out:  # one call per generated token (see _StepTimes)
                        ttft += [steps[0] - t0] * int(chunk.shape[0])
                        if n_out > 1:
                            tpot += [(steps[-1] - steps[0]) / (n_out - 1)] * int(chunk.shape[0])
                    if out.shape[0] != chunk.shape[0] or not torch.equal(out[:, : chunk.shape[1]], chunk):
                        raise WorkloadMismatch(f"engine 'hf': generate did not return the prompts it was given ({self._model_name})")
                    sizes.append(int(chunk.shape[0]))
                    for i in idx[start:start + batch]:
                        outs_in[i], outs_out[i] = int(chunk.shape[1]), int(out.shape[1] - chunk.shape[1])
        self.sync()
        seconds = time.perf_counter() - t0
        problems = []
        if self.runtime.compile and R.compiles() > compiled_before:
            problems.append("torch compiled the decode step inside this run (a shape prepare() did not "
                            "see): its time and energy include the compilation")
        return EngineRun(input_tokens=outs_in, output_tokens=outs_out, seconds=seconds,
                         info={"batches": sizes, "device": self._device, "runtime": self.runtime.name},
                         problems=problems, ttft_s=ttft, tpot_s=tpot)

    def _generate(self, ids: Any, n_out: int, steps: list[float] | None = None) -> Any:
        if self.runtime.name == "graphs":
            self._cache_len = R.fit_cache(self._model, ids.shape[1] + n_out, self._cache_len)
        extra: dict[str, Any] = {}
        if steps is not None:
            from transformers import LogitsProcessorList

            extra["logits_processor"] = LogitsProcessorList([_step_times(steps)])
        with self._torch.inference_mode():
            return self._model.generate(input_ids=ids, attention_mask=self._torch.ones_like(ids),
                                        generation_config=self._generation_config(n_out), **extra)

    def _generation_config(self, n_out: int) -> Any:
        from transformers import GenerationConfig

        # A fresh config: nothing from the checkpoint (eos ids, sampling, stop strings) can end
        # generation early; with no EOS and min = max, every row is exactly n_out tokens long.
        return GenerationConfig(max_new_tokens=n_out, min_new_tokens=n_out, do_sample=False,
                                num_beams=1, eos_token_id=None, pad_token_id=self._pad, use_cache=True,
                                **R.generation_kwargs(self.runtime))

    def sync(self) -> None:
        if self._device.startswith("cuda"):
            self._torch.cuda.synchronize(self._device)

    def devices(self) -> list[DeviceRef]:
        if not self._device.startswith("cuda"):
            return []
        return [device_ref(self._torch, self._torch.device(self._device).index or 0)]

    def close(self) -> None:
        self._model = None
        self._prompt_cache = {}
        if self._device.startswith("cuda"):
            self._torch.cuda.empty_cache()


def _step_times(steps: list[float]) -> Any:
    """A LogitsProcessor that notes the time of each decoding step (it runs once per generated
    token, after that step's forward pass; it changes no score). Latency for the hf engine at the
    cost of one clock read a step. On CUDA these are host times: generate() synchronises every step
    when it checks for finished rows, so they trail the GPU by less than a step."""
    from transformers import LogitsProcessor

    class StepTimes(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            steps.append(time.perf_counter())
            return scores

    return StepTimes()


def device_ref(torch: Any, index: int) -> DeviceRef:
    """CUDA device `index` with the UUID and PCI bus id NVML knows it by (NVML ignores
    CUDA_VISIBLE_DEVICES, so the index alone can name the wrong GPU)."""
    props = torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    uuid_text = None
    if uuid is not None:
        uuid_text = str(uuid)  # torch prints the bare UUID; NVML wants the GPU- prefix
        if not uuid_text.startswith(("GPU-", "MIG-")):
            uuid_text = "GPU-" + uuid_text
    bus = getattr(props, "pci_bus_id", None)
    pci = None
    if isinstance(bus, int):
        domain = getattr(props, "pci_domain_id", 0) or 0
        slot = getattr(props, "pci_device_id", 0) or 0
        pci = f"{domain:08X}:{bus:02X}:{slot:02X}.0"
    return DeviceRef(index=index, uuid=uuid_text, pci_bus_id=pci, name=getattr(props, "name", None))


def _import() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise EngineUnavailable(f"the hf engine needs transformers and torch ({exc}); {INSTALL_HINT}") from None
    return torch, transformers


def _choose_device(torch: Any, spec: EngineSpec) -> str:
    wanted = spec.options.get("device")
    if wanted is None:
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    wanted = str(wanted)
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise EngineUnavailable(f"hf engine: device {wanted!r} asked for, but torch sees no CUDA GPU here")
    if wanted == "cuda":
        return "cuda:0"
    if wanted != "cpu" and not wanted.startswith("cuda:"):
        raise ConfigError(f"hf engine: device must be cpu, cuda or cuda:N, got {wanted!r}")
    return wanted


def _default_meter(device: str) -> str:
    """nvml on a GPU; on the CPU rapl where package energy is readable, else a dry run
    (`none`): a CPU run without a readable counter can still prove its token counts."""
    if device.startswith("cuda"):
        return "nvml"
    from ..meters.rapl import probe

    return "rapl" if probe()[0] else "none"


def _load(spec: EngineSpec, torch: Any, transformers: Any, device: str, dtype: str) -> tuple[Any, str]:
    from transformers import AutoModelForCausalLM

    name = spec.model
    if not name:
        raise ConfigError(
            "the hf engine needs a model (--joules-model / --model): a local checkpoint directory "
            f"or an architecture name with random weights, one of: {', '.join(known_architectures())}"
        )
    kwargs = {_dtype_kwarg(transformers.__version__): getattr(torch, dtype)}
    path = os.path.expanduser(str(name))
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise EngineUnavailable(f"hf engine: {path} is a directory without config.json, not a transformers checkpoint")
        try:
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **kwargs)
        except (OSError, ValueError) as exc:
            raise EngineUnavailable(f"hf engine: cannot load the checkpoint at {path}: {exc}") from None
        return model.to(device), os.path.abspath(path)
    shape = lookup_architecture(str(name))
    if shape is None:
        raise ConfigError(
            f"hf engine: model {name!r} is neither a checkpoint directory nor a known architecture; "
            f"known: {', '.join(known_architectures())}"
        )
    torch.manual_seed(int(spec.options.get("seed", 0)))  # the same random weights every time
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(build_config(shape), **kwargs)
    return model, shape.name


def create(spec: EngineSpec) -> HFEngine:
    reject_unknown_options("hf", spec.options, OPTIONS)  # before importing torch: a typo fails on any machine
    runtime = R.parse_runtime(spec.options.get("runtime"))
    torch, transformers = _import()
    device = _choose_device(torch, spec)
    dtype = _dtype_name(spec, device.startswith("cuda"))
    model, model_name = _load(spec, torch, transformers, device, dtype)
    model.eval()
    versions = {"transformers": transformers.__version__, "torch": torch.__version__}
    tokenizer = model_name if os.path.isdir(model_name) else None  # a checkpoint's tokenizer cuts text prompts
    return HFEngine(model, model_name, torch, device, dtype, versions, _default_meter(device), runtime, tokenizer)


def probe() -> tuple[bool, str]:
    """For `joules doctor`: installed? (cheap: package metadata, no import of torch)."""
    from importlib import metadata

    try:
        versions = {p: metadata.version(p) for p in ("transformers", "torch")}
    except metadata.PackageNotFoundError as exc:
        return False, f"{exc.name} is not installed; {INSTALL_HINT}"
    return True, f"transformers {versions['transformers']}, torch {versions['torch']} (CUDA when torch sees a GPU, else CPU)"
