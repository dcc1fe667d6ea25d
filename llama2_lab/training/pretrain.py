"""Pretraining with the Llama 2 recipe, scaled down to a laptop (paper §2.2).

What is kept from the paper: AdamW with β = (0.9, 0.95) and eps 1e-5, weight decay 0.1 on the
weight matrices only, gradient clipping at 1.0, and a cosine learning-rate schedule that decays to
10 % of its peak after a linear warmup. What is scaled down: the data (generated stories, or a
text file, instead of 2T tokens), the batch (thousands of tokens, not 4M), the warmup (tens of
steps, not 2000) and the peak LR (tiny models like 1e-3 or more; 7B used 3e-4).

    cfg = TrainConfig.from_preset("fast")        # or "lab-tiny", the shipped model
    result = train(cfg)                          # tqdm bar, periodic validation, checkpoints
    print(sample_text(result.model, result.tokenizer, "Once upon a time", 100))

Everything is seeded: the same config gives the same weights, and a run resumed from a
checkpoint ends exactly where an uninterrupted one would (the data order is a pure function of
the seed and the step, and the checkpoint holds the model, AdamW's moments, the step and the RNG
states). Files are written atomically, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.transformer import Transformer
from .checkpoints import (
    _check_resumable,
    _Saved,
    _set_rng_state,
    load_checkpoint,
    prepare_outputs,
    save_checkpoint,
    save_loss_curve,
    save_result,
)
from .config import TrainConfig, TrainError
from .data import TrainData, prepare_data
from .recipe import lr_at, make_optimizer, step_indices


# Loop
# ----------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What a run produced: the model, its tokenizer, the loss curve and the headline numbers."""

    model: Transformer
    tokenizer: object
    config: TrainConfig
    history: list[dict]
    step: int
    tokens_seen: int
    train_loss: float
    val_loss: float
    wall_time_s: float
    tokens_per_s: float
    out_dir: Path | None = None
    data_source: str = ""

    @property
    def val_perplexity(self) -> float:
        return math.exp(self.val_loss)

    def summary(self) -> dict:
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "params": self.model.num_params(),
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "val_perplexity": self.val_perplexity,
            "wall_time_s": self.wall_time_s,
            "tokens_per_s": self.tokens_per_s,
            "data": self.data_source,
        }


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(
            f"device {name!r} asked for, but this torch build sees no CUDA GPU; use --device cpu (or auto)."
        )
    return dev


