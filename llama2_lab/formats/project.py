"""The project's own folder: ``params.json`` (Meta's field names) + ``model.safetensors`` + ``tokenizer.model``."""

from __future__ import annotations

import json
from pathlib import Path

from ..core.transformer import Transformer
from ..utils.io import atomic_write_bytes, atomic_write_text
from .common import _args_from_params, _cpu_state, _save_safetensors, _Source, _tokenizer_bytes
from .hf import _open_safetensors


# --- project folder -------------------------------------------------------------------------------
def _open_project(folder: Path) -> _Source:
    src = _Source("project", folder, None, {}, [folder / "params.json", folder / "model.safetensors"])  # type: ignore[arg-type]
    src.tensors = _open_safetensors(folder / "model.safetensors", src.stack)
    src.args = _args_from_params(folder / "params.json", src.tensors)
    return src



def save_model(model: Transformer, folder: str | Path, tokenizer=None, *, dtype=None) -> Path:
    """The project format: ``params.json`` (every ModelArgs field), ``model.safetensors``, ``tokenizer.model``.

    ``tokenizer`` is a Tokenizer (its ``model_proto`` bytes), raw bytes or a path to a ``.model``.
    Each file is written atomically.
    """
    folder = Path(folder)
    _save_safetensors(_cpu_state(model, dtype), folder / "model.safetensors")
    atomic_write_text(folder / "params.json", json.dumps(model.args.to_dict(), indent=2) + "\n")
    if tokenizer is not None:
        atomic_write_bytes(folder / "tokenizer.model", _tokenizer_bytes(tokenizer))
    return folder
