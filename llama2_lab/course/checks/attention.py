"""check_repeat_kv and check_attention: grouped-query attention, with and without the KV cache."""

from __future__ import annotations

import inspect
import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from ...core import attention as _attn
from ...core import rope as _rope
from ...core.config import ModelArgs
from .harness import (
    CheckResult,
    _build,
    _call_by_name,
    _Case,
    _is_module_class,
    _Mistake,
    _randn,
    _require_module,
    _run,
    _SetupError,
)
from .rope import _rope_apply_variant


# =============================================================================================
# repeat_kv
# =============================================================================================
def _repeat_variant(kind):
    def fn(case):
        x, n = case.data["x"], case.data["n_rep"]
        if kind == "tiled":
            return x.repeat(1, 1, n, 1)  # head h gets KV head h % n_kv
        if kind == "seq_axis":
            return x.repeat_interleave(n, dim=1)
        if kind == "not_repeated":
            return x
        if kind == "batch_axis":
            return x.repeat_interleave(n, dim=0)
        raise ValueError(kind)

    return fn


_REPEAT_MISTAKES = [
    _Mistake(
        "tiled",
        "your output matches the heads tiled (query head h gets KV head h % n_kv_heads): each KV head "
        "must serve a *contiguous* group, h // n_rep — repeat each head n_rep times in place "
        "(x[:, :, :, None, :].expand(...) or x.repeat_interleave(n_rep, dim=2)).",
        _repeat_variant("tiled"),
    ),
    _Mistake(
        "seq_axis",
        "you repeated along the sequence axis (dim 1): repeat along the head axis, dim 2 of "
        "(B, S, n_kv_heads, head_dim).",
        _repeat_variant("seq_axis"),
    ),
    _Mistake(
        "batch_axis",
        "you repeated along the batch axis (dim 0): repeat along the head axis, dim 2.",
        _repeat_variant("batch_axis"),
    ),
    _Mistake(
        "not_repeated",
        "the output is the input unchanged: with n_rep > 1 every KV head must appear n_rep times, "
        "giving (B, S, n_kv_heads·n_rep, head_dim).",
        _repeat_variant("not_repeated"),
    ),
]


def _repeat_cases() -> list[_Case]:
    spec = [
        ((2, 5, 4, 8), 1, torch.float32),
        ((1, 6, 2, 8), 2, torch.float32),
        ((2, 3, 2, 16), 4, torch.float32),
        ((1, 4, 1, 8), 8, torch.float32),
        ((1, 3, 2, 8), 3, torch.bfloat16),
    ]
    cases = []
    for i, (shape, n_rep, dtype) in enumerate(spec):
        kind = "MHA" if n_rep == 1 else ("MQA" if shape[2] == 1 else "GQA")
        cases.append(
            _Case(
                f"x {shape} {str(dtype).replace('torch.', '')}, n_rep {n_rep} ({kind})",
                dtype,
                dict(x=_randn(*shape, seed=600 + i).to(dtype), n_rep=n_rep),
            )
        )
    return cases


def check_repeat_kv(fn, verbose: bool = True) -> CheckResult:
    """Compare ``fn(x, n_rep)``: (B, S, n_kv_heads, head_dim) -> (B, S, n_kv_heads·n_rep, head_dim)."""
    return _run(
        "check_repeat_kv",
        _repeat_cases(),
        lambda c: fn(c.data["x"].clone(), c.data["n_rep"]),
        lambda c: _attn.repeat_kv(c.data["x"], c.data["n_rep"]),
        _REPEAT_MISTAKES,
        fallback="Query head h uses KV head h // n_rep.",
        verbose=verbose,
        what="repeat_kv",
    )


