"""Where to run and in what precision: one device picker and one dtype table for the whole package.

Model code never picks a device or dtype (it follows its weights and inputs); notebooks, the CLI,
training and the benchmarks ask here.
"""

from __future__ import annotations

import torch

# The one table of weight dtypes by name, for the CLI, the loaders and the benchmarks.
DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(prefer: str | torch.device | None = None) -> torch.device:
    """The device to run on: ``prefer`` if given (and available), else cuda → mps → cpu."""
    if prefer is None or prefer == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(prefer)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {prefer!r}; use cpu, cuda, cuda:N, mps or auto.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {prefer!r} asked for, but CUDA is not available here "
                "(no GPU, or a CPU-only PyTorch build); use cpu."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {prefer!r} asked for, but only {torch.cuda.device_count()} "
                f"CUDA device(s) exist (cuda:0..cuda:{torch.cuda.device_count() - 1})."
            )
    elif device.type == "mps":
        if not _mps_available():
            raise ValueError(f"device {prefer!r} asked for, but Apple MPS is not available here; use cpu.")
    elif device.type != "cpu":
        raise ValueError(f"device {prefer!r} is not supported; use cpu, cuda, cuda:N or mps.")
    return device


def resolve_dtype(name_or_dtype: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype:
    """A float dtype from a name ("fp32", "bf16", "fp16", ...) or a dtype.

    None picks bfloat16 on a CUDA GPU that supports it (what Llama 2 was trained in) and float32
    everywhere else: CPUs and older GPUs are slow or inexact in 16-bit.
    """
    if name_or_dtype is None or name_or_dtype == "auto":
        device = torch.device(device)
        if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if isinstance(name_or_dtype, torch.dtype):
        if name_or_dtype in DTYPES.values():
            return name_or_dtype
        raise ValueError(f"dtype {name_or_dtype} is not supported for weights; use float32, bfloat16 or float16.")
    key = str(name_or_dtype).lower().removeprefix("torch.")
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {name_or_dtype!r}; use one of {', '.join(DTYPES)}.")
    return DTYPES[key]
