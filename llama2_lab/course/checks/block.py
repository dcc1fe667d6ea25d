"""check_block: the learner's transformer block, and which sub-step differs when no known mistake matches."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from ...core import attention as _attn
from ...core import ffn as _ffn
from ...core import norm as _norm
from ...core import rope as _rope
from .attention import _ATTN_HINTS, _attention_fn, _attn_args, _exc_extra_heads, _load_weights, _meta_mask, _run_chunks
from .harness import (
    CheckResult,
    _build,
    _call_by_name,
    _Case,
    _close,
    _is_module_class,
    _Mistake,
    _randn,
    _require_module,
    _run,
)


def _block_fn(x, P, freqs, H, KV, eps, starts, kind=None):
    """Meta's TransformerBlock written out over the parameter dict P (Meta names)."""
    attn_kind = kind if kind in _ATTN_HINTS else None
    W = {k: P[f"attention.{k}.weight"] for k in ("wq", "wk", "wv", "wo")}
    an, fn_ = P["attention_norm.weight"], P["ffn_norm.weight"]
    if kind == "norms_swapped":
        an, fn_ = fn_, an
    attn = lambda h: _attention_fn(h, W, freqs, H, KV, starts, attn_kind)
    ffn = lambda h: _ffn.swiglu(
        h, P["feed_forward.w1.weight"], P["feed_forward.w2.weight"], P["feed_forward.w3.weight"]
    )
    norm = lambda h, w: _norm.rms_norm(h, w, eps)
    if kind == "post_norm":
        h = norm(x + attn(x), an)
        return norm(h + ffn(h), fn_)
    if kind == "no_residual":
        h = attn(norm(x, an))
        return ffn(norm(h, fn_))
    if kind == "parallel":
        return x + attn(norm(x, an)) + ffn(norm(x, fn_))
    if kind == "ffn_residual_from_x":
        h = x + attn(norm(x, an))
        return x + ffn(norm(h, fn_))
    if kind == "attn_residual_missing":
        h = attn(norm(x, an))
        return h + ffn(norm(h, fn_))
    if kind == "ffn_residual_missing":
        h = x + attn(norm(x, an))
        return ffn(norm(h, fn_))
    if kind == "no_ffn":
        return x + attn(norm(x, an))
    if kind == "no_attention":
        return x + ffn(norm(x, fn_))
    h = x + attn(norm(x, an))
    return h + ffn(norm(h, fn_))


_BLOCK_HINTS = {
    "post_norm": "your output matches post-norm (norm after the residual add, as in the original Transformer): "
    "Llama is pre-norm — h = x + attention(attention_norm(x)); out = h + feed_forward(ffn_norm(h)).",
    "no_residual": "your output matches the block without residual connections: add the input back, "
    "h = x + attention(...), out = h + feed_forward(...).",
    "parallel": "your output matches attention and FFN in parallel (both read x): in Llama the FFN reads h, the "
    "output of the attention residual.",
    "ffn_residual_from_x": "your output matches out = x + feed_forward(...): the second residual adds to h "
    "(after attention), not x.",
    "norms_swapped": "your output matches the two norms swapped: attention_norm goes before attention, ffn_norm "
    "before the feed-forward.",
    "attn_residual_missing": "the residual of the attention branch is missing: your output matches "
    "h = attention(attention_norm(x)) without the + x. Write h = x + attention(...).",
    "ffn_residual_missing": "the residual of the feed-forward branch is missing: your output matches "
    "out = feed_forward(ffn_norm(h)) without the + h. Write out = h + feed_forward(...).",
    "no_ffn": "the feed-forward branch is missing: your output matches h = x + attention(attention_norm(x)) "
    "alone. Add out = h + feed_forward(ffn_norm(h)).",
    "no_attention": "the attention branch is missing: your output matches x + feed_forward(ffn_norm(x)). "
    "First h = x + attention(attention_norm(x), freqs_cis), then the feed-forward on h.",
}


