"""Pretraining with the Llama 2 recipe, scaled down to a laptop (paper §2.2, FACTS §2.2).

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

import argparse
import json
import math
import random
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import ModelArgs
from .io_utils import atomic_path, atomic_write_text
from .model import Transformer

CHECKPOINT_FORMAT = "llama2-lab-train-checkpoint"
CHECKPOINT_VERSION = 1


class TrainError(ValueError):
    """A training request that cannot run as given; the message says what to change."""


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Everything a pretraining run depends on. The model shape is `model` (ModelArgs fields)."""

    # model: ModelArgs fields except vocab_size (the tokenizer's) and max_seq_len (= seq_len)
    model: dict = field(default_factory=lambda: dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                                                     multiple_of=32))
    vocab_size: int = 512          # of the tokenizer trained for this run
    seq_len: int = 128             # T: tokens per training row (each row holds T + 1 ids)
    batch_size: int = 16           # B: rows per step, so B·T tokens per optimizer step
    max_steps: int = 200
    # the Llama 2 recipe (§2.2), scaled down
    lr: float = 1e-3               # peak learning rate
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1      # cosine decays to 10 % of the peak
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-5
    weight_decay: float = 0.1      # matrices only, never norm gains
    grad_clip: float = 1.0
    init_std: float = 0.02
    # an optional last phase: `final_steps` more steps at the floor LR (min_lr_ratio · lr) with
    # `final_batch_size` rows a step (None = batch_size): raising the batch instead of lowering the
    # LR further averages away gradient noise (Smith et al. 2018, "Don't decay the learning rate,
    # increase the batch size"); the lab-tiny preset uses it, see the comment there
    final_steps: int = 0
    final_batch_size: int | None = None
    # data
    text_file: str | None = None   # train on a UTF-8 text file instead of the generated stories
    n_train_stories: int = 2000    # generated corpus size (stories are reused for later epochs)
    n_valid_stories: int = 200     # validation stories, from a different seed (data.VALID_SEED)
    tokenizer_docs: int = 2000     # documents the tokenizer is trained on
    # bookkeeping
    eval_every: int = 50
    eval_batches: int = 4
    log_every: int = 10
    checkpoint_every: int = 0      # 0 = only at the end of the run
    seed: int = 1337
    device: str = "auto"           # "auto" = CUDA when available, else CPU
    num_threads: int | None = None  # None leaves torch's default (one per physical core)
    out_dir: str | None = None     # model + loss curve; None writes nothing
    checkpoint_path: str | None = None  # default: out_dir/checkpoint.pt
    preset: str | None = None      # the preset this config came from, for the record

    def __post_init__(self) -> None:
        positive = ("vocab_size", "seq_len", "batch_size", "max_steps", "eval_batches",
                    "log_every", "n_train_stories", "n_valid_stories", "tokenizer_docs")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TrainError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "final_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TrainError(f"{name} must be an integer >= 0, got {value!r}.")
        fb = self.final_batch_size
        if fb is not None and (isinstance(fb, bool) or not isinstance(fb, int) or fb < 1):
            raise TrainError(f"final_batch_size must be a positive integer or None, got {fb!r}.")
        if not self.lr > 0:
            raise TrainError(f"lr must be > 0, got {self.lr!r}.")
        if not 0 <= self.min_lr_ratio <= 1:
            raise TrainError(f"min_lr_ratio must be in [0, 1] (Llama 2 uses 0.1), got {self.min_lr_ratio!r}.")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise TrainError(f"AdamW betas must be in [0, 1), got ({self.beta1}, {self.beta2}).")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise TrainError("weight_decay and grad_clip must be >= 0 (0 switches them off).")
        if self.num_threads is not None and self.num_threads < 1:
            raise TrainError(f"num_threads must be >= 1 or None, got {self.num_threads!r}.")
        bad = set(self.model) & {"vocab_size", "max_seq_len"}
        if bad:
            raise TrainError(f"set {sorted(bad)} with TrainConfig.vocab_size / seq_len, not inside `model`.")
        self.model_args()  # shape errors (dim % n_heads, GQA groups...) surface now, with ModelArgs' message

    def model_args(self) -> ModelArgs:
        """The ModelArgs this run trains: `model`, the tokenizer's vocab, and max_seq_len = seq_len."""
        return ModelArgs(**{**self.model, "vocab_size": self.vocab_size, "max_seq_len": self.seq_len})

    @property
    def tokens_per_step(self) -> int:
        """Tokens per step of the main phase (see batch_size_at for the final phase)."""
        return self.batch_size * self.seq_len

    @property
    def total_steps(self) -> int:
        """All optimizer steps: the main phase (max_steps) and the final phase (final_steps)."""
        return self.max_steps + self.final_steps

    def batch_size_at(self, step: int) -> int:
        """Rows in the batch of step `step` (0-based): batch_size, then final_batch_size."""
        if step >= self.max_steps and self.final_batch_size is not None:
            return self.final_batch_size
        return self.batch_size

    def rows_before(self, step: int) -> int:
        """Training rows read by steps 0 … step - 1 (where step `step` starts reading)."""
        main = min(step, self.max_steps)
        return main * self.batch_size + (step - main) * self.batch_size_at(self.max_steps)

    @property
    def checkpoint_file(self) -> Path | None:
        if self.checkpoint_path:
            return Path(self.checkpoint_path)
        return Path(self.out_dir) / "checkpoint.pt" if self.out_dir else None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TrainError(f"unknown TrainConfig field(s) {unknown}; known: {sorted(known)}.")
        return cls(**d)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "TrainConfig":
        """A named preset ("lab-tiny", "fast", "test"), with any field overridden."""
        if name not in PRESETS:
            raise TrainError(f"unknown training preset {name!r}; choose one of {', '.join(PRESETS)}.")
        return cls(**{**PRESETS[name], "preset": name, **overrides})

    def replace(self, **changes) -> "TrainConfig":
        return type(self).from_dict({**self.to_dict(), **changes})


