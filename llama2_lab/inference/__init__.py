"""Running a model: sampling as pure functions, the generation loop, batches, the compiled fast path.

sampling   temperature, top-k, top-p (Meta's sample_top_p), greedy: pure functions on logits
inputs     prompt ids, stop conditions, seeds; stop strings held back until they cannot match
generation prefill once, decode on the KV cache: generate, generate_iter, stream, generate_text, chat
batch      several prompts at once, right-padded as Meta's generate does
fast       the opt-in compiled decoder (torch.compile), for GPUs and long runs
bench      tokens/s and memory against Hugging Face's generate (``llama2-lab bench``)
"""

from ..utils.device import DTYPES, pick_device, resolve_dtype
from .batch import generate_batch
from .generation import Generation, TextStream, chat, fit_dialog, generate, generate_iter, generate_text, stream
from .sampling import (
    LogitsError,
    check_logits,
    check_sampling,
    filtered_distributions,
    logits_to_probs,
    sample_next,
    sample_top_p,
    top_k_filter,
    top_p_filter,
)

__all__ = [
    "DTYPES",
    "pick_device",
    "resolve_dtype",
    "generate_batch",
    "Generation",
    "TextStream",
    "chat",
    "fit_dialog",
    "generate",
    "generate_iter",
    "generate_text",
    "stream",
    "LogitsError",
    "check_logits",
    "check_sampling",
    "filtered_distributions",
    "logits_to_probs",
    "sample_next",
    "sample_top_p",
    "top_k_filter",
    "top_p_filter",
]
