"""Checkpoint I/O, strict and lazy: one module per format, one loader for all of them.

common    lazy tensors under Meta's names, errors, header readers, what every writer shares
project   this project's folder (params.json + model.safetensors + tokenizer.model)
meta      Meta's params.json + consolidated.NN.pth shards
hf        Hugging Face config.json + safetensors (the q/k RoPE permutation lives here only)
llama2c   llama2.c's .bin files (legacy v0 and version 1)
loading   detect the format, check names, shapes and memory, then build the model: load_model
"""

from .common import FORMATS, CheckpointError, CheckpointNotFoundError, LazyTensor
from .hf import ffn_args_for_hidden, hf_config, hf_to_meta_name, meta_to_hf_name, save_hf
from .llama2c import TokenizerBin, export_llama2c, read_tokenizer_bin, write_tokenizer_bin
from .loading import (
    META_BUILD_MIN_PARAMS,
    available_memory,
    default_model_path,
    detect_format,
    format_info,
    info,
    load_model,
    load_tokenizer,
)
from .meta import save_meta
from .project import save_model

__all__ = [
    "FORMATS",
    "CheckpointError",
    "CheckpointNotFoundError",
    "LazyTensor",
    "ffn_args_for_hidden",
    "hf_config",
    "hf_to_meta_name",
    "meta_to_hf_name",
    "save_hf",
    "export_llama2c",
    "TokenizerBin",
    "read_tokenizer_bin",
    "write_tokenizer_bin",
    "META_BUILD_MIN_PARAMS",
    "available_memory",
    "default_model_path",
    "detect_format",
    "format_info",
    "info",
    "load_model",
    "load_tokenizer",
    "save_meta",
    "save_model",
]

from .loading import _build, _expected_shapes  # noqa: E402, F401  (benchmarks/load_memory.py uses them)