PRESETS: dict[str, dict] = {
    # The shipped model, assets/models/llama2-lab-tiny (its MODEL_CARD.md has the measured numbers).
    # GQA with 4 query heads per key/value head, as Llama 2 34B/70B do with 8 kv heads (§2.2, A.2.1).
    # Small batches on purpose: a model keeps a character's name only once it copies names from its
    # context (an induction-style attention circuit), and that circuit forms after a number of tokens
    # that grows with sqrt(batch x context) (Aoyama et al. 2025, arXiv:2511.16893). With 2 x 256
    # tokens a step it formed after ~5M tokens (step ~10,000); 8 x 256 for 1-3M tokens never got
    # there. The final 900 steps at batch 8 (floor LR) fix what the small batches leave behind: a
    # copy head that also fires right after "named", where there is no name yet to copy.
    "lab-tiny": dict(
        model=dict(dim=256, n_layers=6, n_heads=8, n_kv_heads=2, multiple_of=32),
        vocab_size=2048, seq_len=256, batch_size=2, max_steps=24000,
        lr=2e-3, warmup_steps=100, n_train_stories=40000, n_valid_stories=300,
        tokenizer_docs=5000, eval_every=500, eval_batches=4, log_every=100,
        checkpoint_every=500, final_steps=900, final_batch_size=8,
    ),
    # Under two minutes on two CPU cores (notebook 07, CI): the whole command took 108 s of CPU
    # time with one thread here. Validation loss falls from ~7 to ~1.0 and the samples go from
    # random pieces to English sentences (with repetitions and the odd made-up word).
    "fast": dict(
        model=dict(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, multiple_of=32),
        vocab_size=1024, seq_len=128, batch_size=16, max_steps=300,
        lr=3e-3, warmup_steps=20, n_train_stories=2500, n_valid_stories=100,
        tokenizer_docs=1500, eval_every=50, eval_batches=4, log_every=10,
    ),
    # Seconds, for unit tests.
    "test": dict(
        model=dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=16),
        vocab_size=320, seq_len=32, batch_size=4, max_steps=8,
        lr=3e-3, warmup_steps=2, n_train_stories=60, n_valid_stories=10,
        tokenizer_docs=60, eval_every=4, eval_batches=1, log_every=1,
    ),
}


