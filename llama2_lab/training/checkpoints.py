"""What a pretraining run leaves on disk, atomically: training checkpoints that resume exactly (model, AdamW's
moments, the step, the RNG states, the data position), the loss curve, and the trained model."""

from __future__ import annotations

import json
import random
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..core.transformer import Transformer
from ..utils.io import atomic_open, atomic_path, atomic_write_text, check_folder_target, clean_temps
from .config import TrainConfig, TrainError
from .recipe import data_position, lr_at

if TYPE_CHECKING:
    from .pretrain import TrainResult


CHECKPOINT_FORMAT = "llama2-lab-train-checkpoint"


CHECKPOINT_VERSION = 1


def prepare_outputs(cfg: TrainConfig) -> None:
    """Before any work: the output folder must be usable, and what a killed run left there goes.

    An ``out_dir`` that is an existing file (or the current directory) is a TrainError now, not
    after hours of training; temp files of interrupted writes are removed, and a model-folder swap
    cut short is finished (``utils.io.clean_temps``).
    """
    if cfg.out_dir:
        out = Path(cfg.out_dir)
        try:
            check_folder_target(out)
        except (OSError, ValueError) as err:
            raise TrainError(f"out_dir: {err}") from None
        clean_temps(out.parent, out.name)
        clean_temps(out)
    ckpt = cfg.checkpoint_file
    if ckpt is not None:
        if ckpt.is_dir():
            raise TrainError(f"checkpoint_path {ckpt} is a folder; give the checkpoint file's path.")
        clean_temps(ckpt.parent, ckpt.name)


class _Saved:
    """The last checkpoint known to be on disk, and a guard that turns a failed write into a TrainError
    saying what was lost and what was kept (a full disk must not cost the run)."""

    def __init__(self, path: Path | None, step: int | None):
        self.path, self.step = path, step

    @contextmanager
    def writing(self, what: str):
        try:
            yield
        except OSError as err:  # ENOSPC, EDQUOT, EIO, a read-only disk: the writes are atomic, nothing is half-written
            reason = err.strerror or str(err)
            if self.step is not None:
                kept = (
                    f"the last good checkpoint, step {self.step}, is kept at {self.path}: free some space and "
                    "continue with --resume (resume=True)"
                )
            else:
                kept = "no checkpoint was written before this one: free some space and start again"
            raise TrainError(f"could not write {what} ({reason}); {kept}.") from err


def _check_resumable(saved: TrainConfig, cfg: TrainConfig, step: int) -> None:
    """A checkpoint continues only the run it came from: model, data and recipe must match.

    A run may be made longer (max_steps, final_steps), and a final phase may be added or changed
    while the checkpoint is still in the main phase (step <= max_steps).
    """
    free = {
        "max_steps",
        "final_steps",
        "eval_every",
        "eval_batches",
        "log_every",
        "checkpoint_every",
        "device",
        "num_threads",
        "out_dir",
        "checkpoint_path",
        "preset",
    }
    if step <= min(saved.max_steps, cfg.max_steps):
        free.add("final_batch_size")
    diff = {k: (v, getattr(cfg, k)) for k, v in saved.to_dict().items() if k not in free and getattr(cfg, k) != v}
    if diff:
        detail = "; ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise TrainError(
            f"the checkpoint is from a different run ({detail}). Resume with the "
            "original settings, or start a new run without --resume."
        )


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: str | Path,
    model: Transformer,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    step: int,
    history: list[dict],
    tokens_seen: int,
    elapsed: float,
    n_rows: int,
    tokenizer,
    window: tuple[float, int] = (0.0, 0),
    model_state: dict | None = None,
    optimizer_state: dict | None = None,
) -> None:
    """Everything needed to continue the run, written to a temp file and renamed over `path`.

    `model_state` / `optimizer_state` replace the model's and optimizer's own state dicts (fsdp.py
    passes the gathered ones of a sharded run).
    """
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": cfg.to_dict(),
        "step": step,
        "model": model.state_dict() if model_state is None else model_state,
        "optimizer": opt.state_dict() if optimizer_state is None else optimizer_state,
        "scheduler": {"step": step, "lr_next": lr_at(step, cfg)},  # lr_at is pure: the step is the state
        "rng": _rng_state(),
        "data": data_position(step, cfg, n_rows),
        "history": history,
        "tokens_seen": tokens_seen,
        "elapsed": elapsed,
        "loop": {"window": window},  # train-loss sum and count since the last logged row
        "tokenizer": tokenizer.model_proto,
    }
    with atomic_open(path) as f:  # a Python file object: a full disk is an OSError with its errno
        torch.save(state, f)


def load_checkpoint(path: str | Path) -> dict:
    """Read a training checkpoint written by `save_checkpoint` (tensors land on the CPU)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with what to do
        raise TrainError(
            f"{path} is not a readable training checkpoint ({type(err).__name__}: {err}). Delete it to start over."
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(
            f"{path} is not a llama2-lab training checkpoint (to load a trained model "
            "use llama2_lab.checkpoint.load_model)."
        )
    if state.get("version") != CHECKPOINT_VERSION:
        raise TrainError(f"{path} has checkpoint version {state.get('version')}, this code reads {CHECKPOINT_VERSION}.")
    return state


def save_loss_curve(history: list[dict], out_dir: Path, cfg: TrainConfig, summary: dict | None = None) -> None:
    """loss_curve.json (rows of step, tokens, train/val loss, lr, elapsed) and loss_curve.png."""
    doc = {"config": cfg.to_dict(), "summary": summary, "rows": history}
    atomic_write_text(out_dir / "loss_curve.json", json.dumps(doc, indent=1) + "\n")
    plot_loss_curve(history, out_dir / "loss_curve.png", title=cfg.preset or "training run")


def plot_loss_curve(history: list[dict], path: str | Path, title: str = "") -> None:
    """Train and validation loss against tokens seen, with the learning rate underneath."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(7, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    tokens = [r["tokens"] / 1e6 for r in history]
    ax.plot(tokens, [r["train_loss"] for r in history], label="train", lw=1)
    val = [(r["tokens"] / 1e6, r["val_loss"]) for r in history if r.get("val_loss") is not None]
    if val:
        ax.plot(*zip(*val), "o-", label="validation", ms=3)
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    ax_lr.plot(tokens, [r["lr"] for r in history], color="gray")
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("tokens seen (millions)")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def save_result(result: TrainResult) -> None:
    """The model in the project format (params.json, model.safetensors, tokenizer.model) + curve."""
    from ..formats import save_model

    out = Path(result.config.out_dir)
    save_model(result.model, out, result.tokenizer)
    save_loss_curve(result.history, out, result.config, summary=result.summary())
