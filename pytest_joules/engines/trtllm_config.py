"""The trtllm engine's inputs: which kind of model directory `--joules-model` names (a prebuilt
TensorRT engine dir or a Hugging Face checkpoint) and what its config says, the GPUs an engine was
built for, and the engine options and dtype checked and mapped to TensorRT-LLM's names.

Plain files and dicts only: nothing here imports tensorrt_llm.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .base import EngineSpec, reject_unknown_options

#: NVIDIA's own install command (https://nvidia.github.io/TensorRT-LLM/installation/linux.html,
#: the 1.2-era page), pinned: PyPI's tensorrt-llm is a wheel stub that downloads the real wheel
#: from https://pypi.nvidia.com at install time (tensorrt_llm-1.2.1.tar.gz: build backend wheel_stub).
INSTALL_COMMAND = 'pip3 install --ignore-installed pip setuptools wheel && pip3 install "tensorrt_llm>=1.2,<1.3"'
INSTALL_HINT = (
    "install TensorRT-LLM 1.2.x as NVIDIA's guide says: its prerequisites (CUDA 13.1, torch 2.9.1 from the "
    f"cu130 index, libopenmpi-dev; see docs/hardware.md), then {INSTALL_COMMAND}"
)
#: engine options (--joules-engine-option); `seed` is accepted because the plugin always passes it
#: (the prompts take theirs from the workload)
OPTIONS = ("tensor_parallel_size", "max_batch_size", "max_num_tokens", "dtype", "end_id", "vocab_size", "seed")

#: the project's dtype names -> TensorRT-LLM's. The LLM API takes "auto" or a name that
#: tensorrt_llm/_utils.py `str_dtype_to_torch` knows; anything else fails its
#: `assert ..., f'Unsupported dtype: {dtype}'` (1.2). Its table has no bf16/fp16/fp32.
DTYPES = {"auto": "auto", "bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
          "fp32": "float32", "float32": "float32"}
_SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
#: BaseLlmArgs.max_num_tokens default (tensorrt_llm/llmapi/llm_args.py, 1.x)
DEFAULT_MAX_NUM_TOKENS = 8192
#: BuildConfig.max_input_len default, for an engine config.json that does not record it
DEFAULT_MAX_INPUT_LEN = 1024


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class ModelDir:
    """What kind of directory `--joules-model` names, and what its config says."""

    path: str
    kind: str  # "engine" or "checkpoint"
    config: dict[str, Any]

    @property
    def build_config(self) -> dict[str, Any]:
        return self.config.get("build_config") or {}

    @property
    def max_positions(self) -> int | None:
        if self.kind == "engine":
            return _int(self.build_config.get("max_seq_len"))
        cfg = self.config.get("text_config") or self.config
        return _int(cfg.get("max_position_embeddings"))

    @property
    def max_input_len(self) -> int | None:
        """The longest prompt an engine takes (checkpoints: no such limit)."""
        if self.kind != "engine":
            return None
        return _int(self.build_config.get("max_input_len")) or DEFAULT_MAX_INPUT_LEN

    @property
    def max_batch_size(self) -> int | None:
        return _int(self.build_config.get("max_batch_size"))

    @property
    def vocab_size(self) -> int | None:
        cfg = self.config.get("pretrained_config") or self.config.get("text_config") or self.config
        return _int(cfg.get("vocab_size"))

    @property
    def eos_id(self) -> int | None:
        value = (self.config.get("text_config") or self.config).get("eos_token_id")
        if isinstance(value, list) and value:
            value = value[0]
        return _int(value)

    @property
    def dtype(self) -> str | None:
        """An engine's build dtype (pretrained_config.dtype); None for checkpoints."""
        if self.kind != "engine":
            return None
        value = (self.config.get("pretrained_config") or {}).get("dtype")
        return str(value) if value else None


@dataclass(frozen=True)
class Parallelism:
    """An engine's `pretrained_config.mapping`: the GPUs it was built for."""

    tp: int = 1
    pp: int = 1
    cp: int = 1

    @property
    def world_size(self) -> int:
        return self.tp * self.pp * self.cp


def engine_parallelism(model: ModelDir) -> Parallelism:
    """The mapping a TensorRT engine was built with. The LLM API takes the engine's, not the
    tensor_parallel_size argument (`_load_config_from_engine`, tensorrt_llm/llmapi/llm_args.py, 1.x),
    and needs one GPU per rank."""
    mapping = (model.config.get("pretrained_config") or {}).get("mapping") or {}
    sizes = {key: mapping.get(f"{key}_size", 1) for key in ("tp", "pp", "cp")}
    world = mapping.get("world_size")
    bad = {k: v for k, v in sizes.items() if _int(v) is None or v < 1}
    if bad or (world is not None and (_int(world) is None or world < 1)):
        raise ConfigError(f"trtllm engine: {model.path}/config.json has an unreadable pretrained_config.mapping {mapping!r}")
    par = Parallelism(**sizes)
    if world is not None and world != par.world_size:
        raise ConfigError(
            f"trtllm engine: {model.path}/config.json mapping says world_size {world} but tp_size x pp_size x "
            f"cp_size = {par.tp} x {par.pp} x {par.cp}; rebuild the engine"
        )
    return par