# ----------------------------------------------------------------------------------------------
# The recipe as pure functions
# ----------------------------------------------------------------------------------------------
def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, cosine to min_lr_ratio·peak.

    Warmup reaches the peak at step warmup_steps - 1; the cosine runs from the peak at
    warmup_steps to the floor at max_steps, and stays on the floor after (P2 §2.2).
    """
    if step < 0:
        raise TrainError(f"step must be >= 0, got {step}.")
    peak, floor = cfg.lr, cfg.lr * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    if step >= cfg.max_steps:
        return floor
    progress = (step - cfg.warmup_steps) / (cfg.max_steps - cfg.warmup_steps)  # 0 -> 1
    return floor + 0.5 * (1 + math.cos(math.pi * progress)) * (peak - floor)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices (≥ 2-D: linear layers, embeddings), none on RMSNorm gains.

    Decaying a norm gain pulls it toward 0 and shrinks the whole residual branch; Meta, llama2.c
    and nanoGPT all exempt 1-D parameters.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with Llama 2's β = (0.9, 0.95), eps 1e-5, weight decay on matrices only."""
    # The lr here is a placeholder: every step sets it from lr_at().
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=lr_at(0, cfg),
                             betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


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
        out.append(perm[offset:offset + take])
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


# ----------------------------------------------------------------------------------------------
# Data: documents -> tokenizer -> packed (N, T + 1) rows
# ----------------------------------------------------------------------------------------------
@dataclass
class TrainData:
    """Packed rows (N, T + 1) for training and validation, and the tokenizer that made them."""

    train: torch.Tensor
    valid: torch.Tensor
    tokenizer: object
    source: str
    n_train_docs: int
    n_valid_docs: int

    @property
    def train_tokens(self) -> int:
        return self.train.numel()


def _documents(cfg: TrainConfig) -> tuple[list[str], list[str], str]:
    """Training and validation documents: generated stories (disjoint seeds) or a text file."""
    from . import data

    if cfg.text_file is None:
        # Disjoint seeds (data.TRAIN_SEED / VALID_SEED): validation stories are never trained on.
        return (list(data.train_stories(cfg.n_train_stories)), list(data.valid_stories(cfg.n_valid_stories)),
                f"generated stories (llama2_lab.data, train seed {data.TRAIN_SEED}, "
                f"valid seed {data.VALID_SEED})")
    docs = data.text_documents(cfg.text_file)  # raises data.TextFileError (a ValueError) with the reason
    try:
        # A seeded 5 % of the documents (one document is cut near its end) is held out.
        train_docs, valid_docs = data.split_train_valid(docs, 0.05, seed=cfg.seed)
    except ValueError as err:
        raise TrainError(f"{cfg.text_file}: {err}; give a longer text file.") from None
    return train_docs, valid_docs, f"text file {cfg.text_file}"


def _pack(tok, docs: list[str], seq_len: int, what: str) -> torch.Tensor:
    """BOS + doc + EOS for every document, concatenated and cut into (N, T + 1) rows."""
    from . import data

    ids = [tok.encode(d) for d in docs]
    try:
        return data.chunk_tensor(ids, seq_len, tok.bos_id, tok.eos_id)  # (N, T + 1)
    except ValueError:
        n_tok = sum(len(x) + 2 for x in ids)
        raise TrainError(f"the {what} text is {n_tok} tokens, fewer than one row of seq_len + 1 = "
                         f"{seq_len + 1}. Use more text or a smaller --seq-len.") from None


