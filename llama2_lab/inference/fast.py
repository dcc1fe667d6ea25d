"""The fast decode path: a static KV cache, a fixed-shape decode step, and torch.compile.

The readable model stays as it is. Decoding one token is a few hundred small kernels, so in eager
mode a GPU spends most of its time waiting for Python to launch them. Two things remove that cost:
1. every decode step has the same shapes — the cache is preallocated to the request's length and the
   position is a device tensor, so the step attends the whole cache under a mask (core/transformer.py);
2. ``torch.compile(mode="reduce-overhead")`` fuses the kernels and records the step once as a CUDA
   graph, then replays it: one launch per token instead of hundreds.
On a CPU there are no CUDA graphs; compile still fuses the element-wise work (mode "default").
"""

from __future__ import annotations

import torch

from ..core.attention import KVCache
from ..core.transformer import Transformer


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class CompiledDecoder:
    """Prefill in eager mode, then decode with a compiled fixed-shape step into a static cache.

    ``max_len`` is rounded up to a multiple of 64 so requests of similar length reuse one compiled graph.
    """

    def __init__(self, model: Transformer, batch_size: int, max_len: int, mode: str | None = None):
        self.model = model
        device = model.output.weight.device
        self.max_len = min(round_up(max_len, 64), model.args.max_seq_len)
        self.cache: KVCache = model.new_cache(batch_size, self.max_len)
        if mode is None:
            mode = "reduce-overhead" if device.type == "cuda" else "default"
        self.cache.mark_static()
        self._step = torch.compile(self._decode, mode=mode, fullgraph=True, dynamic=False)

    def _decode(self, token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """token (B, 1), pos 0-d int64 -> next-token logits (B, V)."""
        return self.model(token, pos, self.cache)[:, -1]

    def reset(self) -> None:
        # Stale keys beyond the new prompt are masked by position, so no zeroing is needed.
        pass

    @torch.inference_mode()
    def prefill(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) at positions 0.. -> logits of the last position (B, V), eager."""
        return self.model(tokens, 0, self.cache)[:, -1]

    @torch.inference_mode()
    def decode(self, token: torch.Tensor, pos: int) -> torch.Tensor:
        """One token (B, 1) at position ``pos`` -> logits (B, V); the result is cloned out of the graph."""
        pos_t = torch.tensor(pos, device=token.device, dtype=torch.long)
        return self._step(token, pos_t).clone()


def compiled_decoder(model: Transformer, batch_size: int, max_len: int) -> CompiledDecoder:
    """A CompiledDecoder for this model and shape, made once and kept on the model itself.

    Compiling costs seconds to minutes, so the decoder is reused; it lives in the model's own
    ``_compiled_decoders`` dict, so it goes away with the model (a module-level cache keyed by
    ``id(model)`` would keep every compiled model alive for the whole session).
    """
    key = (
        batch_size,
        min(round_up(max_len, 64), model.args.max_seq_len),
        model.output.weight.device,
        model.output.weight.dtype,
    )
    decoders = model.__dict__.setdefault("_compiled_decoders", {})
    if key not in decoders:
        decoders[key] = CompiledDecoder(model, batch_size, max_len)
    return decoders[key]
