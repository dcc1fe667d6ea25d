"""Model configuration: Meta's ``params.json`` fields, derived sizes, and named presets.

Dimension glossary used across the package:
    B batch, T new tokens, S attended positions (cache length), dim model width,
    n_heads query heads, n_kv_heads key/value heads, head_dim = dim // n_heads,
    hidden FFN width, V vocab size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..utils.validate import check_float, check_int


class ConfigError(ValueError):
    """A model configuration that cannot describe a Llama model; the message says what to fix."""


def ffn_hidden_dim(dim: int, multiple_of: int, ffn_dim_multiplier: float | None = None) -> int:
    """The reference FFN width: int(2·4·dim/3), times the multiplier, rounded up to multiple_of.

    Meta's ``FeedForward.__init__`` (llama/model.py) truncates twice, then rounds up:
    7B 11008, 13B 13824, 34B 22016, 70B 28672 (the params.json shipped with each size).
    """
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclass
class ModelArgs:
    """Hyper-parameters of a Llama model, with the field names of Meta's ``params.json``."""

    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None  # None means n_heads (multi-head attention)
    vocab_size: int = 32000
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 4096

    def __post_init__(self) -> None:
        for name in ("dim", "n_layers", "n_heads", "vocab_size", "multiple_of", "max_seq_len"):
            setattr(self, name, check_int(name, getattr(self, name), 1, error=ConfigError))
        self.n_kv_heads = check_int(
            "n_kv_heads", self.n_kv_heads, 1, error=ConfigError, allow_none=True, note=" (None = n_heads)"
        )
        if self.dim % self.n_heads:
            raise ConfigError(
                f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads}); "
                f"choose n_heads among the divisors of dim, e.g. {_divisors_near(self.dim, self.n_heads)}."
            )
        if self.head_dim % 2:
            raise ConfigError(
                f"head_dim = dim / n_heads = {self.head_dim} must be even: RoPE rotates pairs of "
                "coordinates. Change dim or n_heads."
            )
        if self.n_heads % self.kv_heads:
            raise ConfigError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.kv_heads}): each "
                "key/value head is shared by a whole group of query heads. "
                f"Valid n_kv_heads here: {[d for d in range(1, self.n_heads + 1) if self.n_heads % d == 0]}."
            )
        # Real-valued fields: a number (int or float), never a string such as "1e-5" or null.
        self.ffn_dim_multiplier = check_float(
            "ffn_dim_multiplier", self.ffn_dim_multiplier, above=0.0, error=ConfigError, allow_none=True
        )
        self.norm_eps = float(
            check_float(
                "norm_eps",
                self.norm_eps,
                above=0.0,
                error=ConfigError,  # type: ignore[arg-type]
                note=" (it keeps RMSNorm finite)",
            )
        )
        self.rope_theta = float(check_float("rope_theta", self.rope_theta, above=0.0, error=ConfigError))  # type: ignore[arg-type]

    # --- derived sizes --------------------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        """n_kv_heads with None resolved to n_heads."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def n_rep(self) -> int:
        """How many query heads share each key/value head (1 = MHA, n_heads = MQA)."""
        return self.n_heads // self.kv_heads

    @property
    def hidden_dim(self) -> int:
        """FFN width (rows of w1 and w3)."""
        return ffn_hidden_dim(self.dim, self.multiple_of, self.ffn_dim_multiplier)

    @property
    def attention_kind(self) -> str:
        if self.kv_heads == self.n_heads:
            return "MHA"
        return "MQA" if self.kv_heads == 1 else "GQA"

    # --- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    def to_params_json(self, path: str | Path) -> None:
        """Write ``params.json`` (Meta's field names) atomically."""
        from ..utils.io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, params: dict, vocab_size: int | None = None) -> ModelArgs:
        """Build from a ``params.json``-style dict; unknown keys are an error, -1 vocab needs ``vocab_size``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"unknown params.json field(s) {unknown}; the known fields are {sorted(known)}.")
        params = dict(params)
        if params.get("vocab_size", 32000) in (-1, None):
            # Meta ships "vocab_size": -1 and sets it from the tokenizer (llama/generation.py).
            params["vocab_size"] = vocab_size if vocab_size is not None else 32000
        elif vocab_size is not None and params["vocab_size"] != vocab_size:
            raise ConfigError(
                f"params.json says vocab_size {params['vocab_size']} but {vocab_size} was given; "
                "make them agree (the tokenizer decides)."
            )
        return cls(**params)

    @classmethod
    def from_params_json(cls, path: str | Path, vocab_size: int | None = None) -> ModelArgs:
        """Read Meta's ``params.json``; ``vocab_size: -1`` becomes ``vocab_size`` (default 32000)."""
        path = Path(path)
        if path.is_dir():
            path = path / "params.json"
        if not path.is_file():
            raise FileNotFoundError(f"no params.json at {path}: pass the file or the checkpoint folder that holds it.")
        try:
            params = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON ({e}).") from None
        if not isinstance(params, dict):
            raise ConfigError(f"{path} must hold a JSON object of model fields, got {type(params).__name__}.")
        return cls.from_dict(params, vocab_size=vocab_size)

    @classmethod
    def from_name(cls, name: str, **overrides) -> ModelArgs:
        """A preset by exact name (``llama2-7b``, ``llama2-70b``, ``tiny``…), optionally overriding fields."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; valid names: {', '.join(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})

    def replace(self, **changes) -> ModelArgs:
        return type(self)(**{**self.to_dict(), **changes})


def _divisors_near(n: int, target: int, k: int = 4) -> list[int]:
    """Up to k divisors d of n with an even n // d, closest to target (O(sqrt n), safe for any n)."""
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    divs = {d for s in small for d in (s, n // s) if (n // d) % 2 == 0}
    return sorted(divs, key=lambda d: abs(d - target))[:k]


# Sources: params.json copies (Meta's params.json for each size; paper Table 1). Llama 1 used norm_eps 1e-6 except 65B, and 2k context.
# "llama2-34b" is the Code Llama 34B shape with Llama 2's theta and context (34B was never released).
PRESETS: dict[str, dict] = {
    "llama2-7b": dict(dim=4096, n_layers=32, n_heads=32, multiple_of=256, norm_eps=1e-5, max_seq_len=4096),
    "llama2-13b": dict(dim=5120, n_layers=40, n_heads=40, multiple_of=256, norm_eps=1e-5, max_seq_len=4096),
    "llama2-34b": dict(
        dim=8192,
        n_layers=48,
        n_heads=64,
        n_kv_heads=8,
        multiple_of=256,
        ffn_dim_multiplier=1.0,
        norm_eps=1e-5,
        max_seq_len=4096,
    ),
    "llama2-70b": dict(
        dim=8192,
        n_layers=80,
        n_heads=64,
        n_kv_heads=8,
        multiple_of=4096,
        ffn_dim_multiplier=1.3,
        norm_eps=1e-5,
        max_seq_len=4096,
    ),
    "llama1-7b": dict(dim=4096, n_layers=32, n_heads=32, multiple_of=256, norm_eps=1e-6, max_seq_len=2048),
    "llama1-13b": dict(dim=5120, n_layers=40, n_heads=40, multiple_of=256, norm_eps=1e-6, max_seq_len=2048),
    "llama1-33b": dict(dim=6656, n_layers=60, n_heads=52, multiple_of=256, norm_eps=1e-6, max_seq_len=2048),
    "llama1-65b": dict(dim=8192, n_layers=80, n_heads=64, multiple_of=256, norm_eps=1e-5, max_seq_len=2048),
    # Tiny shapes for tests and the course (vocab sized for the project's own tokenizer).
    "tiny": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512, multiple_of=32, max_seq_len=256),
    "tiny-mha": dict(dim=64, n_layers=2, n_heads=4, vocab_size=512, multiple_of=32, max_seq_len=256),
    "tiny-mqa": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=1, vocab_size=512, multiple_of=32, max_seq_len=256),
    # The shape of llama2.c's stories260K and the shipped model (see assets/models/*/MODEL_CARD.md).
    "stories260k": dict(dim=64, n_layers=5, n_heads=8, n_kv_heads=4, vocab_size=512, multiple_of=4, max_seq_len=512),
    "lab-tiny": dict(dim=256, n_layers=6, n_heads=8, n_kv_heads=2, vocab_size=2048, multiple_of=32, max_seq_len=256),
}

LLAMA2_SIZES = ("llama2-7b", "llama2-13b", "llama2-34b", "llama2-70b")
LLAMA1_SIZES = ("llama1-7b", "llama1-13b", "llama1-33b", "llama1-65b")