def prepare_data(cfg: TrainConfig, tokenizer=None) -> TrainData:
    """Documents, a tokenizer trained on a sample of them (unless given), and packed rows."""
    from .tokenizer import train_tokenizer

    train_docs, valid_docs, source = _documents(cfg)
    if tokenizer is None:
        tokenizer = train_tokenizer(train_docs[: cfg.tokenizer_docs], cfg.vocab_size, seed=cfg.seed)
    elif tokenizer.vocab_size != cfg.vocab_size:
        raise TrainError(f"the tokenizer has {tokenizer.vocab_size} pieces but the config says "
                         f"vocab_size={cfg.vocab_size}; make them agree.")
    train_rows = _pack(tokenizer, train_docs, cfg.seq_len, "training")
    try:
        valid_rows = _pack(tokenizer, valid_docs, cfg.seq_len, "validation")
    except TrainError:
        if len(train_rows) < 2:
            raise
        # A short text file: its held-out documents fill no row, so the last rows are held out.
        n_valid = max(1, len(train_rows) // 10)
        train_rows, valid_rows = train_rows[:-n_valid], train_rows[-n_valid:]
        source += f" (last {n_valid} rows held out)"
    return TrainData(train_rows, valid_rows, tokenizer, source, len(train_docs), len(valid_docs))


# ----------------------------------------------------------------------------------------------
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
        return {"step": self.step, "tokens_seen": self.tokens_seen, "params": self.model.num_params(),
                "train_loss": self.train_loss, "val_loss": self.val_loss,
                "val_perplexity": self.val_perplexity, "wall_time_s": self.wall_time_s,
                "tokens_per_s": self.tokens_per_s, "data": self.data_source}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"device {name!r} asked for, but this torch build sees no CUDA GPU; "
                         "use --device cpu (or auto).")
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
def evaluate(model: Transformer, rows: torch.Tensor, batch_size: int, device: torch.device,
             max_batches: int | None = None) -> float:
    """Mean validation loss over the first `max_batches` batches of rows (N, T + 1), in eval mode."""
    total, count = 0.0, 0
    with _eval_mode(model):
        for i, start in enumerate(range(0, len(rows), batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            batch = rows[start:start + batch_size]
            total += loss_on(model, batch, device).item() * len(batch)
            count += len(batch)
    return total / count


def train(cfg: TrainConfig, progress: bool = True, callback=None, resume: bool = False,
          data: TrainData | None = None) -> TrainResult:
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
        from .checkpoint import save_model  # noqa: F401 - import now: a broken import fails before hours of training
    ckpt_file = cfg.checkpoint_file
    state = None
    if resume:
        if ckpt_file is None or not ckpt_file.is_file():
            raise TrainError(f"cannot resume: no checkpoint at {ckpt_file} (set out_dir or "
                             "checkpoint_path to the folder/file of the interrupted run).")
        state = load_checkpoint(ckpt_file)
        _check_resumable(TrainConfig.from_dict(state["config"]), cfg, state["step"])

    if data is None:
        tok = None
        if state is not None:
            from .tokenizer import Tokenizer
            tok = Tokenizer.from_bytes(state["tokenizer"])  # the run's own tokenizer, not a retrained one
        data = prepare_data(cfg, tokenizer=tok)
    tok = data.tokenizer

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model = Transformer(cfg.model_args()).init_weights(std=cfg.init_std, seed=cfg.seed).to(device)
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
            raise TrainError(f"the loss became {loss_value} at step {step}: lower the peak lr "
                             f"(now {cfg.lr}) or lengthen the warmup (now {cfg.warmup_steps} steps).")
        window_loss += loss_value
        window_n += 1
        tok_per_s = (tokens_seen - tokens_at_t0) / max(time.perf_counter() - t0, 1e-9)

        do_eval = (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.total_steps
        if step % cfg.log_every == 0 or do_eval:
            last_train_loss = window_loss / window_n
            window_loss, window_n = 0.0, 0
            row = {"step": step, "tokens": tokens_seen, "train_loss": last_train_loss, "val_loss": None,
                   "lr": lr, "elapsed": round(elapsed(), 3), "tokens_per_s": round(tok_per_s, 1)}
            if do_eval:
                val_loss = evaluate(model, valid_rows, cfg.batch_size, device)
                row["val_loss"] = val_loss
            emit(row)
            if do_eval and cfg.out_dir and writes:
                save_loss_curve(history, Path(cfg.out_dir), cfg)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", val=f"{val_loss:.3f}", tok_s=f"{tok_per_s:,.0f}",
                            refresh=False)
        if ckpt_file is not None and ((cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
                                      or step == cfg.total_steps):
            save = save_checkpoint if sharded is None else sharded.save_checkpoint
            save(ckpt_file, model, opt, cfg, step, history, tokens_seen, elapsed(),
                 n_rows, tok, window=(window_loss, window_n))
    if bar is not None:
        bar.close()

    wall = elapsed()
    if sharded is not None:
        model = sharded.gather(model)  # a plain model with the trained weights, on every rank
    result = TrainResult(model=model, tokenizer=tok, config=cfg, history=history, step=step,
                         tokens_seen=tokens_seen, train_loss=last_train_loss, val_loss=val_loss,
                         wall_time_s=wall, tokens_per_s=tokens_seen / max(wall, 1e-9),
                         out_dir=Path(cfg.out_dir) if cfg.out_dir else None, data_source=data.source)
    if cfg.out_dir and writes:
        save_result(result)
    return result


def _check_resumable(saved: TrainConfig, cfg: TrainConfig, step: int) -> None:
    """A checkpoint continues only the run it came from: model, data and recipe must match.

    A run may be made longer (max_steps, final_steps), and a final phase may be added or changed
    while the checkpoint is still in the main phase (step <= max_steps).
    """
    free = {"max_steps", "final_steps", "eval_every", "eval_batches", "log_every", "checkpoint_every",
            "device", "num_threads", "out_dir", "checkpoint_path", "preset"}
    if step <= min(saved.max_steps, cfg.max_steps):
        free.add("final_batch_size")
    diff = {k: (v, getattr(cfg, k)) for k, v in saved.to_dict().items()
            if k not in free and getattr(cfg, k) != v}
    if diff:
        detail = "; ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise TrainError(f"the checkpoint is from a different run ({detail}). Resume with the "
                         "original settings, or start a new run without --resume.")


# ----------------------------------------------------------------------------------------------
# Checkpoints (atomic) and outputs
# ----------------------------------------------------------------------------------------------
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


def save_checkpoint(path: str | Path, model: Transformer, opt: torch.optim.Optimizer, cfg: TrainConfig,
                    step: int, history: list[dict], tokens_seen: int, elapsed: float, n_rows: int,
                    tokenizer, window: tuple[float, int] = (0.0, 0), model_state: dict | None = None,
                    optimizer_state: dict | None = None) -> None:
    """Everything needed to continue the run, written to a temp file and renamed over `path`.

    `model_state` / `optimizer_state` replace the model's and optimizer's own state dicts (fsdp.py
    passes the gathered ones of a sharded run).
    """
    state = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "config": cfg.to_dict(), "step": step,
        "model": model.state_dict() if model_state is None else model_state,
        "optimizer": opt.state_dict() if optimizer_state is None else optimizer_state,
        "scheduler": {"step": step, "lr_next": lr_at(step, cfg)},  # lr_at is pure: the step is the state
        "rng": _rng_state(),
        "data": data_position(step, cfg, n_rows),
        "history": history, "tokens_seen": tokens_seen, "elapsed": elapsed,
        "loop": {"window": window},  # train-loss sum and count since the last logged row
        "tokenizer": tokenizer.model_proto,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Read a training checkpoint written by `save_checkpoint` (tensors land on the CPU)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with what to do
        raise TrainError(f"{path} is not a readable training checkpoint ({type(err).__name__}: {err}). "
                         "Delete it to start over.") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path} is not a llama2-lab training checkpoint (to load a trained model "
                         "use llama2_lab.checkpoint.load_model).")
    if state.get("version") != CHECKPOINT_VERSION:
        raise TrainError(f"{path} has checkpoint version {state.get('version')}, this code reads "
                         f"{CHECKPOINT_VERSION}.")
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

    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(7, 5), sharex=True,
                                    gridspec_kw={"height_ratios": [3, 1]})
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
    from .checkpoint import save_model

    out = Path(result.config.out_dir)
    save_model(result.model, out, result.tokenizer)
    save_loss_curve(result.history, out, result.config, summary=result.summary())