# =============================================================================================
# Attention, block, model: a functional reference whose variants are the usual mistakes
# =============================================================================================
def _attention_fn(x, W, freqs, n_heads, n_kv, starts, kind=None):
    """Meta's attention written out, x (B, T, dim) processed in chunks starting at ``starts``.

    ``W`` holds wq/wk/wv/wo weights; ``freqs`` the real RoPE table for all T positions.
    ``kind`` selects a known mistake (None = right).
    """
    B, T, dim = x.shape
    hd = W["wq"].shape[0] // n_heads
    n_rep = n_heads // n_kv
    q = F.linear(x, W["wq"]).view(B, T, n_heads, hd)  # (B, T, n_heads, head_dim)
    k = F.linear(x, W["wk"]).view(B, T, n_kv, hd)  # (B, T, n_kv_heads, head_dim)
    v = F.linear(x, W["wv"]).view(B, T, n_kv, hd)
    if kind != "no_rope":
        rot = _rope_apply_variant("rotate_half" if kind == "rope_rotate_half" else "right")
        q, k = rot(_Case("", x.dtype, dict(xq=q, xk=k, table=freqs)))
        if kind == "rotate_v":
            v = rot(_Case("", x.dtype, dict(xq=v, xk=v, table=freqs)))[0]
    if kind == "repeat_tiled":
        k, v = k.repeat(1, 1, n_rep, 1), v.repeat(1, 1, n_rep, 1)
    else:
        k, v = _attn.repeat_kv(k, n_rep), _attn.repeat_kv(v, n_rep)
    q, k, v = (t.transpose(1, 2).float() for t in (q, k, v))  # (B, n_heads, T, head_dim)
    bounds = list(starts) + [T]
    outs = []
    for s, e in zip(bounds[:-1], bounds[1:]):
        ks, kv_ = (k[:, :, s:e], v[:, :, s:e]) if kind == "cache_ignored" else (k[:, :, :e], v[:, :, :e])
        scale = hd if kind == "scale_head_dim" else (1.0 if kind == "no_scale" else math.sqrt(hd))
        scores = q[:, :, s:e] @ ks.transpose(-2, -1) / scale  # (B, n_heads, t, S)
        qpos = torch.arange(s, e)[:, None] - (s if kind in ("cache_ignored", "mask_not_offset") else 0)
        kpos = torch.arange(ks.shape[2])[None, :]
        allowed = {
            "no_mask": torch.ones_like(kpos <= qpos),
            "mask_excludes_diagonal": kpos < qpos,
            "mask_off_by_one": kpos <= qpos + 1,
        }.get(kind, kpos <= qpos)
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-2 if kind == "softmax_wrong_dim" else -1)
        outs.append(probs @ kv_)  # (B, n_heads, t, head_dim)
    out = torch.cat(outs, 2)  # (B, n_heads, T, head_dim)
    if kind == "merge_without_transpose":
        out = out.reshape(B, T, n_heads * hd)  # mixes positions and heads
    else:
        out = out.transpose(1, 2).reshape(B, T, n_heads * hd)  # (B, T, n_heads·head_dim)
    out = out.type_as(x)
    return out if kind == "no_wo" else F.linear(out, W["wo"])


_ATTN_HINTS = {
    "no_mask": "your output matches attention with no causal mask: query i may only see keys j ≤ i (mask the "
    "upper triangle with -inf before the softmax).",
    "mask_excludes_diagonal": "your output matches a causal mask that also hides the diagonal (j < i): a token must "
    "see itself — torch.triu(..., diagonal=1) marks the *forbidden* entries.",
    "mask_off_by_one": "your output matches a causal mask off by one (query i sees key i+1): use "
    "torch.triu(full(-inf), diagonal=1).",
    "repeat_tiled": "your output matches KV heads tiled (query head h reads KV head h % n_kv_heads): Llama groups "
    "them, h // n_rep — use repeat_kv (repeat_interleave on the head axis), not .repeat.",
    "scale_head_dim": "your output matches scores divided by head_dim: divide by sqrt(head_dim).",
    "no_scale": "your output matches unscaled scores: divide q·kᵀ by sqrt(head_dim).",
    "softmax_wrong_dim": "your output matches a softmax over the query axis: normalise over the keys, dim=-1 of "
    "(B, n_heads, T, S).",
    "rotate_v": "your output matches RoPE applied to v as well: rotate only q and k; values carry content, not "
    "position.",
    "no_rope": "your output matches attention without RoPE: rotate q and k with apply_rotary_emb before the scores.",
    "rope_rotate_half": "your output matches rotate-half RoPE: Meta's weights need interleaved pairs (x[2i], x[2i+1]).",
    "merge_without_transpose": "your output matches heads merged without transposing back: (B, n_heads, T, hd) "
    "-> .transpose(1, 2) -> (B, T, n_heads, hd) -> .reshape(B, T, dim).",
    "no_wo": "your output matches the heads' output without the wo projection: finish with self.wo(out).",
    "cache_ignored": "the uncached output is right but the cached one matches attending only to the new tokens: "
    "write k, v into the cache at start_pos, then attend to the cache prefix [:start_pos + T].",
    "mask_not_offset": "the uncached output is right but the cached chunk matches a causal mask not offset by "
    "start_pos: query i sits at position start_pos + i and sees keys j ≤ start_pos + i.",
}

_ATTN_FALLBACK = (
    "Llama attention: q, k, v = wq(x), wk(x), wv(x) split into heads; RoPE on q and k; repeat_kv; "
    "softmax(q kᵀ / sqrt(head_dim) + causal mask) v; merge heads; wo."
)


