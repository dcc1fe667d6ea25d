"""The tweak lab: swap one component of a tiny Llama 2, retrain it for a minute, compare with the seed noise.

Every arm of an ablation is the package's own ``Transformer`` (core/transformer.py) with one thing replaced by
composing or swapping its submodules; nothing here is a second transformer:

    norm        "rmsnorm" (Llama 2) | "layernorm" | "none"        -> attention_norm, ffn_norm, norm swapped
    norm_place  "pre" (Llama 2) | "post" (the original Transformer) -> PostNormBlock, a 3-line forward
    positions   "rope" (Llama 2) | "learned" (GPT-2 style table) | "none" (RoPE table of cos 1, sin 0)
    rope_theta  RoPE's base (10,000 in Llama 2)
    ffn         "swiglu" (Llama 2) | "gelu" | "relu"               -> a two-matrix MLP, 1.5x wider: equal params
    n_heads, n_kv_heads    MHA (n_kv_heads None) | GQA | MQA (1)
    tied        share output.weight with tok_embeddings.weight (Llama 2 keeps them untied)

or a learner's own model (``model_fn``, e.g. notebook 06's ``MyTransformer``). Every arm trains with
the Llama 2 recipe from training/recipe.py (AdamW β = (0.9, 0.95), weight decay 0.1 on matrices, clipping at 1.0,
linear warmup then cosine to 10 %; Touvron et al. 2023 §2.2) on the generated story corpus, tokenized
with the shipped model's tokenizer, for a fixed number of steps and seeds. A run returns its curves and
three probes: validation loss, loss by position past the training length, and copying (names and
repeated random tokens, as in the shipped model's card). Results are cached on disk by a hash of the
settings, so running a notebook again is instant.

    lab = Lab.preset("learner")
    results = run_arms({"pre-norm": Variant(), "post-norm": Variant(norm_place="post")}, lab, seeds=(0, 1))
    print(format_table(summarize(results)))

The lab lives in four modules, and every public name is importable from here:

    lab        Lab (shape, data sizes, recipe) and its presets, TweakError
    variants   Variant, the component swaps, build_model, parameter and KV-cache counts, CATALOG
    runs       data, probes, the cache, train_arm and run_arms
    summary    summarize, compare, format_table, mean_curve
"""

from .lab import LAB_PRESETS, Lab, TweakError
from .runs import (
    TWEAK_VERSION,
    Arm,
    LabData,
    RunResult,
    cache_dir,
    lab_data,
    lab_tokenizer,
    loss_by_position,
    model_fingerprint,
    probes,
    run_arms,
    run_key,
    train_arm,
)
from .summary import compare, format_table, mean_curve, summarize
from .variants import (
    CATALOG,
    FFNS,
    MLP,
    NORM_PLACES,
    NORMS,
    POSITIONS,
    LabTransformer,
    LearnedPositions,
    PostNormBlock,
    Variant,
    build_model,
    count_params,
    ffn_width,
    kv_cache_bytes_per_token,
    model_args,
    with_params_of,
)

__all__ = [
    "CATALOG",
    "FFNS",
    "LAB_PRESETS",
    "MLP",
    "NORM_PLACES",
    "NORMS",
    "POSITIONS",
    "TWEAK_VERSION",
    "Arm",
    "Lab",
    "LabData",
    "LabTransformer",
    "LearnedPositions",
    "PostNormBlock",
    "RunResult",
    "TweakError",
    "Variant",
    "build_model",
    "cache_dir",
    "compare",
    "count_params",
    "ffn_width",
    "format_table",
    "kv_cache_bytes_per_token",
    "lab_data",
    "lab_tokenizer",
    "loss_by_position",
    "mean_curve",
    "model_args",
    "model_fingerprint",
    "probes",
    "run_arms",
    "run_key",
    "summarize",
    "train_arm",
    "with_params_of",
]