# ----------------------------------------------------------------------------------------------
# Samples
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def sample_text(model: Transformer, tokenizer, prompt: str = "Once upon a time", n: int = 200,
                temperature: float = 0.0, top_p: float = 0.9, seed: int = 0) -> str:
    """The prompt and up to `n` generated tokens as text (temperature 0 = greedy), stopping at EOS
    or at the model's max_seq_len."""
    from .generate import generate

    ids = tokenizer.encode(prompt, bos=True)
    with _eval_mode(model):
        new = generate(model, ids, max_new_tokens=n, temperature=temperature, top_p=top_p, seed=seed,
                       eos_id=tokenizer.eos_id)
    return tokenizer.decode(ids + list(new))


# ----------------------------------------------------------------------------------------------
# Does the model copy from its context? (what keeps a character's name from drifting)
# ----------------------------------------------------------------------------------------------
def name_token_ids(tokenizer) -> list[int]:
    """The ids of the story generator's character names that are one token (sorted)."""
    from . import data

    pieces = (tokenizer.encode(n) for n in data.GIRL_NAMES + data.BOY_NAMES)
    return sorted({p[0] for p in pieces if len(p) == 1})


@torch.no_grad()
def name_copy_scores(model: Transformer, tokenizer, stories) -> list[float]:
    """log p(right name | a name) wherever a character's name comes back in `stories` (texts).

    Every generator name is one token, so the probability the model gives the right name among all
    of them measures copying directly: a model that guesses from its prior scores about
    log(1/224) = -5.41 everywhere; one with a copy (induction-style) circuit scores near 0.
    """
    name_ids = torch.tensor(name_token_ids(tokenizer))
    names = set(name_ids.tolist())
    scores = []
    with _eval_mode(model):
        for text in stories:
            ids = tokenizer.encode(text, bos=True)[: model.args.max_seq_len]
            logp = model(torch.tensor([ids])).log_softmax(-1)[0]  # (T, V)
            seen = set()
            for t in range(1, len(ids)):
                if ids[t] in names:
                    if ids[t] in seen:  # a name from earlier in this story comes back
                        scores.append((logp[t - 1, ids[t]] - logp[t - 1, name_ids].logsumexp(0)).item())
                    seen.add(ids[t])
    return scores


