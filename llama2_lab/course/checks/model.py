"""check_model and check_greedy: the learner's whole model (cached decoding included) and greedy loop."""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from ...core import attention as _attn
from ...core import norm as _norm
from ...core import rope as _rope
from ...core.config import ModelArgs
from .attention import _ATTN_HINTS, _load_weights, _meta_mask
from .block import _BLOCK_HINTS, _block_fn, _block_substep, _differs
from .harness import (
    _ALIASES,
    CheckResult,
    _build,
    _call_by_name,
    _Case,
    _gen,
    _is_module_class,
    _Mistake,
    _randn,
    _report,
    _require_module,
    _run,
    _SetupError,
)


def _model_fn(tokens, sd, args: ModelArgs, kind=None, starts=(0,)):
    """Meta's Transformer forward over a state dict, with an optional known mistake.

    ``starts``: the chunks a cached run feeds (prefill, then more); the result is the same as one pass
    unless ``kind`` is a mistake that only shows when decoding with a cache.
    """
    emb, out_w = sd["tok_embeddings.weight"], sd["output.weight"]
    if kind == "tied_to_output":
        emb = out_w
    if kind == "tied_to_embedding":
        out_w = emb
    h = F.embedding(tokens, emb)  # (B, T, dim)
    if kind == "emb_scaled":
        h = h * math.sqrt(args.dim)
    T = tokens.shape[1]
    theta = 10000.0 if kind == "theta_ignored" else args.rope_theta
    table = _rope.freqs_cis_real(args.head_dim, T, theta)  # (T, head_dim/2, 2)
    if kind == "rope_not_offset":  # every chunk rotated as if it started at position 0
        bounds = list(starts) + [T]
        table = torch.cat([table[: e - s] for s, e in zip(bounds[:-1], bounds[1:])])
    block_kind = kind if kind in _BLOCK_HINTS or kind in _ATTN_HINTS else None
    for i in range(args.n_layers):
        P = {k[len(f"layers.{i}.") :]: v for k, v in sd.items() if k.startswith(f"layers.{i}.")}
        h = _block_fn(h, P, table, args.n_heads, args.kv_heads, args.norm_eps, list(starts), block_kind)
    if kind != "no_final_norm":
        h = _norm.rms_norm(h, sd["norm.weight"], args.norm_eps)
    return F.linear(h, out_w).float()  # (B, T, V)


_MODEL_HINTS = {
    "no_final_norm": "your logits match the model without the final RMSNorm: apply self.norm to h before self.output.",
    "tied_to_output": "your logits match an output head tied to the embedding: Llama 2 keeps tok_embeddings and "
    "output as two separate matrices.",
    "tied_to_embedding": "your logits match logits computed with the embedding matrix: use the separate "
    "self.output head (untied in Llama 2).",
    "emb_scaled": "your logits match embeddings scaled by sqrt(dim): Llama uses the embedding rows as they are.",
    "theta_ignored": "your logits match RoPE with theta = 10000 although this config has another rope_theta: "
    "build the table with args.rope_theta (Code Llama uses 1e6).",
    "rope_not_offset": "the first chunk is right but the later cached chunks match RoPE restarted at position 0: "
    "a chunk at start_pos needs the rows freqs_cis[start_pos : start_pos + T].",
    "post_norm": _BLOCK_HINTS["post_norm"],
    "no_residual": _BLOCK_HINTS["no_residual"],
    "parallel": _BLOCK_HINTS["parallel"],
    "attn_residual_missing": _BLOCK_HINTS["attn_residual_missing"],
    "ffn_residual_missing": _BLOCK_HINTS["ffn_residual_missing"],
    "no_mask": _ATTN_HINTS["no_mask"],
    "no_rope": _ATTN_HINTS["no_rope"],
    "repeat_tiled": _ATTN_HINTS["repeat_tiled"],
    "cache_ignored": _ATTN_HINTS["cache_ignored"],
    "mask_not_offset": _ATTN_HINTS["mask_not_offset"],
}


