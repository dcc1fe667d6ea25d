"""The tweak lab's shared settings: ``Lab``, the shape, data sizes and Llama 2 recipe (training/recipe.py) every
arm of an ablation trains with, its presets ("learner", "fast", "test"), and ``TweakError``, the one error the
lab raises for a variant or setting it cannot build or run."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from ...training import TrainConfig

if TYPE_CHECKING:
    from .variants import Variant


class TweakError(ValueError):
    """A variant or lab setting the tweak lab cannot build or run; the message says what to change."""


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