@torch.no_grad()
def repeated_token_losses(model: Transformer, n_rows: int = 4, length: int = 40, seed: int = 0) -> tuple[float, float]:
    """Mean next-token loss on the first and the second copy of random token rows [BOS] x x.

    A model with a general induction circuit finds the second copy far easier than the first."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(100, model.args.vocab_size, (n_rows, length), generator=gen)
    seq = torch.cat([torch.ones(n_rows, 1, dtype=torch.long), x, x], 1)  # BOS = 1
    with _eval_mode(model):
        nll = -model(seq).log_softmax(-1)[:, :-1].gather(-1, seq[:, 1:, None])[..., 0]  # (B, 2·length)
    return nll[:, :length].mean().item(), nll[:, length + 1:].mean().item()


# ----------------------------------------------------------------------------------------------
# Command line (`llama2-lab train`, wired in cli.py; also `python -m llama2_lab.train`)
# ----------------------------------------------------------------------------------------------
def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `llama2-lab train`."""
    p = parser
    p.add_argument("--preset", default="fast", choices=sorted(PRESETS),
                   help="model size and recipe: 'fast' (~2 min on 2 cores), 'lab-tiny' (the shipped "
                        "model, ~100 min on 2 idle cores), 'test' (seconds)")
    p.add_argument("--text", metavar="FILE", help="train on this UTF-8 text file instead of the generated stories")
    p.add_argument("--out", metavar="DIR", help="folder for the model, tokenizer and loss curve "
                                                "(default: runs/<preset>)")
    p.add_argument("--steps", type=int, help="optimizer steps (default: the preset's)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the preset's)")
    p.add_argument("--warmup", type=int, help="warmup steps (default: the preset's)")
    p.add_argument("--batch-size", type=int, help="sequences per step B (default: the preset's)")
    p.add_argument("--final-steps", type=int, help="steps of a last phase at the floor LR (default: the preset's)")
    p.add_argument("--final-batch-size", type=int, help="sequences per step in that last phase")
    p.add_argument("--seq-len", type=int, help="tokens per sequence T (default: the preset's)")
    p.add_argument("--vocab-size", type=int, help="tokenizer vocabulary (default: the preset's)")
    p.add_argument("--stories", type=int, help="generated training stories (default: the preset's)")
    p.add_argument("--eval-every", type=int, help="steps between validations")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (0 = at the end only)")
    p.add_argument("--checkpoint", metavar="FILE", help="checkpoint file (default: OUT/checkpoint.pt)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run from its checkpoint")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, one per core)")
    p.add_argument("--seed", type=int, help="seed for init, data order and tokenizer (default: the preset's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    p.add_argument("--samples", type=int, default=120,
                   help="tokens of the greedy and T=0.8 samples printed at the end (0 = none)")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = {
        "text_file": args.text, "max_steps": args.steps, "lr": args.lr, "warmup_steps": args.warmup,
        "batch_size": args.batch_size, "final_steps": args.final_steps,
        "final_batch_size": args.final_batch_size, "seq_len": args.seq_len, "vocab_size": args.vocab_size,
        "n_train_stories": args.stories, "eval_every": args.eval_every,
        "checkpoint_every": args.checkpoint_every, "checkpoint_path": args.checkpoint,
        "num_threads": args.threads, "seed": args.seed, "device": args.device,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    overrides["out_dir"] = args.out or str(Path("runs") / args.preset)
    return TrainConfig.from_preset(args.preset, **overrides)


def run_from_args(args: argparse.Namespace) -> int:
    """Run `llama2-lab train`; returns the exit code (2 for a bad request, with the reason on stderr)."""
    try:
        cfg = config_from_args(args)
        if args.text and not Path(args.text).is_file():
            raise TrainError(f"--text {args.text}: no such file.")
        final = (f" + {cfg.final_steps} steps of {cfg.batch_size_at(cfg.max_steps) * cfg.seq_len:,} tokens"
                 if cfg.final_steps else "")
        print(f"training {cfg.preset}: {cfg.model_args().attention_kind} "
              f"{_shape(cfg)}, {cfg.max_steps} steps of {cfg.tokens_per_step:,} tokens{final} -> {cfg.out_dir}",
              file=sys.stderr)
        result = train(cfg, progress=not args.no_progress, resume=args.resume,
                       callback=_print_row if args.no_progress else None)
    except (TrainError, ValueError, FileNotFoundError) as err:
        print(f"llama2-lab train: error: {err}", file=sys.stderr)
        return 2
    s = result.summary()
    print(f"done: {s['step']} steps, {s['tokens_seen']:,} tokens, {s['params']:,} params, "
          f"train loss {s['train_loss']:.3f}, val loss {s['val_loss']:.3f} (ppl {s['val_perplexity']:.2f}), "
          f"{s['wall_time_s']:.0f} s, {s['tokens_per_s']:,.0f} tokens/s")
    print(f"saved to {cfg.out_dir}")
    if args.samples:
        for label, temp in (("greedy", 0.0), ("T=0.8", 0.8)):
            text = sample_text(result.model, result.tokenizer, "Once upon a time", args.samples,
                               temperature=temp, seed=cfg.seed)
            print(f"\n--- sample ({label}) ---\n{text}")
    return 0


def _print_row(row: dict) -> None:
    """One log line per logged step, for runs without a progress bar (nohup, CI)."""
    val = f" val {row['val_loss']:.4f} (ppl {math.exp(row['val_loss']):.2f})" if row["val_loss"] is not None else ""
    print(f"step {row['step']:>6}  tokens {row['tokens']:>11,}  train {row['train_loss']:.4f}{val}  "
          f"lr {row['lr']:.2e}  {row['tokens_per_s']:,.0f} tok/s  {row['elapsed']:.0f} s", flush=True)


def _shape(cfg: TrainConfig) -> str:
    from .calc import count_params

    a = cfg.model_args()
    return (f"dim {a.dim}, {a.n_layers} layers, {a.n_heads} heads / {a.kv_heads} kv heads, "
            f"vocab {a.vocab_size}, {count_params(a)['total']:,} params")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llama2_lab.train", description=__doc__.split("\n")[0])
    add_train_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