def _model_cases(cached: bool) -> list[_Case]:
    from ...core.transformer import Transformer

    cases = []
    spec = [
        ("tiny", torch.float32, None),
        ("tiny-mha", torch.float32, None),
        ("tiny-mqa", torch.float32, None),
        ("tiny", torch.bfloat16, None),
        ("tiny", torch.float32, 1e6),
    ]
    for i, (preset, dtype, theta) in enumerate(spec):
        args = ModelArgs.from_name(preset, vocab_size=96, max_seq_len=32)
        if theta is not None:
            args = args.replace(rope_theta=theta)
        model = Transformer(args).init_weights(std=0.08, seed=900 + i)
        with torch.no_grad():
            for j, (_name, p) in enumerate(model.named_parameters()):
                if p.dim() == 1:
                    p.copy_(_randn(*p.shape, seed=910 + 50 * i + j, scale=0.3, shift=1.0))
        sd = {k: v.to(dtype) for k, v in model.state_dict().items()}
        T = 7 if theta is None else 12
        tokens = torch.randint(0, args.vocab_size, (2, T), generator=_gen(920 + i))
        label = (
            f"tokens (2, {T}), preset {preset!r} (n_heads {args.n_heads}, n_kv_heads {args.kv_heads}), "
            f"{str(dtype).replace('torch.', '')}" + (f", rope_theta {theta:g}" if theta is not None else "")
        )
        cases.append(_Case(label, dtype, dict(args=args, sd=sd, tokens=tokens, starts=[0])))
        if cached and dtype == torch.float32 and i in (0, 4):
            starts = [0, 4, T - 1]  # a prompt, a chunk at start_pos 4, then one token
            cases.append(
                _Case(
                    label + f", cached decoding in chunks at start_pos {', '.join(map(str, starts))}",
                    dtype,
                    dict(args=args, sd=sd, tokens=tokens, starts=starts),
                )
            )
    return cases


def _forward_params(cls_or_module) -> tuple[str | None, str | None]:
    """The names ``forward`` uses for start_pos and the cache (None if it takes none)."""
    owner = cls_or_module if isinstance(cls_or_module, type) else type(cls_or_module)
    names = [
        p.name
        for p in inspect.signature(owner.forward).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ][1:]  # without self
    pos = next((n for n in names[1:] if n in _ALIASES["start_pos"]), None)
    cache = next((n for n in names[1:] if n in _ALIASES["cache"]), None)
    return pos, cache


def _model_substep(m: nn.Module, case: _Case) -> tuple[str, str] | None:
    """Which piece of a learner's model differs: embedding, a block (fed the package's input), the final norm."""
    d = case.data
    args, sd, tokens = d["args"], d["sd"], d["tokens"]
    T = tokens.shape[1]
    table = _rope.freqs_cis_real(args.head_dim, T, args.rope_theta)
    h = F.embedding(tokens, sd["tok_embeddings.weight"])
    emb = getattr(m, "tok_embeddings", None)
    if isinstance(emb, nn.Module) and _differs(emb(tokens), h, case.dtype):
        return (
            "substep_embedding",
            "your tok_embeddings gives other vectors than the package's embedding: use "
            "nn.Embedding(vocab_size, dim) and look the tokens up as they are.",
        )
    layers = getattr(m, "layers", None)
    for i in range(args.n_layers):
        P = {k[len(f"layers.{i}.") :]: v for k, v in sd.items() if k.startswith(f"layers.{i}.")}
        want = _block_fn(h, P, table, args.n_heads, args.kv_heads, args.norm_eps, [0])
        if isinstance(layers, nn.ModuleList) and i < len(layers):
            try:
                got = _call_by_name(
                    layers[i].forward,
                    h,
                    dict(
                        freqs_cis=torch.view_as_complex(table.contiguous()),
                        start_pos=0,
                        cache=None,
                        mask=_meta_mask(T, T),
                    ),
                    "block",
                )
            except Exception:
                got = None
            if got is not None and _differs(got, want, case.dtype):
                c = _Case(
                    case.label,
                    case.dtype,
                    dict(
                        P=P,
                        x=h,
                        H=args.n_heads,
                        KV=args.kv_heads,
                        dim=args.dim,
                        eps=args.norm_eps,
                        table=table,
                        starts=[0],
                    ),
                )
                inner = _block_substep(layers[i], c, prefix=f"in block {i},")
                if inner is not None and inner[0] != "substep_combine":
                    return inner
                return (
                    "substep_block",
                    f"block {i} differs from the package's block on the same input: check "
                    "MyBlock with check_block (and that the model gives it the RoPE table "
                    "for args.rope_theta).",
                )
        h = want
    if len(d["starts"]) > 1:
        return (
            "substep_cache",
            "the uncached logits are right; the cached chunks differ: for a chunk at start_pos "
            "take freqs_cis[start_pos : start_pos + T], pass start_pos and the cache to every "
            "block, and attend to the cached prefix.",
        )
    fn = getattr(m, "norm", None)
    if isinstance(fn, nn.Module) and _differs(fn(h), _norm.rms_norm(h, sd["norm.weight"], args.norm_eps), case.dtype):
        return (
            "substep_final_norm",
            "your blocks match; the final norm differs: self.norm = RMSNorm(dim, "
            "args.norm_eps), applied to h before self.output.",
        )
    return None