def _block_cases(cached: bool) -> list[_Case]:
    spec = [
        (4, 4, 32, 2, 6, torch.float32),
        (4, 2, 32, 2, 7, torch.float32),
        (4, 1, 32, 1, 5, torch.float32),
        (4, 2, 64, 1, 6, torch.bfloat16),
    ]
    cases = []
    for i, (H, KV, dim, B, T, dtype) in enumerate(spec):
        args = _attn_args(H, KV, dim)
        from ...core.transformer import TransformerBlock

        blk = TransformerBlock(0, args)
        with torch.no_grad():
            for j, (_name, p) in enumerate(blk.named_parameters()):
                p.copy_(
                    _randn(*p.shape, seed=810 + 20 * i + j, scale=0.3, shift=1.0)
                    if p.dim() == 1
                    else _randn(*p.shape, seed=810 + 20 * i + j, scale=1.2 * p.shape[1] ** -0.5)
                )
        P = {k: v.to(dtype) for k, v in blk.state_dict().items()}
        x = _randn(B, T, dim, seed=830 + i).to(dtype)
        label = f"x {(B, T, dim)} {str(dtype).replace('torch.', '')}, n_heads {H}, n_kv_heads {KV}"
        base = dict(P=P, x=x, H=H, KV=KV, dim=dim, eps=args.norm_eps, table=_rope.freqs_cis_real(dim // H, T))
        cases.append(_Case(label, dtype, {**base, "starts": [0]}))
        if cached and i == 1:
            cases.append(
                _Case(label + ", cached in chunks starting at [0, 3, 6]", dtype, {**base, "starts": [0, 3, 6]})
            )
    return cases


def _differs(got, want, dtype, atol=1e-4, rtol=1e-3) -> bool:
    return not _close(got, want, dtype, atol, rtol)[0]


def _block_substep(m: nn.Module, case: _Case, prefix: str = "your block's") -> tuple[str, str] | None:
    """Which sub-step of a learner's block differs from the package's, each fed the same input.

    Feeds the learner's own attention_norm, attention, ffn_norm and feed_forward the package's intermediate
    values (uncached) and compares each output with the package's piece. None if nothing can be told apart.
    """
    d = case.data
    P, x, eps = d["P"], d["x"], d["eps"]
    W = {k: P[f"attention.{k}.weight"] for k in ("wq", "wk", "wv", "wo")}
    T = x.shape[1]
    freqs = torch.view_as_complex(d["table"].contiguous())
    an = _norm.rms_norm(x, P["attention_norm.weight"], eps)
    a = _attention_fn(an, W, d["table"], d["H"], d["KV"], [0])
    h = x + a
    fn_in = _norm.rms_norm(h, P["ffn_norm.weight"], eps)
    f = _ffn.swiglu(fn_in, P["feed_forward.w1.weight"], P["feed_forward.w2.weight"], P["feed_forward.w3.weight"])
    subs = [
        (
            "attention_norm",
            lambda mod: mod(x),
            an,
            "the RMSNorm before attention (attention_norm)",
            "check it with check_rmsnorm, and build it with args.norm_eps",
        ),
        (
            "attention",
            lambda mod: _call_by_name(
                mod.forward, an, dict(freqs_cis=freqs, start_pos=0, cache=None, mask=_meta_mask(T, T)), "attention"
            ),
            a,
            "the attention sub-layer",
            "check it with check_attention first",
        ),
        (
            "ffn_norm",
            lambda mod: mod(h),
            fn_in,
            "the RMSNorm before the feed-forward (ffn_norm)",
            "check it with check_rmsnorm, and build it with args.norm_eps",
        ),
        ("feed_forward", lambda mod: mod(fn_in), f, "the feed-forward sub-layer", "check it with check_swiglu"),
    ]
    for name, run, want, words, tip in subs:
        mod = getattr(m, name, None)
        if not isinstance(mod, nn.Module):
            continue
        try:
            got = run(mod)
        except Exception:
            return (f"substep_{name}", f"{prefix} {words} raises on the package's input of that step: {tip}.")
        if _differs(got, want, case.dtype):
            return (
                f"substep_{name}",
                f"{prefix} {words} differs from the package's on the same input (everything before it matches): {tip}.",
            )
    if len(d.get("starts", [0])) > 1:
        return (
            "substep_cache",
            f"{prefix} sub-layers each match the package's, uncached; the cached chunks "
            "differ: pass start_pos and the cache through to the attention, and give it the "
            "RoPE rows of positions start_pos.. (freqs_cis[start_pos : start_pos + T]).",
        )
    return (
        "substep_combine",
        f"{prefix} four sub-layers each match the package's on the same input; the way the "
        "block combines them differs: h = x + attention(attention_norm(x)); "
        "out = h + feed_forward(ffn_norm(h)).",
    )


def check_block(cls, verbose: bool = True) -> CheckResult:
    """Compare a learner's ``TransformerBlock(layer_id, args)`` (Meta names) with the package's block."""
    _require_module(cls, "check_block", "MyBlock")
    fwd = cls.forward if _is_module_class(cls) else type(cls).forward
    uses_cache = "cache" in inspect.signature(fwd).parameters
    from ...core.transformer import TransformerBlock

    built: dict = {}

    def learner(case):
        d = case.data
        args = _attn_args(d["H"], d["KV"], d["dim"])
        m = cls if isinstance(cls, nn.Module) else _build(cls, ((0, args), {}), ((args, 0), {}), ((args,), {}))
        _load_weights(m, d["P"], f"{type(m).__name__}(0, args)")
        m = m.to(case.dtype)
        built["m"] = m
        hd = d["dim"] // d["H"]
        make_cache = lambda: _attn.KVCache(1, d["x"].shape[0], d["x"].shape[1], d["KV"], hd, dtype=case.dtype)
        return _run_chunks(m.forward, d["x"], d["table"], d["starts"], make_cache, uses_cache and len(d["starts"]) > 1)

    def reference(case):
        d = case.data
        ref = TransformerBlock(0, _attn_args(d["H"], d["KV"], d["dim"]))
        ref.load_state_dict(d["P"])
        return ref.to(case.dtype)(d["x"], d["table"])

    hints = {
        **_BLOCK_HINTS,
        **{
            k: _ATTN_HINTS[k]
            for k in ("no_mask", "repeat_tiled", "no_rope", "scale_head_dim", "cache_ignored", "mask_not_offset")
        },
    }
    mistakes = [
        _Mistake(
            k,
            h,
            (
                lambda kind: (
                    lambda c: _block_fn(
                        c.data["x"],
                        c.data["P"],
                        c.data["table"],
                        c.data["H"],
                        c.data["KV"],
                        c.data["eps"],
                        c.data["starts"],
                        kind,
                    )
                )
            )(k),
        )
        for k, h in hints.items()
    ]
    return _run(
        "check_block",
        _block_cases(uses_cache),
        learner,
        reference,
        mistakes,
        atol=1e-4,
        rtol=1e-3,
        fallback="A Llama block: h = x + attention(attention_norm(x)); out = h + feed_forward(ffn_norm(h)).",
        exc_extra=_exc_extra_heads,
        verbose=verbose,
        what="TransformerBlock",
        substep=lambda case, got: _block_substep(built["m"], case) if "m" in built else None,
    )
