"""The Llama 2 optimisation recipe as pure functions: the LR schedule, AdamW's parameter groups,
and the seeded order of batches (a pure function of step and seed, so a resumed run reads the same rows).

Paper §2.2: AdamW β1 0.9, β2 0.95, eps 1e-5; cosine schedule with warmup, decaying to 10 % of the peak;
weight decay 0.1; gradient clipping 1.0. Decay on matrices only is this project's choice (nanoGPT's
and llama2.c's convention); the paper says "weight decay of 0.1".
"""

from __future__ import annotations

import math

import torch

from .config import TrainConfig, TrainError


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, cosine to min_lr_ratio·peak.

    Warmup reaches the peak at step warmup_steps - 1; the cosine runs from the peak at
    warmup_steps to the floor at max_steps, and stays on the floor after (P2 §2.2).
    """
    return cosine_lr(step, cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)


def cosine_lr(step: int, peak: float, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> float:
    """Llama 2's schedule (paper §2.2): linear warmup to ``peak``, cosine down to ``min_ratio``·peak
    at ``total_steps``, the floor after. The one copy, used by pretraining and fine-tuning."""
    if step < 0:
        raise TrainError(f"step must be >= 0, got {step}.")
    floor = peak * min_ratio
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if step >= total_steps:
        return floor
    progress = (step - warmup_steps) / (total_steps - warmup_steps)  # 0 -> 1
    return floor + 0.5 * (1 + math.cos(math.pi * progress)) * (peak - floor)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices (≥ 2-D: linear layers, embeddings), none on RMSNorm gains.

    Decaying a norm gain pulls it toward 0 and shrinks the whole residual branch; Meta, llama2.c
    and nanoGPT all exempt 1-D parameters.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with Llama 2's β = (0.9, 0.95), eps 1e-5, weight decay on matrices only."""
    # The lr here is a placeholder: every step sets it from lr_at().
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=lr_at(0, cfg), betas=(cfg.beta1, cfg.beta2), eps=cfg.eps
    )


def batch_indices(step: int, batch_size: int, n_rows: int, seed: int) -> torch.Tensor:
    """Row indices (B,) of the batch for `step`: epochs walk a seeded permutation of the rows.

    A pure function of (step, seed), so a resumed run reads exactly the batches it would have.
    """
    return _rows_from(step * batch_size, batch_size, n_rows, seed)


def step_indices(step: int, cfg: TrainConfig, n_rows: int) -> torch.Tensor:
    """batch_indices for a run whose batch size changes in its final phase (cfg.final_batch_size):
    the stream of rows goes on where the main phase stopped reading."""
    return _rows_from(cfg.rows_before(step), cfg.batch_size_at(step), n_rows, cfg.seed)


def _rows_from(start: int, count: int, n_rows: int, seed: int) -> torch.Tensor:
    """Rows start … start + count - 1 of the endless stream of seeded epoch permutations."""
    out, pos = [], start
    while pos < start + count:
        epoch, offset = divmod(pos, n_rows)
        perm = _epoch_permutation(seed, epoch, n_rows)
        take = min(start + count - pos, n_rows - offset)
        out.append(perm[offset : offset + take])
        pos += take
    return torch.cat(out)


_PERM_CACHE: dict[tuple[int, int, int], torch.Tensor] = {}


def _epoch_permutation(seed: int, epoch: int, n_rows: int) -> torch.Tensor:
    key = (seed, epoch, n_rows)
    if key not in _PERM_CACHE:
        if len(_PERM_CACHE) > 8:
            _PERM_CACHE.clear()
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        _PERM_CACHE[key] = torch.randperm(n_rows, generator=gen)
    return _PERM_CACHE[key]


def data_position(step: int, cfg: TrainConfig, n_rows: int) -> dict:
    """Where step `step` starts reading: epoch and row offset (stored in checkpoints, for humans)."""
    epoch, offset = divmod(cfg.rows_before(step), n_rows)
    return {"step": step, "epoch": epoch, "row_offset": offset, "rows": n_rows}