def check_model(cls, verbose: bool = True) -> CheckResult:
    """Load the package model's state dict (Meta names) into a learner's ``Transformer(args)``; compare logits.

    If ``forward`` takes ``start_pos`` (and ``cache``, a package ``KVCache``; without one, the model keeps
    its own cache, as Meta's does), cached decoding in chunks at start_pos > 0 is checked too.
    """
    from ...core.transformer import Transformer

    _require_module(cls, "check_model", "MyTransformer")
    pos_name, cache_name = _forward_params(cls)
    built: dict = {}

    def learner(case):
        d = case.data
        m = _build(cls, ((d["args"],), {})) if _is_module_class(cls) else cls
        _load_weights(m, d["sd"], f"{type(m).__name__}(args)")
        m = m.to(case.dtype)
        built["m"] = m
        tokens, starts = d["tokens"], d["starts"]
        if len(starts) > 1:
            a = d["args"]
            cache = _attn.KVCache(
                a.n_layers, tokens.shape[0], tokens.shape[1], a.kv_heads, a.head_dim, dtype=case.dtype
            )
            bounds, outs = list(starts) + [tokens.shape[1]], []
            for s, e in zip(bounds[:-1], bounds[1:]):
                kwargs = {pos_name: s}
                if cache_name:
                    kwargs[cache_name] = cache
                outs.append(m(tokens[:, s:e], **kwargs))
            logits = torch.cat(outs, 1)
        else:
            params = [p for p in inspect.signature(m.forward).parameters.values()]
            needs_pos = len(params) > 1 and params[1].default is params[1].empty
            logits = m(tokens, 0) if needs_pos else m(tokens)
        return logits.float() if isinstance(logits, torch.Tensor) else logits

    def reference(case):
        d = case.data
        ref = Transformer(d["args"])
        ref.load_state_dict(d["sd"])
        return ref.to(case.dtype)(d["tokens"])

    mistakes = [
        _Mistake(
            k,
            h,
            (lambda kind: lambda c: _model_fn(c.data["tokens"], c.data["sd"], c.data["args"], kind, c.data["starts"]))(
                k
            ),
        )
        for k, h in _MODEL_HINTS.items()
    ]
    result = _run(
        "check_model",
        _model_cases(pos_name is not None),
        learner,
        reference,
        mistakes,
        atol=2e-4,
        rtol=1e-3,
        fallback="Llama: embed; n_layers pre-norm blocks; final RMSNorm; untied output head.",
        verbose=False,
        what="Transformer",
        substep=lambda case, got: _model_substep(built["m"], case) if "m" in built else None,
    )
    if result.passed and pos_name is None:
        result.note = (
            "forward takes no start_pos, so cached decoding was not checked: give it "
            "forward(tokens, start_pos=0, cache=None) to have it checked."
        )
    return _report(result, verbose)