def _attn_args(n_heads, n_kv, dim, max_len=64) -> ModelArgs:
    return ModelArgs(
        dim=dim, n_layers=2, n_heads=n_heads, n_kv_heads=n_kv, vocab_size=96, multiple_of=16, max_seq_len=max_len
    )


def _meta_mask(T: int, S: int) -> torch.Tensor:
    """Meta's additive mask (T, S): 0 where allowed, -inf above the (offset) diagonal."""
    return torch.zeros(T, S).masked_fill(~_attn.causal_mask(T, S), float("-inf"))


def _run_chunks(forward, x, table, starts, make_cache, uses_cache):
    """Call the learner's forward on x (B, T, dim) chunk by chunk (or once) and concatenate along T."""
    T = x.shape[1]
    if not uses_cache:
        freqs = torch.view_as_complex(table.contiguous())
        return _call_by_name(
            forward, x, dict(freqs_cis=freqs, start_pos=0, mask=_meta_mask(T, T), cache=None), "forward"
        )
    cache = make_cache()
    bounds, outs = list(starts) + [T], []
    for s, e in zip(bounds[:-1], bounds[1:]):
        freqs = torch.view_as_complex(table[s:e].contiguous())
        outs.append(
            _call_by_name(
                forward,
                x[:, s:e],
                dict(freqs_cis=freqs, start_pos=s, mask=_meta_mask(e - s, e), cache=cache),
                "forward",
            )
        )
    return torch.cat(outs, 1)


def _attention_cases(cached: bool) -> list[_Case]:
    spec = [  # (n_heads, n_kv_heads, dim, B, T, dtype)
        (4, 4, 32, 2, 6, torch.float32),  # MHA
        (4, 2, 32, 2, 7, torch.float32),  # GQA, n_rep 2
        (8, 2, 64, 1, 9, torch.float32),  # GQA, n_rep 4
        (4, 1, 32, 2, 5, torch.float32),  # MQA
        (4, 2, 64, 1, 8, torch.bfloat16),
    ]
    cases = []
    for i, (H, KV, dim, B, T, dtype) in enumerate(spec):
        hd = dim // H
        W = {
            "wq": _randn(H * hd, dim, seed=700 + i, scale=1.5 * dim**-0.5),
            "wk": _randn(KV * hd, dim, seed=710 + i, scale=1.5 * dim**-0.5),
            "wv": _randn(KV * hd, dim, seed=720 + i, scale=dim**-0.5),
            "wo": _randn(dim, H * hd, seed=730 + i, scale=dim**-0.5),
        }
        W = {k: w.to(dtype) for k, w in W.items()}
        x = _randn(B, T, dim, seed=740 + i).to(dtype)
        kind = "MHA" if H == KV else ("MQA" if KV == 1 else f"GQA n_rep {H // KV}")
        label = f"x {(B, T, dim)} {str(dtype).replace('torch.', '')}, n_heads {H}, n_kv_heads {KV} ({kind})"
        cases.append(
            _Case(label, dtype, dict(W=W, x=x, H=H, KV=KV, dim=dim, starts=[0], table=_rope.freqs_cis_real(hd, T)))
        )
        if cached and dtype == torch.float32 and i in (1, 3):
            starts = [0, 3, T - 1]  # prefill 3, a chunk, then one token
            cases.append(
                _Case(
                    label + f", cached in chunks starting at {starts}",
                    dtype,
                    dict(W=W, x=x, H=H, KV=KV, dim=dim, starts=starts, table=_rope.freqs_cis_real(hd, T)),
                )
            )
    return cases


def _load_weights(module: nn.Module, state: dict, what: str) -> None:
    """Copy ``state`` into ``module`` by Meta names; missing or mis-shaped names raise a _SetupError."""
    own = module.state_dict()
    missing = [k for k in state if k not in own]
    if missing:
        extra = [k for k in own if k not in state and "freqs" not in k and "cache" not in k]
        tied = ""
        if "output.weight" in missing:
            tied = " Llama 2's output head is untied from the embedding: add self.output = nn.Linear(dim, vocab, bias=False)."
        raise _SetupError(
            f"{what} lacks Meta's parameter name(s) {missing[:4]}{'…' if len(missing) > 4 else ''}"
            f"{'; it has ' + str(extra[:4]) if extra else ''}.{tied} Use Meta's names "
            "(wq, wk, wv, wo; w1, w2, w3; attention_norm, ffn_norm, norm, output)."
        )
    for k, v in state.items():
        if tuple(own[k].shape) != tuple(v.shape):
            raise _SetupError(f"{what}: {k} has shape {tuple(own[k].shape)}, the package's has {tuple(v.shape)}.")
    extra = [
        k
        for k, v in own.items()
        if k not in state
        and isinstance(v, torch.Tensor)
        and v.is_floating_point()
        and "freqs" not in k
        and "cache" not in k
        and "mask" not in k
    ]
    if extra:
        raise _SetupError(f"{what} has parameter(s) Llama does not: {extra[:4]} (no biases anywhere in Llama).")
    module.load_state_dict(state, strict=False)


