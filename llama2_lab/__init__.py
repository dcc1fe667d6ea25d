"""llama2_lab: Llama 2, built piece by piece, checked against the reference.

The package is layered; each layer imports only from the ones below it (an import contract in CI):

    cli          ``llama2-lab`` commands
    course       learner checks, figures, widgets, the attention explorer, student copies
    experiments  Ghost Attention in miniature
    training     pretraining and fine-tuning with the Llama 2 recipe
    inference    sampling, generation, the compiled fast path, benchmarks
    formats      checkpoints: this project's, Meta's, Hugging Face's, llama2.c's
    text         tokenizer and chat format          corpora   the generated stories and dialogues
    core         ModelArgs, RMSNorm, RoPE, SwiGLU, attention + KV cache, the transformer, calc
    utils        atomic writes, device and dtype
"""

from importlib import import_module

__version__ = "0.2.0"

from .core.calc import count_params
from .core.config import ModelArgs
from .core.transformer import Transformer
from .formats import default_model_path, load_model, load_tokenizer, save_model
from .inference import generate
from .text.chat import encode_dialog
from .text.tokenizer import Tokenizer

__all__ = [
    "ModelArgs",
    "Transformer",
    "count_params",
    "load_model",
    "save_model",
    "load_tokenizer",
    "default_model_path",
    "Tokenizer",
    "encode_dialog",
    "generate",
    "checks",
    "__version__",
]


def __getattr__(name: str):
    # `from llama2_lab import checks` works without importing the course layer for every user.
    if name == "checks":
        return import_module(".course.checks", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