def _greedy_variant(kind):
    def fn(case):
        d = case.data
        model, ids, n, eos = d["model"], list(d["ids"]), d["n"], d["eos"]
        new = []
        with torch.no_grad():
            for _ in range(n):
                if kind != "past_context" and len(ids) >= model.args.max_seq_len:
                    break
                logits = model(torch.tensor([ids[-model.args.max_seq_len :]]))[0]
                nxt = int(logits[0 if kind == "first_position" else -1].argmax())
                if nxt == eos and kind != "ignores_eos":
                    if kind == "eos_included":
                        new.append(nxt)
                    break
                ids.append(nxt)
                new.append(nxt)
        out = (list(d["ids"]) + new) if kind == "prompt_included" else new
        return torch.tensor(out, dtype=torch.float32)

    return fn


_GREEDY_MISTAKES = [
    _Mistake(
        "first_position",
        "your tokens match the prediction of the *first* position at every step: the next "
        "token comes from the logits of the last position, logits[0, -1].",
        _greedy_variant("first_position"),
    ),
    _Mistake(
        "prompt_included",
        "your list starts with the prompt: return only the new ids (the notebook prints prompt + new).",
        _greedy_variant("prompt_included"),
    ),
    _Mistake(
        "eos_included", "your list ends with the EOS id: stop *before* appending it.", _greedy_variant("eos_included")
    ),
    _Mistake(
        "ignores_eos",
        "your loop goes on after the model picked EOS: stop when next_id == eos_id.",
        _greedy_variant("ignores_eos"),
    ),
]


def _greedy_cases() -> list[_Case]:
    from ...core.transformer import Transformer

    args = ModelArgs.from_name("tiny", vocab_size=48, max_seq_len=16)
    model = Transformer(args).init_weights(std=0.3, seed=1234).eval()
    prompt = [1, 7, 19]
    free = _greedy_variant(None)(_Case("", torch.float32, dict(model=model, ids=prompt, n=8, eos=-1))).long().tolist()
    unused = next(i for i in range(3, args.vocab_size) if i not in free)
    eos_at = free[3]  # the model's 4th greedy token becomes EOS: the loop must stop before it
    long_prompt = [1] + [int(t) for t in torch.randint(3, args.vocab_size, (12,), generator=_gen(5))]
    spec = [
        (prompt, 8, unused, "prompt of 3 tokens, 8 new, EOS never chosen"),
        (prompt, 8, eos_at, f"prompt of 3 tokens, 8 new, EOS = {eos_at} (the model's 4th greedy choice)"),
        (
            long_prompt,
            10,
            unused,
            f"prompt of {len(long_prompt)} tokens, 10 new, max_seq_len {args.max_seq_len}: "
            "stop at the end of the context",
        ),
    ]
    return [_Case(label, torch.float32, dict(model=model, ids=ids, n=n, eos=eos)) for ids, n, eos, label in spec]


def check_greedy(fn, verbose: bool = True) -> CheckResult:
    """Compare ``fn(model, ids, max_new_tokens, eos_id)`` -> the new ids (list of int) with the package's
    greedy loop (``course_view.greedy_uncached``) on a small random model: argmax of the last position's
    logits, stop before EOS, stop at max_seq_len."""
    from ..view import greedy_uncached

    def learner(case):
        d = case.data
        out = fn(d["model"], list(d["ids"]), d["n"], d["eos"])
        try:
            return torch.tensor([int(t) for t in out], dtype=torch.float32)
        except (TypeError, ValueError):
            raise _SetupError(f"return the new token ids as a list of ints; got {type(out).__name__}.") from None

    def reference(case):
        d = case.data
        return torch.tensor(greedy_uncached(d["model"], d["ids"], d["n"], d["eos"]), dtype=torch.float32)

    return _run(
        "check_greedy",
        _greedy_cases(),
        learner,
        reference,
        _GREEDY_MISTAKES,
        atol=0.0,
        rtol=0.0,
        fallback="Greedy: at each step run the model on all ids so far, take logits[0, -1].argmax(), stop at "
        "eos_id (not appended) or at max_seq_len.",
        verbose=verbose,
        what="greedy loop",
    )