def _heads_evidence(msg: str, H: int, KV: int, B: int) -> bool:
    """Does an error message show a size that is off by exactly the n_rep factor in the heads?

    E.g. "size of tensor a (4) must match the size of tensor b (2)" with n_heads 4, n_kv_heads 2, or a
    batched matmul that got B·n_kv_heads where it wanted B·n_heads, or a view whose shape holds n_rep
    times the elements it was given.
    """
    n_rep = H // KV
    numbers = [int(n) for n in re.findall(r"\d+", msg)]
    pairs = {(H, KV), (KV, H), (B * H, B * KV), (B * KV, B * H)}
    m = re.search(r"size of tensor a \((\d+)\) must match the size of tensor b \((\d+)\)", msg)
    if m:
        return (int(m.group(1)), int(m.group(2))) in pairs
    m = re.search(r"shape '\[([\d, -]+)\]' is invalid for input of size (\d+)", msg)
    if m:
        dims = [int(d) for d in m.group(1).split(",") if d.strip() not in ("-1", "")]
        return math.prod(dims) == int(m.group(2)) * n_rep
    m = re.search(r"to be: \[(\d+), (\d+)\] but got: \[(\d+), (\d+)\]", msg)  # bmm batch dims
    if m:
        return (int(m.group(1)), int(m.group(3))) in pairs
    return any((a, b) in pairs for a, b in zip(numbers, numbers[1:]))


def _exc_extra_heads(case: _Case, e: BaseException) -> str:
    """Suggest repeat_kv only when the error shows the heads off by the n_rep factor."""
    d = case.data
    H, KV = d.get("H"), d.get("KV")
    B = d["x"].shape[0] if isinstance(d.get("x"), torch.Tensor) else 1
    if H and KV and H != KV and _heads_evidence(str(e).split("\n")[0], H, KV, B):
        return (
            f"The sizes in the error are n_heads={H} against n_kv_heads={KV} (a factor n_rep={H // KV}): "
            f"did you repeat_kv k and v before the scores? "
        )
    return ""


def check_attention(module_class, verbose: bool = True) -> CheckResult:
    """Compare a learner's ``Attention(args)`` (wq/wk/wv/wo) with the package's, uncached and cached."""
    cls = module_class
    _require_module(cls, "check_attention", "MyAttention")
    fwd = cls.forward if _is_module_class(cls) else type(cls).forward
    uses_cache = "cache" in inspect.signature(fwd).parameters

    def learner(case):
        d = case.data
        args = _attn_args(d["H"], d["KV"], d["dim"])
        m = cls if isinstance(cls, nn.Module) else _build(cls, ((args,), {}), ((args, 0), {}))
        _load_weights(m, {f"{k}.weight": w for k, w in d["W"].items()}, f"{type(m).__name__}(args)")
        m = m.to(case.dtype)
        hd = d["dim"] // d["H"]
        make_cache = lambda: _attn.KVCache(1, d["x"].shape[0], d["x"].shape[1], d["KV"], hd, dtype=case.dtype)
        return _run_chunks(m.forward, d["x"], d["table"], d["starts"], make_cache, uses_cache and len(d["starts"]) > 1)

    def reference(case):
        d = case.data
        args = _attn_args(d["H"], d["KV"], d["dim"])
        ref = _attn.Attention(args)
        ref.load_state_dict({f"{k}.weight": w for k, w in d["W"].items()})
        ref = ref.to(case.dtype)
        return ref(d["x"], d["table"])

    mistakes = [
        _Mistake(
            k,
            h,
            (
                lambda kind: (
                    lambda c: _attention_fn(
                        c.data["x"], c.data["W"], c.data["table"], c.data["H"], c.data["KV"], c.data["starts"], kind
                    )
                )
            )(k),
        )
        for k, h in _ATTN_HINTS.items()
    ]
    return _run(
        "check_attention",
        _attention_cases(uses_cache),
        learner,
        reference,
        mistakes,
        atol=1e-4,
        rtol=1e-3,
        fallback=_ATTN_FALLBACK,
        exc_extra=_exc_extra_heads,
        verbose=verbose,
        what="Attention",
    )