def _autocast(device: torch.device):
    # bf16 autocast on CUDA only: on CPU it is slower than fp32 for these shapes, and fp32 keeps
    # CPU runs bit-for-bit reproducible.
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def loss_on(model: Transformer, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Mean next-token cross-entropy of rows (B, T + 1): inputs rows[:, :-1], targets rows[:, 1:]."""
    rows = rows.to(device, non_blocking=True)
    x, y = rows[:, :-1], rows[:, 1:]  # (B, T) each
    with _autocast(device):
        logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))


@contextmanager
def _eval_mode(model: torch.nn.Module):
    """model.eval() for the block, then back to whatever mode it was in (training stays training)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate(
    model: Transformer, rows: torch.Tensor, batch_size: int, device: torch.device, max_batches: int | None = None
) -> float:
    """Mean validation loss over the first `max_batches` batches of rows (N, T + 1), in eval mode."""
    total, count = 0.0, 0
    with _eval_mode(model):
        for i, start in enumerate(range(0, len(rows), batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            batch = rows[start : start + batch_size]
            total += loss_on(model, batch, device).item() * len(batch)
            count += len(batch)
    return total / count


def _start_from(model: Transformer, cfg: TrainConfig) -> None:
    """Copy the weights of the model folder ``cfg.init_from`` into ``model`` (same shape; any max_seq_len)."""
    from ..formats import load_model

    src = load_model(cfg.init_from)
    want, have = cfg.model_args(), src.args
    diff = [
        f"{k} {getattr(have, k)} (config: {getattr(want, k)})"
        for k in ("dim", "n_layers", "n_heads", "kv_heads", "vocab_size", "hidden_dim", "norm_eps", "rope_theta")
        if getattr(have, k) != getattr(want, k)
    ]
    if diff:
        raise TrainError(
            f"--init-from {cfg.init_from} is a different model: {', '.join(diff)}; "
            "continued pretraining needs the same shape (only max_seq_len may change)."
        )
    with torch.no_grad():
        model.load_state_dict(src.state_dict())
    model.reset_rope(model.output.weight.device)


def train(
    cfg: TrainConfig, progress: bool = True, callback=None, resume: bool = False, data: TrainData | None = None
) -> TrainResult:
    """Pretrain a Llama 2 from scratch with `cfg`; returns the model, tokenizer and loss curve.

    `callback(metrics)` gets a dict (step, tokens, train_loss, val_loss, lr, elapsed, tokens_per_s)
    every `log_every` steps and after each validation, e.g. to draw a live loss plot. With
    `resume=True` the run continues from `cfg.checkpoint_file` exactly as if never stopped.
    """
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    from . import fsdp

    # Under torchrun: FSDP2 over the processes, each taking 1/N of every batch (fsdp.py).
    sharded = fsdp.start(cfg) if fsdp.launched_by_torchrun() else None
    writes = sharded is None or sharded.is_main  # only rank 0 writes files and shows progress
    device = sharded.device if sharded is not None else resolve_device(cfg.device)
    if cfg.out_dir:
        from ..formats import save_model  # noqa: F401 - import now: a broken import fails before hours of training
    ckpt_file = cfg.checkpoint_file
    if writes:  # rank 0 alone touches the files
        prepare_outputs(cfg)
    state = None
    if resume:
        if ckpt_file is None or not ckpt_file.is_file():
            raise TrainError(
                f"cannot resume: no checkpoint at {ckpt_file} (set out_dir or "
                "checkpoint_path to the folder/file of the interrupted run)."
            )
        state = load_checkpoint(ckpt_file)
        _check_resumable(TrainConfig.from_dict(state["config"]), cfg, state["step"])
    saved = _Saved(ckpt_file, state["step"] if state is not None else None)

    if data is None:
        tok = None
        if state is not None:
            from ..text.tokenizer import Tokenizer

            tok = Tokenizer.from_bytes(state["tokenizer"])  # the run's own tokenizer, not a retrained one
        data = prepare_data(cfg, tokenizer=tok)
    tok = data.tokenizer

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model = Transformer(cfg.model_args()).init_weights(std=cfg.init_std, seed=cfg.seed).to(device)
    if cfg.init_from and state is None:
        _start_from(model, cfg)  # continued pretraining (a resumed run has the weights in its checkpoint)
    model.train()
    if sharded is not None:
        sharded.shard(model)  # before the optimizer: it must hold the sharded parameters
    opt = make_optimizer(model, cfg)
    step, history, elapsed_before, tokens_seen = 0, [], 0.0, 0
    if state is not None:
        if sharded is not None:
            sharded.load_state(model, opt, state)
        else:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
        step = state["step"]
        history = state["history"]
        elapsed_before = state["elapsed"]
        tokens_seen = state["tokens_seen"]
        _set_rng_state(state["rng"])

    n_rows = len(data.train)
    valid_rows = data.valid[: cfg.eval_batches * cfg.batch_size]
    bar = None
    if progress and writes:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.total_steps, initial=step, desc="train", unit="step", dynamic_ncols=True)

    t0 = time.perf_counter()
    tokens_at_t0 = tokens_seen
    # The train loss logged every log_every steps is a mean over the window since the last log;
    # a checkpoint between two logs carries the partial window, so a resumed curve is identical.
    window_loss, window_n = (state or {}).get("loop", {}).get("window", (0.0, 0))
    state = None
    last_train_loss = history[-1]["train_loss"] if history else float("nan")
    val_loss = next((r["val_loss"] for r in reversed(history) if r.get("val_loss") is not None), float("nan"))

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - t0

    def emit(row: dict) -> None:
        history.append(row)
        if callback is not None:
            callback(dict(row))

    while step < cfg.total_steps:
        lr = lr_at(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        rows = data.train[step_indices(step, cfg, n_rows)]  # (B, T + 1)
        loss = loss_on(model, rows if sharded is None else sharded.local_rows(rows), device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        tokens_seen += len(rows) * cfg.seq_len
        loss_value = loss.item() if sharded is None else sharded.mean(loss)
        if not math.isfinite(loss_value):
            raise TrainError(
                f"the loss became {loss_value} at step {step}: lower the peak lr "
                f"(now {cfg.lr}) or lengthen the warmup (now {cfg.warmup_steps} steps)."
            )
        window_loss += loss_value
        window_n += 1
        tok_per_s = (tokens_seen - tokens_at_t0) / max(time.perf_counter() - t0, 1e-9)

        do_eval = (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.total_steps
        if step % cfg.log_every == 0 or do_eval:
            last_train_loss = window_loss / window_n
            window_loss, window_n = 0.0, 0
            row = {
                "step": step,
                "tokens": tokens_seen,
                "train_loss": last_train_loss,
                "val_loss": None,
                "lr": lr,
                "elapsed": round(elapsed(), 3),
                "tokens_per_s": round(tok_per_s, 1),
            }
            if do_eval:
                val_loss = evaluate(model, valid_rows, cfg.batch_size, device)
                row["val_loss"] = val_loss
            emit(row)
            if do_eval and cfg.out_dir and writes:
                with saved.writing("the loss curve"):
                    save_loss_curve(history, Path(cfg.out_dir), cfg)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", val=f"{val_loss:.3f}", tok_s=f"{tok_per_s:,.0f}", refresh=False)
        if ckpt_file is not None and (
            (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.total_steps
        ):
            save = save_checkpoint if sharded is None else sharded.save_checkpoint
            with saved.writing(f"the checkpoint of step {step}"):
                save(
                    ckpt_file,
                    model,
                    opt,
                    cfg,
                    step,
                    history,
                    tokens_seen,
                    elapsed(),
                    n_rows,
                    tok,
                    window=(window_loss, window_n),
                )
            saved.step = step
    if bar is not None:
        bar.close()

    wall = elapsed()
    if sharded is not None:
        model = sharded.gather(model)  # a plain model with the trained weights, on every rank
    result = TrainResult(
        model=model,
        tokenizer=tok,
        config=cfg,
        history=history,
        step=step,
        tokens_seen=tokens_seen,
        train_loss=last_train_loss,
        val_loss=val_loss,
        wall_time_s=wall,
        tokens_per_s=tokens_seen / max(wall, 1e-9),
        out_dir=Path(cfg.out_dir) if cfg.out_dir else None,
        data_source=data.source,
    )
    if cfg.out_dir and writes:
        with saved.writing(f"the model to {cfg.out_dir}"):
            save_result(result)
    return result


# ----------------------------------------------------------------------------------------------
# Checkpoints (atomic) and outputs
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
