"""What a pretraining run is: ``TrainConfig`` (model shape, data, the recipe's numbers, presets)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..core.config import ModelArgs
from ..utils.validate import check_int

CHECKPOINT_FORMAT = "llama2-lab-train-checkpoint"
CHECKPOINT_VERSION = 1


class TrainError(ValueError):
    """A training request that cannot run as given; the message says what to change."""


@dataclass
class TrainConfig:
    """Everything a pretraining run depends on. The model shape is `model` (ModelArgs fields)."""

    # model: ModelArgs fields except vocab_size (the tokenizer's) and max_seq_len (= seq_len)
    model: dict = field(default_factory=lambda: dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32))
    vocab_size: int = 512  # of the tokenizer trained for this run
    seq_len: int = 128  # T: tokens per training row (each row holds T + 1 ids)
    batch_size: int = 16  # B: rows per step, so B·T tokens per optimizer step
    max_steps: int = 200
    # the Llama 2 recipe (§2.2), scaled down
    lr: float = 1e-3  # peak learning rate
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1  # cosine decays to 10 % of the peak
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-5
    weight_decay: float = 0.1  # matrices only, never norm gains
    grad_clip: float = 1.0
    init_std: float = 0.02
    # an optional last phase: `final_steps` more steps at the floor LR (min_lr_ratio · lr) with
    # `final_batch_size` rows a step (None = batch_size): raising the batch instead of lowering the
    # LR further averages away gradient noise (Smith et al. 2018, "Don't decay the learning rate,
    # increase the batch size"); the lab-tiny preset uses it, see the comment there
    final_steps: int = 0
    final_batch_size: int | None = None
    # data
    text_file: str | None = None  # train on a UTF-8 text file instead of the generated stories
    n_train_stories: int = 2000  # generated corpus size (stories are reused for later epochs)
    n_valid_stories: int = 200  # validation stories, from a different seed (data.VALID_SEED)
    tokenizer_docs: int = 2000  # documents the tokenizer is trained on
    # share of the generated training documents drawn from `corpora.numbers.supplement` (counting
    # stories with digits, stories with shouted lines); validation stays plain stories
    supplement_share: float = 0.0
    # bookkeeping
    eval_every: int = 50
    eval_batches: int = 4
    log_every: int = 10
    checkpoint_every: int = 0  # 0 = only at the end of the run
    seed: int = 1337
    device: str = "auto"  # "auto" = CUDA when available, else CPU
    num_threads: int | None = None  # None leaves torch's default (one per physical core)
    out_dir: str | None = None  # model + loss curve; None writes nothing
    checkpoint_path: str | None = None  # default: out_dir/checkpoint.pt
    preset: str | None = None  # the preset this config came from, for the record
    # continued pretraining: start from this model folder's weights and tokenizer instead of a random
    # init (its shape and vocabulary must be this config's; max_seq_len may grow, RoPE has no weights)
    init_from: str | None = None

    def __post_init__(self) -> None:
        positive = (
            "vocab_size",
            "seq_len",
            "batch_size",
            "max_steps",
            "eval_batches",
            "log_every",
            "n_train_stories",
            "n_valid_stories",
            "tokenizer_docs",
        )
        for name in positive:
            setattr(self, name, check_int(name, getattr(self, name), 1, error=TrainError))
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "final_steps"):
            setattr(self, name, check_int(name, getattr(self, name), 0, error=TrainError))
        self.final_batch_size = check_int(
            "final_batch_size", self.final_batch_size, 1, error=TrainError, allow_none=True
        )
        if not 0 <= self.supplement_share < 1:
            raise TrainError(f"supplement_share must be in [0, 1), got {self.supplement_share!r}.")
        if self.supplement_share and self.text_file:
            raise TrainError("supplement_share mixes documents into the generated stories; not with text_file.")
        if not self.lr > 0:
            raise TrainError(f"lr must be > 0, got {self.lr!r}.")
        if not 0 <= self.min_lr_ratio <= 1:
            raise TrainError(f"min_lr_ratio must be in [0, 1] (Llama 2 uses 0.1), got {self.min_lr_ratio!r}.")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise TrainError(f"AdamW betas must be in [0, 1), got ({self.beta1}, {self.beta2}).")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise TrainError("weight_decay and grad_clip must be >= 0 (0 switches them off).")
        self.num_threads = check_int("num_threads", self.num_threads, 1, error=TrainError, allow_none=True)
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
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TrainError(f"unknown TrainConfig field(s) {unknown}; known: {sorted(known)}.")
        return cls(**d)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> TrainConfig:
        """A named preset ("lab-tiny", "fast", "test"), with any field overridden."""
        if name not in PRESETS:
            raise TrainError(f"unknown training preset {name!r}; choose one of {', '.join(PRESETS)}.")
        return cls(**{**PRESETS[name], "preset": name, **overrides})

    def replace(self, **changes) -> TrainConfig:
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
        vocab_size=2048,
        seq_len=256,
        batch_size=2,
        max_steps=24000,
        lr=2e-3,
        warmup_steps=100,
        n_train_stories=40000,
        n_valid_stories=300,
        tokenizer_docs=5000,
        eval_every=500,
        eval_batches=4,
        log_every=100,
        checkpoint_every=500,
        final_steps=900,
        final_batch_size=8,
    ),
    # Under two minutes on two CPU cores (notebook 07, CI): the whole command took 108 s of CPU
    # time with one thread here. Validation loss falls from ~7 to ~1.0 and the samples go from
    # random pieces to English sentences (with repetitions and the odd made-up word).
    "fast": dict(
        model=dict(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, multiple_of=32),
        vocab_size=1024,
        seq_len=128,
        batch_size=16,
        max_steps=300,
        lr=3e-3,
        warmup_steps=20,
        n_train_stories=2500,
        n_valid_stories=100,
        tokenizer_docs=1500,
        eval_every=50,
        eval_batches=4,
        log_every=10,
    ),
    # Seconds, for unit tests.
    "test": dict(
        model=dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=16),
        vocab_size=320,
        seq_len=32,
        batch_size=4,
        max_steps=8,
        lr=3e-3,
        warmup_steps=2,
        n_train_stories=60,
        n_valid_stories=10,
        tokenizer_docs=60,
        eval_every=4,
        eval_batches=1,
        log_every=1,
    ),
}


# Context extension of the shipped model, 256 -> 1024 positions, by continued pretraining on packed
# stories (several stories per 1024-token row, BOS/EOS between them), as Llama 2 went from 2k to 4k
# positions by pretraining on longer rows (paper §2.2, Table 1). Start it from the 256-position model:
# `--init-from <folder of lab-tiny>` (scripts/make_tiny_model.sh does both). The same model and data;
# a fresh AdamW, a short warmup to a peak below phase 1's (2e-3), cosine to 10 %, no final phase.
PRESETS["lab-tiny-long"] = {
    **PRESETS["lab-tiny"],
    **dict(seq_len=1024, max_steps=1500, lr=5e-4, warmup_steps=50, final_steps=0, final_batch_size=None),
    # a quarter of the documents teach digits, small sums and capitals (corpora/numbers.py), which the
    # stories never contain and the chat questions need ("What is 3 plus 4?", "Style: caps.")
    "supplement_share": 0.25,
    **dict(eval_every=250, log_every=50, checkpoint_every=250),
}
