"""What an arm of the tweak lab changes: ``Variant`` (norm, its place, positions, RoPE base, FFN, attention heads,
tied embeddings) and how it is built from the package's own ``Transformer`` (core/transformer.py) by swapping
or composing its submodules: ``PostNormBlock``, ``MLP``, ``LearnedPositions``, ``LabTransformer``,
``build_model``; parameter and KV-cache accounting (``with_params_of`` matches a reference's parameter count);
and ``CATALOG``, the named arms of the widget."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from ...core.attention import AUTO
from ...core.config import ModelArgs
from ...core.norm import LayerNorm
from ...core.transformer import Transformer, TransformerBlock
from .lab import Lab, TweakError

NORMS = ("rmsnorm", "layernorm", "none")
NORM_PLACES = ("pre", "post")
POSITIONS = ("rope", "learned", "none")
FFNS = ("swiglu", "gelu", "relu")


# ----------------------------------------------------------------------------------------------
# What an arm changes
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One arm: the reference tiny Llama 2 (every default) with some components replaced.

    ``lr`` overrides the recipe's peak learning rate for this arm (None = the lab's), for the
    pre-norm vs post-norm comparison at a high learning rate.
    """

    norm: str = "rmsnorm"
    norm_place: str = "pre"
    positions: str = "rope"
    rope_theta: float = 10000.0
    ffn: str = "swiglu"
    ffn_hidden: int | None = None  # None: SwiGLU's width from ModelArgs, 1.5x for GELU/ReLU (equal params)
    n_heads: int = 4
    n_kv_heads: int | None = None  # None = n_heads (multi-head attention)
    tied: bool = False
    lr: float | None = None

    def __post_init__(self) -> None:
        for name, allowed in (("norm", NORMS), ("norm_place", NORM_PLACES), ("positions", POSITIONS), ("ffn", FFNS)):
            if getattr(self, name) not in allowed:
                raise TweakError(f"{name}={getattr(self, name)!r} is not a variant here; choose one of {allowed}.")
        if self.ffn_hidden is not None and (not isinstance(self.ffn_hidden, int) or self.ffn_hidden < 1):
            raise TweakError(f"ffn_hidden must be a positive integer or None, got {self.ffn_hidden!r}.")
        if self.lr is not None and not self.lr > 0:
            raise TweakError(f"lr must be > 0 or None (the lab's recipe), got {self.lr!r}.")

    def describe(self) -> str:
        """What differs from the reference, in words ("reference" when nothing does)."""
        ref = Variant()
        parts = [
            f"{f.name}={getattr(self, f.name)}" for f in fields(self) if getattr(self, f.name) != getattr(ref, f.name)
        ]
        return ", ".join(parts) or "reference"


# ----------------------------------------------------------------------------------------------
# Building a variant from the package's Transformer
# ----------------------------------------------------------------------------------------------
class PostNormBlock(TransformerBlock):
    """Post-norm, the original Transformer's order (Vaswani et al. 2017): normalise after each residual sum.

    Xiong et al. 2020 show that this puts large gradients on the last layers at initialisation, which
    is why post-norm models need a learning-rate warmup and pre-norm ones (GPT-2, Llama) train without fuss.
    """

    def forward(
        self,
        x: torch.Tensor,
        freqs_cis: torch.Tensor,
        start_pos: int = 0,
        cache=None,
        record: dict | None = None,
        mask=AUTO,
    ) -> torch.Tensor:  # (B, T, dim) -> (B, T, dim)
        h = self.attention_norm(x + self.attention(x, freqs_cis, start_pos, cache, record, mask))
        return self.ffn_norm(h + self.feed_forward(h))


class MLP(nn.Module):
    """The classic two-matrix FFN, w2(act(w1 x)), without biases as everywhere in Llama."""

    def __init__(self, dim: int, hidden_dim: int, activation: str):
        super().__init__()
        self.activation = activation
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)  # up
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, dim) -> (B, T, dim)
        h = self.w1(x)  # (B, T, hidden)
        return self.w2(F.gelu(h) if self.activation == "gelu" else F.relu(h))

    def extra_repr(self) -> str:
        return self.activation


class LearnedPositions(nn.Embedding):
    """The token embedding plus a learned absolute position table (GPT-2 style), for full forward passes.

    ``positions`` has one row per position up to the training length and nothing beyond: such a model
    cannot read a longer sequence at all. It adds rows 0..T-1, so it is for full passes (start_pos 0),
    which is all the lab runs; ``LabTransformer.new_cache`` refuses a KV cache for it.
    The table starts at zero (build_model), so the model starts as the no-position one. GPT-2 draws it from
    N(0, 0.02) like the token embeddings: random rows as large as the tokens' own, which a one-minute run
    spends most of its steps undoing.
    """

    def __init__(self, vocab_size: int, dim: int, max_len: int):
        super().__init__(vocab_size, dim)
        self.positions = nn.Parameter(torch.zeros(max_len, dim))  # (max_len, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, dim)
        return super().forward(tokens) + self.positions[: tokens.shape[1]]


class LabTransformer(Transformer):
    """The package's Transformer, whose RoPE table can be switched off (``rotary=False``).

    Without positions every rotation is the identity: a table of cos 1 and sin 0, so attention sees
    no position at all except through the causal mask (Haviv et al. 2022).
    """

    def __init__(self, args: ModelArgs, rotary: bool = True, cacheable: bool = True):
        self.rotary, self.cacheable = rotary, cacheable  # read by _rope_table, which Transformer.__init__ calls
        super().__init__(args)

    def _rope_table(self, device=None) -> torch.Tensor:
        table = super()._rope_table(device)  # (max_seq_len, head_dim/2, 2) cos, sin
        if not self.rotary:
            table = torch.stack((torch.ones_like(table[..., 0]), torch.zeros_like(table[..., 1])), -1)
        return table

    def new_cache(self, *args, **kwargs):
        if not self.cacheable:
            raise TweakError(
                "this lab model has learned absolute positions, which the lab adds for full "
                "forward passes only; run it without a KV cache (start_pos 0)."
            )
        return super().new_cache(*args, **kwargs)


