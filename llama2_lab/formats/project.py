"""The project's own folder: ``params.json`` (Meta's field names) + ``model.safetensors`` + ``tokenizer.model``."""

from __future__ import annotations

import json
from pathlib import Path

from ..core.transformer import Transformer
from ..utils.io import atomic_folder, atomic_write_bytes, atomic_write_text
from .common import _args_from_params, _cpu_state, _save_safetensors, _Source, _tokenizer_bytes
from .hf import _open_safetensors


# --- project folder -------------------------------------------------------------------------------
def _open_project(folder: Path) -> _Source:
    src = _Source("project", folder, None, {}, [folder / "params.json", folder / "model.safetensors"])  # type: ignore[arg-type]
    src.tensors = _open_safetensors(folder / "model.safetensors", src.stack)
    src.args = _args_from_params(folder / "params.json", src.tensors)
    return src


# The files save_model writes; an old folder's other files (a training checkpoint, a model card) are kept.
PROJECT_FILES = ("params.json", "model.safetensors", "tokenizer.model")


def save_model(model: Transformer, folder: str | Path, tokenizer=None, *, dtype=None) -> Path:
    """The project format: ``params.json`` (every ModelArgs field), ``model.safetensors``, ``tokenizer.model``.

    ``tokenizer`` is a Tokenizer (its ``model_proto`` bytes), raw bytes or a path to a ``.model``.
    The folder is written atomically as a whole (``utils.io.atomic_folder``): the files are written
    into a temp folder beside it, which then replaces it, so a kill leaves the old model or the new
    one, never new weights with an old params.json. Other files in an existing folder are kept; an
    old ``tokenizer.model`` is not (it may not belong to the new weights) unless ``tokenizer`` is given.
    """
    folder = Path(folder)
    tok_bytes = None if tokenizer is None else _tokenizer_bytes(tokenizer)  # read before the old folder goes
    with atomic_folder(folder, keep=PROJECT_FILES) as tmp:
        _save_safetensors(_cpu_state(model, dtype), tmp / "model.safetensors")
        atomic_write_text(tmp / "params.json", json.dumps(model.args.to_dict(), indent=2) + "\n")
        if tok_bytes is not None:
            atomic_write_bytes(tmp / "tokenizer.model", tok_bytes)
    return folder