def inspect_model_dir(path: str | None) -> ModelDir:
    """Tell an engine dir from a checkpoint dir the way TensorRT-LLM does; ConfigError naming the path otherwise."""
    if not path:
        raise ConfigError(
            "the trtllm engine needs --joules-model: a TensorRT-LLM engine dir (config.json + rank0.engine) "
            "or a Hugging Face checkpoint dir"
        )
    full = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isdir(full):
        raise ConfigError(f"trtllm engine: model path {full} does not exist or is not a directory")
    config_path = os.path.join(full, "config.json")
    if not os.path.isfile(config_path):
        raise ConfigError(
            f"trtllm engine: {full} has no config.json; expected a TensorRT-LLM engine dir "
            "(config.json with pretrained_config and build_config, rank0.engine) or a Hugging Face checkpoint dir"
        )
    try:
        with open(config_path) as fh:
            config = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"trtllm engine: cannot read {config_path}: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"trtllm engine: {config_path} is not a JSON object")
    # An engine is a config.json with BOTH keys (`get_model_format`, tensorrt_llm/llmapi/llm_args.py,
    # 1.x); with one of them TensorRT-LLM would try to read it as a Hugging Face config and fail.
    engine_keys = [key for key in ("pretrained_config", "build_config") if key in config]
    if len(engine_keys) == 2:
        model = ModelDir(full, "engine", config)
        _check_rank_files(model)
        return model
    if engine_keys:
        missing = "build_config" if engine_keys == ["pretrained_config"] else "pretrained_config"
        raise ConfigError(
            f"trtllm engine: {config_path} has {engine_keys[0]} but no {missing}: a half-written engine "
            "config (was trtllm-build interrupted?); rebuild the engine"
        )
    if "architecture" in config and "dtype" in config:
        raise ConfigError(
            f"trtllm engine: {full} is a TensorRT-LLM checkpoint (converted, not built); build it into an "
            "engine with trtllm-build first, or point --joules-model at the Hugging Face checkpoint"
        )
    if "architectures" in config or "model_type" in config:
        return ModelDir(full, "checkpoint", config)
    raise ConfigError(
        f"trtllm engine: {full}/config.json is neither an engine config (pretrained_config + build_config) "
        "nor a Hugging Face config (architectures / model_type)"
    )


def _check_rank_files(model: ModelDir) -> None:
    ranks = engine_parallelism(model).world_size
    missing = [f"rank{r}.engine" for r in range(ranks) if not os.path.isfile(os.path.join(model.path, f"rank{r}.engine"))]
    if missing:
        raise ConfigError(
            f"trtllm engine: {model.path} is an engine for {ranks} GPU(s) but has no {', '.join(missing)}; "
            "was the build interrupted?"
        )



def check_options(spec: EngineSpec) -> dict[str, Any]:
    """The engine options, checked: ConfigError for an unknown key or a bad number or dtype."""
    opts = dict(spec.options)
    reject_unknown_options("trtllm", opts, OPTIONS)
    opts["tensor_parallel_size"] = _positive(opts.get("tensor_parallel_size", 1), "tensor_parallel_size",
                                             "GPUs to shard over")
    if "max_num_tokens" in opts:
        opts["max_num_tokens"] = _positive(opts["max_num_tokens"], "max_num_tokens", "the longest prompt the "
                                           "PyTorch backend takes")
    raw = opts.get("dtype") or spec.dtype  # the engine option is the more specific setting (as for hf)
    if raw is not None and str(raw).lower() not in DTYPES:
        raise ConfigError(f"trtllm engine: unknown dtype {raw!r}; use auto, bf16, fp16 or fp32")
    return opts


def _positive(value: Any, name: str, meaning: str) -> int:
    try:
        number = None if isinstance(value, (bool, float)) else int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < 1:
        raise ConfigError(f"trtllm engine option {name} must be a positive integer ({meaning}), got {value!r}")
    return number


def dtype_for(spec: EngineSpec, opts: dict[str, Any], model: ModelDir) -> str:
    """The dtype as the project names it (bf16, fp16, fp32, auto); an engine dir's is its build dtype."""
    raw = opts.get("dtype") or spec.dtype
    wanted = DTYPES[str(raw).lower()] if raw is not None else "auto"
    if model.kind != "engine":
        return _SHORT.get(wanted, wanted)
    built = model.dtype or wanted  # an engine's dtype is fixed when it is built
    if wanted not in ("auto", built):
        raise ConfigError(
            f"dtype {raw} does not apply: the engine in {model.path} was built for {built}; drop the dtype "
            "or rebuild the engine"
        )
    return _SHORT.get(built, built) if built != "auto" else "engine"