def model_args(variant: Variant, lab: Lab, vocab_size: int) -> ModelArgs:
    """The ModelArgs of an arm. max_seq_len is probe_len (RoPE and no positions are defined everywhere)
    except for learned positions, whose table stops at the training length."""
    max_len = lab.seq_len if variant.positions == "learned" else lab.probe_len
    try:
        return ModelArgs(
            dim=lab.dim,
            n_layers=lab.n_layers,
            n_heads=variant.n_heads,
            n_kv_heads=variant.n_kv_heads,
            vocab_size=vocab_size,
            multiple_of=lab.multiple_of,
            rope_theta=variant.rope_theta,
            max_seq_len=max_len,
        )
    except ValueError as err:
        raise TweakError(f"variant {variant.describe()}: {err}") from None


def ffn_width(variant: Variant, args: ModelArgs) -> int:
    """Hidden width of the arm's FFN: SwiGLU's from ModelArgs; a two-matrix MLP gets 1.5x that, so that
    2·dim·(1.5 h) = 3·dim·h parameters — the comparison Shazeer (2020) makes."""
    if variant.ffn_hidden is not None:
        return variant.ffn_hidden
    return args.hidden_dim if variant.ffn == "swiglu" else round(1.5 * args.hidden_dim)


def build_model(
    variant: Variant = Variant(),
    lab: Lab | None = None,
    vocab_size: int = 2048,
    seed: int | None = None,
    init_std: float = 0.02,
) -> LabTransformer:
    """The package's Transformer with the variant's components swapped in, initialised like pretraining runs."""
    lab = lab or Lab()
    args = model_args(variant, lab, vocab_size)
    if seed is not None:
        torch.manual_seed(seed)
    model = LabTransformer(args, rotary=variant.positions == "rope", cacheable=variant.positions != "learned")
    if variant.norm_place == "post":
        model.layers = nn.ModuleList(PostNormBlock(i, args) for i in range(args.n_layers))
        model.norm = nn.Identity()  # the last block already ends in a norm (as in the original Transformer)
    hidden = ffn_width(variant, args)
    for layer in model.layers:
        if variant.ffn != "swiglu":
            layer.feed_forward = MLP(args.dim, hidden, variant.ffn)
        elif hidden != args.hidden_dim:
            layer.feed_forward = type(layer.feed_forward)(args.dim, hidden)
        if variant.norm != "rmsnorm":
            layer.attention_norm, layer.ffn_norm = _norm(variant.norm, args), _norm(variant.norm, args)
    if variant.norm != "rmsnorm" and variant.norm_place == "pre":
        model.norm = _norm(variant.norm, args)
    if variant.positions == "learned":
        model.tok_embeddings = LearnedPositions(args.vocab_size, args.dim, args.max_seq_len)
    if variant.tied:
        model.output.weight = model.tok_embeddings.weight  # one (V, dim) matrix reads and writes tokens
    model.init_weights(std=init_std, seed=seed)
    if variant.positions == "learned":
        with torch.no_grad():
            model.tok_embeddings.positions.zero_()  # see LearnedPositions
    return model


def _norm(kind: str, args: ModelArgs) -> nn.Module:
    return LayerNorm(args.dim, eps=args.norm_eps) if kind == "layernorm" else nn.Identity()


def with_params_of(
    variant: Variant, reference: Variant = Variant(), lab: Lab | None = None, vocab_size: int = 2048
) -> Variant:
    """The variant with its FFN widened (or narrowed) to the reference's parameter count, as Llama 2's GQA
    ablation did for MQA and GQA (Touvron et al. 2023, A.2.1): fewer KV parameters, a wider FFN."""
    lab = lab or Lab()
    args = model_args(variant, lab, vocab_size)
    diff = count_params(build_model(reference, lab, vocab_size)) - count_params(build_model(variant, lab, vocab_size))
    per_unit = (3 if variant.ffn == "swiglu" else 2) * args.dim * args.n_layers  # parameters per hidden unit
    return replace(variant, ffn_hidden=ffn_width(variant, args) + round(diff / per_unit))


def count_params(model: nn.Module) -> int:
    """Parameters, a shared (tied) matrix counted once."""
    return sum(p.numel() for p in model.parameters())


def kv_cache_bytes_per_token(args: ModelArgs, bytes_per_value: int = 2) -> int:
    """Keys and values kept per generated token: 2 · n_layers · n_kv_heads · head_dim values (bf16: 2 bytes)."""
    return 2 * args.n_layers * args.kv_heads * args.head_dim * bytes_per_value


# Named arms for the widget: the reference and one change each.
CATALOG: dict[str, Variant] = {
    "reference (Llama 2)": Variant(),
    "LayerNorm": Variant(norm="layernorm"),
    "no norm": Variant(norm="none"),
    "post-norm": Variant(norm_place="post"),
    "learned positions": Variant(positions="learned"),
    "no positions": Variant(positions="none"),
    "RoPE theta 100": Variant(rope_theta=100.0),
    "GELU FFN": Variant(ffn="gelu"),
    "ReLU FFN": Variant(ffn="relu"),
    "GQA (2 KV heads)": Variant(n_kv_heads=2),
    "MQA (1 KV head)": Variant(n_kv_heads=1),
    "tied embeddings": Variant(tied=True),
}
