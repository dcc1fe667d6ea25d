"""The tweak lab's runs: the data (generated stories, tokenized with the shipped model's tokenizer), the probes
of a trained arm (loss by position past the training length, name copying, repeated tokens), one arm and seed
trained with the pretraining recipe or read from the on-disk cache keyed by a hash of its settings
(``train_arm``), and every arm over several seeds (``run_arms``)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from ...core.config import ModelArgs
from ...core.transformer import Transformer
from ...training import (
    TrainConfig,
    batch_indices,
    evaluate,
    loss_on,
    lr_at,
    make_optimizer,
    name_copy_scores,
    repeated_token_losses,
)
from ...utils.io import atomic_write_text
from .lab import Lab, TweakError
from .variants import Variant, build_model, count_params, kv_cache_bytes_per_token, model_args

TWEAK_VERSION = 2  # part of every cache key: bump it when a change in this package changes results


# ----------------------------------------------------------------------------------------------
# Data: the generated stories, tokenized with the shipped model's tokenizer
# ----------------------------------------------------------------------------------------------
def lab_tokenizer():
    """The shipped tiny model's tokenizer (assets/models/llama2-lab-tiny/tokenizer.model, 2,048 pieces)."""
    from ...formats import default_model_path
    from ...text.tokenizer import Tokenizer

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
    from ...corpora import stories as data

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
    from ...training import name_token_ids

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
# Several arms, several seeds
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
