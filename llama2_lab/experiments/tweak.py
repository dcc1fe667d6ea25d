"""The tweak lab: swap one component of a tiny Llama 2, retrain it for a minute, compare with the seed noise.

Every arm of an ablation is the package's own ``Transformer`` (core/transformer.py) with one thing replaced by
composing or swapping its submodules; nothing here is a second transformer:

    norm        "rmsnorm" (Llama 2) | "layernorm" | "none"        -> attention_norm, ffn_norm, norm swapped
    norm_place  "pre" (Llama 2) | "post" (the original Transformer) -> PostNormBlock, a 3-line forward
    positions   "rope" (Llama 2) | "learned" (GPT-2 style table) | "none" (RoPE table of cos 1, sin 0)
    rope_theta  RoPE's base (10,000 in Llama 2)
    ffn         "swiglu" (Llama 2) | "gelu" | "relu"               -> a two-matrix MLP, 1.5x wider: equal params
    n_heads, n_kv_heads    MHA (n_kv_heads None) | GQA | MQA (1)
    tied        share output.weight with tok_embeddings.weight (Llama 2 keeps them untied)

or a learner's own model (``model_fn``, e.g. notebook 06's ``MyTransformer``). Every arm trains with
the Llama 2 recipe from training/recipe.py (AdamW β = (0.9, 0.95), weight decay 0.1 on matrices, clipping at 1.0,
linear warmup then cosine to 10 %; Touvron et al. 2023 §2.2) on the generated story corpus, tokenized
with the shipped model's tokenizer, for a fixed number of steps and seeds. A run returns its curves and
three probes: validation loss, loss by position past the training length, and copying (names and
repeated random tokens, as in the shipped model's card). Results are cached on disk by a hash of the
settings, so running a notebook again is instant.

    lab = Lab.preset("learner")
    results = run_arms({"pre-norm": Variant(), "post-norm": Variant(norm_place="post")}, lab, seeds=(0, 1))
    print(format_table(summarize(results)))
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.attention import AUTO
from ..core.config import ModelArgs
from ..core.norm import LayerNorm
from ..core.transformer import Transformer, TransformerBlock
from ..training import (
    TrainConfig,
    batch_indices,
    evaluate,
    loss_on,
    lr_at,
    make_optimizer,
    name_copy_scores,
    repeated_token_losses,
)
from ..utils.io import atomic_write_text

TWEAK_VERSION = 2  # part of every cache key: bump it when a change here changes results

NORMS = ("rmsnorm", "layernorm", "none")
NORM_PLACES = ("pre", "post")
POSITIONS = ("rope", "learned", "none")
FFNS = ("swiglu", "gelu", "relu")


class TweakError(ValueError):
    """A variant or lab setting the tweak lab cannot build or run; the message says what to change."""


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
# The shared model shape and recipe
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lab:
    """The shape, data and recipe every arm shares (the recipe is training/recipe.py's, Llama 2 §2.2)."""

    dim: int = 64
    n_layers: int = 2
    multiple_of: int = 32
    seq_len: int = 64  # T of a training row
    probe_len: int = 128  # validation windows for the length probe: past seq_len is unseen
    batch_size: int = 8
    steps: int = 150
    lr: float = 1e-2  # peak LR of the recipe at this size and length of run (3e-3 underfits in 150 steps)
    warmup_steps: int = 30  # 20 %: with 15, one seed in three stalled on a plateau for most of the run
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    n_train_stories: int = 1500
    n_valid_stories: int = 60
    eval_every: int = 25
    eval_rows: int = 32  # validation rows (seq_len + 1 tokens each) per evaluation
    probe_rows: int = 16  # rows of probe_len + 1 tokens for the length probe
    name_stories: int = 30  # validation stories for the name-copy probe
    num_threads: int | None = 1  # tiny matrices: one thread is fastest and polite to a shared CPU

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("lr", "weight_decay", "grad_clip", "num_threads"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if f.name == "warmup_steps" else 1):
                raise TweakError(f"Lab.{f.name} must be a positive integer, got {value!r}.")
        if self.probe_len < self.seq_len:
            raise TweakError(
                f"probe_len ({self.probe_len}) must be >= seq_len ({self.seq_len}): it measures "
                "the loss on and past the training length."
            )
        if self.warmup_steps >= self.steps:
            raise TweakError(f"warmup_steps ({self.warmup_steps}) must be below steps ({self.steps}).")

    @classmethod
    def preset(cls, name: str, **overrides) -> Lab:
        """ "learner" (about 4 s an arm and seed on one idle core), "fast" (CI: well under a second), "test"."""
        if name not in LAB_PRESETS:
            raise TweakError(f"unknown lab preset {name!r}; choose one of {', '.join(LAB_PRESETS)}.")
        return cls(**{**LAB_PRESETS[name], **overrides})

    def train_config(self, variant: Variant, seed: int, vocab_size: int) -> TrainConfig:
        """The TrainConfig of one arm: its lr_at, make_optimizer and batch order are reused as they are."""
        return TrainConfig(
            model=dict(
                dim=self.dim,
                n_layers=self.n_layers,
                n_heads=variant.n_heads,
                n_kv_heads=variant.n_kv_heads,
                multiple_of=self.multiple_of,
            ),
            vocab_size=vocab_size,
            seq_len=self.seq_len,
            batch_size=self.batch_size,
            max_steps=self.steps,
            lr=variant.lr or self.lr,
            warmup_steps=self.warmup_steps,
            weight_decay=self.weight_decay,
            grad_clip=self.grad_clip,
            seed=seed,
            eval_every=self.eval_every,
            device="cpu",
        )


LAB_PRESETS: dict[str, dict] = {
    "learner": {},
    "fast": dict(
        seq_len=32,
        probe_len=64,
        batch_size=4,
        steps=16,
        warmup_steps=3,
        n_train_stories=200,
        n_valid_stories=20,
        eval_every=8,
        eval_rows=4,
        probe_rows=4,
        name_stories=3,
    ),
    "test": dict(
        dim=32,
        seq_len=16,
        probe_len=32,
        batch_size=4,
        steps=6,
        warmup_steps=2,
        n_train_stories=40,
        n_valid_stories=10,
        eval_every=3,
        eval_rows=4,
        probe_rows=2,
        name_stories=2,
        multiple_of=16,
    ),
}


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


# ----------------------------------------------------------------------------------------------
# Data: the generated stories, tokenized with the shipped model's tokenizer
# ----------------------------------------------------------------------------------------------
def lab_tokenizer():
    """The shipped tiny model's tokenizer (assets/models/llama2-lab-tiny/tokenizer.model, 2,048 pieces)."""
    from ..formats import default_model_path
    from ..text.tokenizer import Tokenizer

    return Tokenizer(default_model_path() / "tokenizer.model")


@dataclass
class LabData:
    train: torch.Tensor  # (N, seq_len + 1)
    valid: torch.Tensor  # (eval_rows, seq_len + 1)
    probe: torch.Tensor  # (probe_rows, probe_len + 1)
    stories: list[str]  # validation stories for the name-copy probe
    tokenizer: object


def lab_data(lab: Lab) -> LabData:
    """Packed training rows (BOS story EOS ...), validation rows from disjoint stories, and probe rows."""
    return _lab_data(
        lab.n_train_stories,
        lab.n_valid_stories,
        lab.seq_len,
        lab.probe_len,
        lab.eval_rows,
        lab.probe_rows,
        lab.name_stories,
    )


@lru_cache(maxsize=4)  # keyed by the settings; a few MB at most
def _lab_data(n_train, n_valid, seq_len, probe_len, eval_rows, probe_rows, name_stories) -> LabData:
    from ..corpora import stories as data

    tok = lab_tokenizer()
    train_ids = [tok.encode(s) for s in data.train_stories(n_train)]
    valid_docs = list(data.valid_stories(n_valid))
    valid_ids = [tok.encode(s) for s in valid_docs]
    rows = data.chunk_tensor(train_ids, seq_len, tok.bos_id, tok.eos_id)  # (N, seq_len + 1)
    valid = data.chunk_tensor(valid_ids, seq_len, tok.bos_id, tok.eos_id)[:eval_rows]
    probe = data.chunk_tensor(valid_ids, probe_len, tok.bos_id, tok.eos_id)[:probe_rows]
    if len(valid) < eval_rows or len(probe) < probe_rows:
        raise TweakError(
            f"{n_valid} validation stories fill {len(valid)} rows of {seq_len + 1} and {len(probe)} of "
            f"{probe_len + 1}; raise Lab.n_valid_stories or lower eval_rows / probe_rows."
        )
    return LabData(rows, valid, probe, valid_docs[:name_stories], tok)


# ----------------------------------------------------------------------------------------------
# Probes
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def loss_by_position(model: nn.Module, rows: torch.Tensor) -> list[float]:
    """Mean next-token loss at each position of rows (B, L + 1), in eval mode: a list of L floats."""
    was_training = model.training
    model.eval()
    try:
        x, y = rows[:, :-1], rows[:, 1:]  # (B, L) each
        logp = model(x).float().log_softmax(-1)  # (B, L, V)
        nll = -logp.gather(-1, y[..., None])[..., 0]  # (B, L)
    finally:
        model.train(was_training)
    return nll.mean(0).tolist()


def probes(model: nn.Module, lab: Lab, d: LabData) -> dict:
    """Validation loss and the behaviour probes of a trained model (plain floats, JSON-ready)."""
    max_len = model.args.max_seq_len
    if max_len >= lab.probe_len:
        by_pos = loss_by_position(model, d.probe)
        beyond, note = _mean(by_pos[lab.seq_len :]), ""
    else:
        by_pos = loss_by_position(model, d.probe[:, : lab.seq_len + 1])
        beyond = None
        note = (
            f"cannot read past position {max_len}: a learned absolute table has no row for it "
            f"(the probe asks for {lab.probe_len})"
        )
    names = name_copy_scores(model, d.tokenizer, d.stories)
    length = max(1, min(40, (max_len - 1) // 2))
    first, second = repeated_token_losses(model, n_rows=8, length=length, seed=0)
    return {
        "loss_by_position": by_pos,
        "loss_within": _mean(by_pos[: lab.seq_len]),
        "loss_beyond": beyond,
        "beyond_note": note,
        "name_copy_logp": _mean(names),
        "name_copy_n": len(names),
        "name_uniform_logp": -math.log(max(1, _n_names(d.tokenizer))),
        "repeat_first": first,
        "repeat_second": second,
    }


def _mean(xs) -> float | None:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


def _n_names(tok) -> int:
    from ..training import name_token_ids

    return len(name_token_ids(tok))


# ----------------------------------------------------------------------------------------------
# One arm, one seed: train (or read the cache)
# ----------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    """One trained arm and seed: its loss curve, headline numbers and probes (JSON-ready)."""

    label: str
    seed: int
    variant: dict
    history: list[dict]  # per step: step, train_loss, lr, val_loss (None between evaluations)
    val_loss: float | None  # the last evaluation; None if the run diverged
    diverged_at: int | None  # the step whose loss was not finite, or None
    params: int
    kv_bytes_per_token: int
    probes: dict
    wall_s: float
    key: str
    cached: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunResult:
        return cls(**d)


def cache_dir() -> Path:
    """$LLAMA2_LAB_CACHE/tweak, or ~/.cache/llama2-lab/tweak."""
    root = os.environ.get("LLAMA2_LAB_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "llama2-lab") / "tweak"


def run_key(variant: Variant, lab: Lab, seed: int, custom: str | None = None, tokenizer=None) -> str:
    """A hash of everything a run depends on (num_threads aside: it changes float rounding only)."""
    tok = tokenizer or lab_tokenizer()
    settings = {
        "version": TWEAK_VERSION,
        "torch": torch.__version__,
        "variant": asdict(variant),
        "lab": {k: v for k, v in asdict(lab).items() if k != "num_threads"},
        "seed": seed,
        "tokenizer": hashlib.sha256(tok.model_proto).hexdigest()[:16],
        "custom": custom,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]


def model_fingerprint(model: nn.Module) -> str:
    """Parameter names and shapes plus the initial logits on fixed tokens: the cache key of a learner's model,
    so editing the class (and so what it computes) trains it again."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, model.args.vocab_size, (1, 16), generator=gen)
    with torch.no_grad():
        logits = model(tokens).float()
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(f"{name}{tuple(p.shape)};".encode())
    h.update(type(model).__name__.encode())
    h.update(torch.round(logits * 1e3).to(torch.int64).numpy().tobytes())
    return h.hexdigest()[:16]


def train_arm(
    variant: Variant = Variant(),
    lab: Lab | None = None,
    seed: int = 0,
    label: str = "",
    model_fn: Callable[[ModelArgs], nn.Module] | None = None,
    callback=None,
    use_cache: bool = True,
    cache: str | Path | None = None,
) -> RunResult:
    """Train one arm for lab.steps steps with one seed, or read the identical earlier run from the cache.

    ``model_fn(args)`` builds a learner's own model instead (it must have ``.args``; it gets the
    package's initialisation by parameter name). ``callback(row)`` sees every trained step:
    {"step", "train_loss", "lr", "val_loss"}; a cached result calls it with nothing.
    """
    lab = lab or Lab()
    d = lab_data(lab)
    vocab = d.tokenizer.vocab_size
    cfg = lab.train_config(variant, seed, vocab)
    if lab.num_threads is not None:
        torch.set_num_threads(lab.num_threads)
    if model_fn is None:
        model = build_model(variant, lab, vocab, seed=seed)
        custom = None
    else:
        model = _custom_model(model_fn, model_args(variant, lab, vocab), seed)
        custom = model_fingerprint(model)
    key = run_key(variant, lab, seed, custom, d.tokenizer)
    path = Path(cache) if cache is not None else cache_dir()
    path = path / f"{key}.json"
    if use_cache and path.is_file():
        try:
            res = RunResult.from_dict(json.loads(path.read_text()))
            res.cached, res.label = True, label or res.label
            return res
        except (ValueError, TypeError):
            pass  # an unreadable or old entry: train again and overwrite it
    res = _train(model, cfg, lab, d, variant, seed, label, key, callback)
    if use_cache:
        atomic_write_text(path, json.dumps(res.to_dict()) + "\n")
    return res


def _custom_model(model_fn, args: ModelArgs, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = model_fn(args)
    if not hasattr(model, "args"):
        raise TweakError(
            f"{type(model).__name__} has no .args: give your model the ModelArgs it was built "
            "with (self.args = args), as the package's Transformer does."
        )
    # The package's initialisation, by parameter name (it only reads named_parameters and args.n_layers),
    # so a learner's model with Meta's names starts from exactly the package model's weights.
    init = getattr(model, "init_weights", None)
    if init is not None:
        init(std=0.02, seed=seed)
    else:
        Transformer.init_weights(model, std=0.02, seed=seed)
    return model


def _train(
    model, cfg: TrainConfig, lab: Lab, d: LabData, variant: Variant, seed: int, label: str, key: str, callback
) -> RunResult:
    """The pretraining loop without its files and checkpoints: lr_at, AdamW, clipping, seeded batch order."""
    device = torch.device("cpu")
    random.seed(seed)
    model.train()
    opt = make_optimizer(model, cfg)
    history, diverged_at, val = [], None, None
    t0 = time.perf_counter()
    for step in range(cfg.max_steps):
        lr = lr_at(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        rows = d.train[batch_indices(step, cfg.batch_size, len(d.train), seed)]  # (B, T + 1)
        loss = loss_on(model, rows, device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        row = {"step": step + 1, "train_loss": loss.item(), "lr": lr, "val_loss": None}
        if not math.isfinite(row["train_loss"]):
            diverged_at, row["train_loss"] = step + 1, None
        elif (step + 1) % lab.eval_every == 0 or step + 1 == cfg.max_steps:
            val = evaluate(model, d.valid, lab.batch_size, device)
            row["val_loss"] = val if math.isfinite(val) else None
        history.append(row)
        if callback is not None:
            callback(dict(row))
        if diverged_at is not None:
            val = None
            break
    wall = time.perf_counter() - t0
    args = model.args
    found = probes(model, lab, d) if diverged_at is None else {}
    return RunResult(
        label=label or variant.describe(),
        seed=seed,
        variant=asdict(variant),
        history=history,
        val_loss=val,
        diverged_at=diverged_at,
        params=count_params(model),
        kv_bytes_per_token=kv_cache_bytes_per_token(args),
        probes=found,
        wall_s=round(wall, 3),
        key=key,
    )


# ----------------------------------------------------------------------------------------------
# Several arms, several seeds, and an honest comparison
# ----------------------------------------------------------------------------------------------
Arm = Variant | Callable[[ModelArgs], nn.Module]


def run_arms(
    arms: dict[str, Arm],
    lab: Lab | None = None,
    seeds=(0, 1),
    callback=None,
    use_cache: bool = True,
    cache: str | Path | None = None,
) -> dict[str, list[RunResult]]:
    """Train every arm with every seed. An arm is a Variant, or a function args -> model (a learner's
    model, with the reference shape). ``callback(label, seed, row)`` sees each trained step and
    ``callback(label, seed, result)`` each finished run (cached ones included)."""
    lab = lab or Lab()
    if len(seeds) < 1:
        raise TweakError("give at least one seed (two or more to see the seed-to-seed spread).")
    out: dict[str, list[RunResult]] = {}
    for label, arm in arms.items():
        variant, model_fn = (arm, None) if isinstance(arm, Variant) else (Variant(), arm)
        if not isinstance(arm, Variant) and not callable(arm):
            raise TweakError(f"arm {label!r} is a {type(arm).__name__}; give a Variant or a function args -> model.")
        out[label] = []
        for seed in seeds:
            step_cb = (lambda row, label=label, seed=seed: callback(label, seed, row)) if callback else None
            res = train_arm(
                variant, lab, seed, label=label, model_fn=model_fn, callback=step_cb, use_cache=use_cache, cache=cache
            )
            out[label].append(res)
            if callback is not None:
                callback(label, seed, res)
    return out


def _stats(values: list[float]) -> dict:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return {"mean": mean, "sd": sd, "min": min(values), "max": max(values), "n": n}


def summarize(results: dict[str, list[RunResult]], metric: str = "val_loss") -> list[dict]:
    """One row per arm: mean, sd, min, max over seeds of a metric ("val_loss", or a probe name such as
    "loss_beyond"), with params, KV bytes per token and how many seeds diverged or could not be measured."""
    rows = []
    for label, runs in results.items():
        values = [_metric(r, metric) for r in runs]
        ok = [v for v in values if v is not None]
        row = {
            "arm": label,
            "metric": metric,
            "params": runs[0].params,
            "kv_bytes_per_token": runs[0].kv_bytes_per_token,
            "seeds": len(runs),
            "diverged": sum(r.diverged_at is not None for r in runs),
            "missing": len(values) - len(ok),
            "note": next((r.probes.get("beyond_note", "") for r in runs if r.probes.get("beyond_note")), ""),
        }
        row.update(_stats(ok) if ok else {"mean": None, "sd": None, "min": None, "max": None, "n": 0})
        rows.append(row)
    return rows


def _metric(r: RunResult, metric: str) -> float | None:
    return r.val_loss if metric == "val_loss" else r.probes.get(metric)


def compare(results: dict[str, list[RunResult]], a: str, b: str, metric: str = "val_loss") -> dict:
    """Is arm b different from arm a beyond the seed-to-seed noise?

    A rule of thumb for a handful of seeds, not a significance test: the difference counts as clear
    when the seeds' ranges do not overlap and the mean difference exceeds three times the larger
    seed standard deviation. Otherwise the verdict is that this run cannot tell the arms apart.
    The verdict also lists the differences seed by seed (both arms with the same seed see the same
    batches): one sign in every seed is worth noticing even when the rule says "cannot tell".
    """
    sa, sb = (next(r for r in summarize({k: results[k]}, metric)) for k in (a, b))
    if sa["n"] == 0 or sb["n"] == 0:
        gone = a if sa["n"] == 0 else b
        return {
            "a": a,
            "b": b,
            "diff": None,
            "noise": None,
            "clear": False,
            "verdict": f"{gone} has no {metric} to compare (it diverged or could not be measured).",
        }
    diff = sb["mean"] - sa["mean"]
    sds = [s for s in (sa["sd"], sb["sd"]) if s is not None and math.isfinite(s)]
    noise = max(sds) if sds else 0.0
    apart = sb["min"] > sa["max"] or sa["min"] > sb["max"]
    clear = apart and abs(diff) > 3 * noise and sa["n"] > 1 and sb["n"] > 1
    by_seed = {r.seed: _metric(r, metric) for r in results[a]}
    paired = [
        _metric(r, metric) - by_seed[r.seed]
        for r in results[b]
        if by_seed.get(r.seed) is not None and _metric(r, metric) is not None
    ]
    if clear:
        word = "higher" if diff > 0 else "lower"
        verdict = (
            f"{b} is {word} than {a} by {abs(diff):.3f} ({metric}), beyond the seed-to-seed spread "
            f"(sd up to {noise:.3f} over {sa['n']} and {sb['n']} seeds)."
        )
    else:
        verdict = (
            f"{b} vs {a}: {diff:+.3f} ({metric}), within the seed-to-seed spread (sd up to "
            f"{noise:.3f}): this run cannot tell them apart."
        )
    if len(paired) > 1:
        verdict += " Seed by seed: " + ", ".join(f"{d:+.3f}" for d in paired) + "."
    return {"a": a, "b": b, "diff": diff, "noise": noise, "clear": clear, "paired": paired, "verdict": verdict}


def format_table(rows: list[dict], digits: int = 3) -> str:
    """The summary as a plain-text table: arm, mean ± sd (min..max) over seeds, params, KV bytes/token."""
    head = f"{'arm':<28} {rows[0]['metric'] if rows else '':>24}   {'seeds':>5} {'params':>9} {'KV B/token':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["n"]:
            sd = "" if r["n"] < 2 else f" ± {r['sd']:.{digits}f}"
            val = f"{r['mean']:.{digits}f}{sd}"
        else:
            val = "diverged" if r["diverged"] else "n/a"
        extra = f"  ({r['diverged']} diverged)" if r["diverged"] and r["n"] else ""
        lines.append(
            f"{r['arm']:<28} {val:>24}   {r['seeds']:>5} {r['params']:>9,} {r['kv_bytes_per_token']:>10,}{extra}"
        )
    return "\n".join(lines)


def mean_curve(runs: list[RunResult], key: str = "val_loss") -> tuple[list[int], list[float], list[float], list[float]]:
    """Steps where every seed has a value, and the mean, min and max over seeds there (for a band plot)."""
    per_seed = [{row["step"]: row[key] for row in r.history if row.get(key) is not None} for r in runs]
    steps = sorted(set.intersection(*(set(s) for s in per_seed))) if per_seed else []
    mean = [sum(s[t] for s in per_seed) / len(per_seed) for t in steps]
    lo = [min(s[t] for s in per_seed) for t in steps]
    hi = [max(s[t] for s in per_seed) for t in steps]
    return steps, mean, lo, hi


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
