"""Several prompts at once, as Meta's ``generate`` does: right-padded, one shared position counter."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..utils.validate import check_int
from .inputs import _as_ids, _device_of, _generator, _split_stop
from .sampling import check_sampling, sample_checked


def generate_batch(
    model,
    prompts: Sequence,
    max_new_tokens: int,
    temperature: float = 0.6,
    top_p: float | None = 0.9,
    top_k: int | None = None,
    seed: int | None = None,
    stop=None,
    eos_id: int | None = 2,
) -> list[list[int]]:
    """New ids for each of several prompts of different lengths, decoded together (Meta's approach).

    Prompts are right-padded into one (B, total_len) grid. Decoding starts at the shortest prompt's
    end; at each position a sequence still inside its prompt keeps its prompt token, the others get
    the sampled one. Every row sits at the same positions, so one KV cache and one start_pos serve
    all, and no padding is ever attended to (causality hides the positions not yet filled). Each
    sequence stops at its own EOS / stop id; ``stop`` takes token ids only here.
    """
    check_sampling(temperature, top_k, top_p, seed)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, 0)
    if isinstance(prompts, (str, torch.Tensor)) or not isinstance(prompts, Sequence) or not prompts:
        raise ValueError("prompts must be a non-empty list of token-id lists.")
    prompts = [_as_ids(p, f"prompt {i}") for i, p in enumerate(prompts)]
    stop_ids, stop_strings = _split_stop(stop, eos_id)
    if stop_strings:
        raise ValueError("generate_batch stops on token ids only; for stop strings call generate() per prompt.")
    max_seq_len = model.args.max_seq_len
    lengths = [len(p) for p in prompts]
    for i, n in enumerate(lengths):
        if n > max_seq_len or (n == max_seq_len and max_new_tokens > 0):
            raise ValueError(
                f"prompt {i} has {n} tokens but the model's context is max_seq_len={max_seq_len}: "
                f"no room for new tokens. Shorten it to at most {max_seq_len - 1} tokens."
            )
    if max_new_tokens == 0:
        return [[] for _ in prompts]
    B, min_len = len(prompts), min(lengths)
    total_len = min(max_seq_len, max(lengths) + max_new_tokens)
    device = _device_of(model)
    generator = _generator(seed, device)
    with torch.inference_mode():
        tokens = torch.zeros(B, total_len, dtype=torch.long, device=device)  # (B, total_len), 0 = not yet filled
        in_prompt = torch.zeros(B, total_len, dtype=torch.bool, device=device)
        for i, p in enumerate(prompts):
            tokens[i, : len(p)] = torch.tensor(p, device=device)
            in_prompt[i, : len(p)] = True
        end = torch.tensor([min(n + max_new_tokens, total_len) for n in lengths], device=device)  # (B,) exclusive
        stop_tensor = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        cache = model.new_cache(B, total_len)
        prev = 0
        for cur in range(min_len, total_len):
            logits = model(tokens[:, prev:cur], prev, cache)[:, -1]  # (B, V): prefill first, then one step
            sampled = sample_checked(logits, temperature, top_k, top_p, generator)  # (B,)
            new = torch.where(in_prompt[:, cur], tokens[:, cur], sampled)  # keep prompt tokens where they exist
            tokens[:, cur] = new
            done |= ~in_prompt[:, cur] & torch.isin(new, stop_tensor)
            done |= cur + 1 >= end
            prev = cur
            if bool(done.all()):
                break
        rows = tokens.tolist()
    out = []
    for i, n in enumerate(lengths):
        new = rows[i][n : min(int(end[i]), prev + 1)]
        for j, t in enumerate(new):
            if t in stop_ids:
                new = new[:j]
                break
        out.append(new)
    return out
