"""The Llama 2 transformer: pre-norm blocks of attention and SwiGLU, with Meta's parameter names.

A Meta state dict (``tok_embeddings``, ``layers.{i}.attention.wq``, ``layers.{i}.feed_forward.w1``,
``layers.{i}.attention_norm``, ``layers.{i}.ffn_norm``, ``norm``, ``output``) loads with no renaming.
The model never chooses a device or dtype: it follows its weights and inputs.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import AUTO, Attention, CacheError, KVCache, attention_mask, causal_mask
from .config import ModelArgs
from .ffn import FeedForward
from .norm import RMSNorm
from .rope import freqs_cis_real


class InputError(ValueError):
    """Tokens the model cannot take; the message says what is wrong and what to do."""


class TransformerBlock(nn.Module):
    def __init__(self, layer_id: int, args: ModelArgs):
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(args, layer_id)
        self.feed_forward = FeedForward(args.dim, args.hidden_dim)
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        freqs_cis: torch.Tensor,
        start_pos: int = 0,
        cache: KVCache | None = None,
        record: dict | None = None,
        mask=AUTO,
    ) -> torch.Tensor:
        """(B, T, dim) -> (B, T, dim): one residual line for attention, one for the FFN."""
        h = x + self.attention(self.attention_norm(x), freqs_cis, start_pos, cache, record, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(i, args) for i in range(args.n_layers))
        self.norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)  # untied from the embedding
        # RoPE table for every position the model may see, (max_seq_len, head_dim/2, 2) float32 cos/sin.
        # Not part of the state dict: it is a function of the config (Meta recomputes it too).
        self.register_buffer("freqs_cis", self._rope_table(), persistent=False)

    def _rope_table(self, device=None) -> torch.Tensor:
        a = self.args
        return freqs_cis_real(a.head_dim, a.max_seq_len, a.rope_theta).to(device)

    def reset_rope(self, device=None) -> None:
        """Rebuild the RoPE table (after loading onto the meta device, or to change device)."""
        self.freqs_cis = self._rope_table(device if device is not None else self.output.weight.device)

    def _apply(self, fn, recurse: bool = True):
        # model.to(bfloat16) must not round the RoPE table: Meta keeps it complex64 for that reason.
        super()._apply(fn, recurse)
        if self.freqs_cis.dtype != torch.float32 and not self.freqs_cis.is_meta:
            self.reset_rope(self.freqs_cis.device)
        return self

    # ------------------------------------------------------------------------------------------
    def forward(
        self,
        tokens: torch.Tensor,
        start_pos: int = 0,
        cache: KVCache | None = None,
        record: dict | None = None,
        *,
        positions: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tokens (B, T) int64 at positions start_pos.. -> logits (B, T, V) float32.

        Without a cache this is the full forward over the T tokens (start_pos must be 0). With a
        cache, earlier positions come from it and the new keys/values are written into it at slots
        start_pos..start_pos+T-1. ``record``, a dict, receives ``layers.{i}.attention.pattern``
        (B, n_heads, T, S) probabilities and ``layers.{i}.output`` (B, T, dim).

        Rows at their own positions (a left- or right-padded chat batch sharing one cache): pass
        ``positions`` (B, T), each token's RoPE position, and ``valid`` (B, S ≥ start_pos+T), True where a
        cache slot holds a real token; padding is never attended to. RoPE is relative and attention does
        not care where a key is stored, so each row gets exactly what it would get alone.
        ``start_pos`` may also be a 0-d int64 tensor on the model's device: then every step attends the
        whole cache under a mask, so shapes never change (what torch.compile with CUDA graphs needs).
        """
        h = self.features(tokens, start_pos, cache, record, positions=positions, valid=valid)  # (B, T, dim)
        return self.output(h).float()  # (B, T, V)

    def features(
        self,
        tokens: torch.Tensor,
        start_pos: int = 0,
        cache: KVCache | None = None,
        record: dict | None = None,
        *,
        positions: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The same pass without the classifier: the final normed hidden states (B, T, dim), with
        gradients. What a reward model's scalar head reads (paper §3.2.2); ``forward`` is
        ``output(features(...))``, so there is one forward pass."""
        B, T = self._check(tokens, start_pos, cache, positions, valid)
        h = self.tok_embeddings(tokens)  # (B, T, dim)
        freqs_cis, mask = self._rope_and_mask(T, start_pos, cache, positions, valid, tokens.device)
        for layer in self.layers:  # the RoPE rows and the mask are built once, here, for every layer
            h = layer(h, freqs_cis, start_pos, cache, record, mask)  # (B, T, dim)
            if record is not None:
                record[f"layers.{layer.layer_id}.output"] = h.detach()
        return self.norm(h)  # (B, T, dim)

    def _rope_and_mask(self, T: int, start_pos, cache: KVCache | None, positions, valid, device):
        """The RoPE rows ((T, hd/2, 2), or (B, T, hd/2, 2) per row) and the attention mask for this forward."""
        if positions is not None:
            freqs_cis = self.freqs_cis[positions]  # (B, T, head_dim/2, 2): each row at its own positions
        elif isinstance(start_pos, torch.Tensor):  # fixed-shape decoding (compile / CUDA graphs)
            freqs_cis = self.freqs_cis[start_pos + torch.arange(T, device=device)]  # (T, head_dim/2, 2)
        else:
            freqs_cis = self.freqs_cis[start_pos : start_pos + T]  # (T, head_dim/2, 2)
        if isinstance(start_pos, torch.Tensor):
            assert cache is not None  # _check demands one on this path
            S = cache.max_len  # the whole fixed-size cache; the mask hides the unwritten slots
        else:
            S = start_pos + T
        mask = attention_mask(T, S, start_pos, device)  # None: plain causal (T == S) or all (T == 1)
        if valid is not None:
            allowed = causal_mask(T, S, device) if mask is None else mask  # (T, S)
            mask = valid[:, None, None, :S] & allowed  # (B, 1, T, S)
        return freqs_cis, mask

    def _check(
        self, tokens: torch.Tensor, start_pos: int, cache: KVCache | None, positions=None, valid=None
    ) -> tuple[int, int]:
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
            got = (
                f"a tensor of shape {tuple(tokens.shape)}"
                if isinstance(tokens, torch.Tensor)
                else type(tokens).__name__
            )
            raise InputError(
                f"tokens must be a (batch, seq_len) integer tensor, got {got}; "
                "for one sequence use torch.tensor([ids])."
            )
        if tokens.dtype not in (torch.int64, torch.int32):
            raise InputError(f"tokens must be integer ids (int64), got dtype {tokens.dtype}.")
        B, T = tokens.shape
        if isinstance(start_pos, torch.Tensor):
            # The fixed-shape path: positions live on the device; the cache was sized when it was made.
            if cache is None:
                raise InputError("a tensor start_pos is for decoding into a KV cache; pass cache=model.new_cache(...).")
            return B, T
        if T == 0:
            raise InputError("tokens is empty: give at least one token (e.g. BOS = 1).")
        if start_pos < 0:
            raise InputError(f"start_pos must be >= 0, got {start_pos}.")
        if cache is None and start_pos != 0:
            raise InputError(
                f"start_pos={start_pos} needs a KV cache holding the earlier positions; "
                "pass cache=model.new_cache(batch_size) or use start_pos=0."
            )
        if positions is None and start_pos + T > self.args.max_seq_len:  # rows check their own positions
            raise InputError(
                f"sequence of {start_pos + T} positions exceeds max_seq_len={self.args.max_seq_len}; "
                "shorten the input (or drop old turns) — RoPE tables and training stop at max_seq_len."
            )
        if cache is not None:
            cache.check(start_pos, T, B)
        if positions is not None or valid is not None:
            self._check_rows(B, T, start_pos, positions, valid)
        if not torch.compiler.is_compiling():
            lo, hi = int(tokens.min()), int(tokens.max())
            if lo < 0 or hi >= self.args.vocab_size:
                bad = lo if lo < 0 else hi
                raise InputError(
                    f"token id {bad} is outside the vocabulary [0, {self.args.vocab_size}); "
                    "the tokenizer and the model do not match, or the ids are corrupt."
                )
        return B, T

    def _check_rows(self, B: int, T: int, start_pos: int, positions, valid) -> None:
        if positions is None or valid is None:
            raise InputError(
                "rows at their own positions need both positions (B, T) and valid (B, S); "
                "pass both, or neither for the usual shared positions."
            )
        if tuple(positions.shape) != (B, T) or positions.dtype not in (torch.int64, torch.int32):
            raise InputError(
                f"positions must be an integer tensor of shape (B, T) = {(B, T)}, "
                f"got {tuple(positions.shape)} {positions.dtype}."
            )
        if valid.dtype != torch.bool or valid.dim() != 2 or valid.shape[0] != B or valid.shape[1] < start_pos + T:
            raise InputError(
                f"valid must be a bool tensor (B, S) with B = {B} and S >= {start_pos + T} "
                f"(the cache slots written so far), got {tuple(valid.shape)} {valid.dtype}."
            )
        if not torch.compiler.is_compiling():
            lo, hi = int(positions.min()), int(positions.max())
            if lo < 0 or hi >= self.args.max_seq_len:
                raise InputError(
                    f"position {lo if lo < 0 else hi} is outside 0..{self.args.max_seq_len - 1} "
                    "(max_seq_len): shorten the rows."
                )

    # ------------------------------------------------------------------------------------------
    def new_cache(self, batch_size: int = 1, max_len: int | None = None, device=None, dtype=None) -> KVCache:
        """A zeroed KV cache for ``batch_size`` sequences of up to ``max_len`` positions.

        Size it to the request (prompt + new tokens): attention cost grows with the cache you attend to.
        """
        a = self.args
        max_len = a.max_seq_len if max_len is None else max_len
        if not 0 < max_len <= a.max_seq_len:
            raise CacheError(f"max_len must be in 1..{a.max_seq_len} (the model's max_seq_len), got {max_len}.")
        w = self.tok_embeddings.weight
        first = self.layers[0]
        assert isinstance(first, TransformerBlock)
        n_kv_heads = first.attention.n_kv_heads  # the heads attention computes: fewer per rank under TP
        return KVCache(
            a.n_layers, batch_size, max_len, n_kv_heads, a.head_dim, device=device or w.device, dtype=dtype or w.dtype
        )

    @torch.no_grad()
    def run_with_cache(self, tokens: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Full forward that also returns everything recordable, by stable name, as a plain dict."""
        record: dict[str, torch.Tensor] = {}
        logits = self(tokens, record=record)
        return logits, record

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def init_weights(self, std: float = 0.02, seed: int | None = None) -> Transformer:
        """GPT-2/llama2.c-style init for training from scratch: N(0, std), residual outputs scaled down.

        wo and w2 write into the residual stream, so they get std/sqrt(2·n_layers) to keep its
        variance from growing with depth. Norm gains stay at 1.
        """
        gen = torch.Generator(device="cpu")
        if seed is not None:
            gen.manual_seed(seed)
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue
            s = (
                std / (2 * self.args.n_layers) ** 0.5
                if name.endswith(("attention.wo.weight", "feed_forward.w2.weight"))
                else std
            )
            p.copy_(torch.randn(p.shape, generator=gen) * s)
        return self
