"""Back-of-the-envelope numbers, made exact: parameters, memory, FLOPs and the paper's carbon table."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from .config import ModelArgs

DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "int8": 1, "int4": 0.5}


def count_params(args: ModelArgs, tied_embeddings: bool = False) -> dict[str, int]:
    """Exact parameter count with a per-component breakdown (biases: none; embeddings untied).

    Per layer: wq dim², wk and wv dim·kv, wo dim², the FFN 3·dim·hidden, two RMSNorm gains.
    Llama-2-7B: 6,738,415,616; 13B: 13,015,864,320; 70B: 68,976,648,192 (exact counts from Meta's checkpoints).
    """
    d, L, V = args.dim, args.n_layers, args.vocab_size
    kv = args.kv_heads * args.head_dim
    parts = {
        "embedding": V * d,
        "attention": L * (2 * d * d + 2 * d * kv),
        "feed_forward": L * 3 * d * args.hidden_dim,
        "norms": L * 2 * d + d,
        "output": 0 if tied_embeddings else V * d,
    }
    parts["total"] = sum(parts.values())
    return parts


def per_layer_params(args: ModelArgs) -> dict[str, int]:
    """The per-layer pieces: wq, wk, wv, wo, w1, w2, w3 and the two norms."""
    d, kv, f = args.dim, args.kv_heads * args.head_dim, args.hidden_dim
    return {
        "wq": d * d,
        "wk": d * kv,
        "wv": d * kv,
        "wo": d * d,
        "w1": d * f,
        "w2": f * d,
        "w3": d * f,
        "attention_norm": d,
        "ffn_norm": d,
    }


def dtype_bytes(dtype) -> float:
    name = str(dtype).replace("torch.", "")
    if name not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPE_BYTES)}.")
    return DTYPE_BYTES[name]


def weight_bytes(args: ModelArgs, dtype="bfloat16") -> int:
    """Bytes of all weights stored in ``dtype``."""
    return int(count_params(args)["total"] * dtype_bytes(dtype))


def buffer_bytes(args: ModelArgs) -> int:
    """Bytes of the buffers a ``Transformer`` allocates besides its weights, whatever its dtype.

    One: the RoPE table, (max_seq_len, head_dim/2, 2) cos/sin in float32 (transformer.py keeps it
    float32 under bf16 too). It grows with max_seq_len, not with the weights: a 4M-token context
    at head_dim 128 is 2 GiB before any weight is read.
    """
    return args.max_seq_len * (args.head_dim // 2) * 2 * 4


def kv_cache_bytes_per_token(args: ModelArgs, dtype="bfloat16") -> int:
    """Keys and values for one position across all layers: 2 · n_layers · n_kv_heads · head_dim · bytes."""
    return int(2 * args.n_layers * args.kv_heads * args.head_dim * dtype_bytes(dtype))


def kv_cache_bytes(args: ModelArgs, context: int | None = None, batch_size: int = 1, dtype="bfloat16") -> int:
    """KV-cache bytes for ``batch_size`` sequences of ``context`` positions (default max_seq_len)."""
    context = args.max_seq_len if context is None else context
    return kv_cache_bytes_per_token(args, dtype) * context * batch_size


def training_flops(n_params: int, n_tokens: float) -> float:
    """The 6·N·D rule: forward 2·N·D plus backward 4·N·D multiply-adds counted as FLOPs."""
    return 6.0 * n_params * n_tokens


def inference_memory_bytes(args: ModelArgs, dtype="bfloat16", context: int | None = None, batch_size: int = 1) -> int:
    """Weights plus a full KV cache (activations are small at batch 1 and left out)."""
    return weight_bytes(args, dtype) + kv_cache_bytes(args, context, batch_size, dtype)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError  # unreachable


# --- carbon (Llama 2 paper §2.2.1, Table 2; method of the Llama 1 paper §6) ---------------------------
PUE = Decimal("1.1")  # power usage effectiveness of the data centre
CARBON_INTENSITY = Decimal("0.385")  # kg CO2eq per kWh, US national average

# (model, A100-80GB GPU-hours, peak power per GPU in watts)
LLAMA2_PRETRAINING = [("7B", 184_320, 400), ("13B", 368_640, 400), ("34B", 1_038_336, 350), ("70B", 1_720_320, 400)]
LLAMA1_PRETRAINING = [("7B", 82_432, 400), ("13B", 135_168, 400), ("33B", 530_432, 400), ("65B", 1_022_362, 400)]


@dataclass(frozen=True)
class CarbonRow:
    model: str
    gpu_hours: int
    power_w: int
    mwh: Decimal
    tco2eq: Decimal  # truncated to 2 decimals, as the paper prints it


def carbon_tco2eq(gpu_hours: int, power_w: int) -> Decimal:
    """GPU-h × kW × PUE × kg/kWh, in tonnes (exact decimal arithmetic, not truncated)."""
    kwh = Decimal(gpu_hours) * Decimal(power_w) / 1000 * PUE
    return kwh * CARBON_INTENSITY / 1000


def carbon_table(rows=LLAMA2_PRETRAINING) -> tuple[list[CarbonRow], Decimal]:
    """Each row truncated to 2 decimals (62.4476 -> 62.44, as in Table 2); the total is the unrounded sum.

    Llama 2: 31.22, 62.44, 153.90, 291.42; total 539.00 tCO2eq.
    """
    out, total = [], Decimal(0)
    for model, hours, watts in rows:
        t = carbon_tco2eq(hours, watts)
        total += t
        mwh = Decimal(hours) * Decimal(watts) / Decimal(1_000_000)
        out.append(CarbonRow(model, hours, watts, mwh, t.quantize(Decimal("0.01"), rounding=ROUND_DOWN)))
    return out, total.quantize(Decimal("0.01"), rounding=ROUND_DOWN)


def family_table(names=None) -> list[dict]:
    """One row per preset: shape, FFN width, attention kind, exact parameters, bf16 weight bytes."""
    from .config import LLAMA1_SIZES, LLAMA2_SIZES

    rows = []
    for name in names or (LLAMA2_SIZES + LLAMA1_SIZES):
        a = ModelArgs.from_name(name)
        rows.append(
            {
                "name": name,
                "dim": a.dim,
                "n_layers": a.n_layers,
                "n_heads": a.n_heads,
                "n_kv_heads": a.kv_heads,
                "hidden_dim": a.hidden_dim,
                "attention": a.attention_kind,
                "context": a.max_seq_len,
                "params": count_params(a)["total"],
                "bf16_bytes": weight_bytes(a, "bfloat16"),
            }
        )
    return rows


def format_family_table(rows=None) -> str:
    rows = rows or family_table()
    head = f"{'model':<11}{'dim':>6}{'layers':>7}{'heads':>6}{'kv':>4}{'ffn':>7}{'attn':>5}{'ctx':>6}{'parameters':>16}{'bf16':>11}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['name']:<11}{r['dim']:>6}{r['n_layers']:>7}{r['n_heads']:>6}{r['n_kv_heads']:>4}"
            f"{r['hidden_dim']:>7}{r['attention']:>5}{r['context']:>6}{r['params']:>16,}"
            f"{human_bytes(r['bf16_bytes']):>11}"
        )
    return "\n".join(lines)
