"""Check a learner's component against the package, on seeded inputs, with a verdict and a hint.

Each ``check_*`` runs the learner's version and the package's on the same inputs (several shapes,
float32 and a low-precision dtype, MHA/GQA/MQA ratios), prints one verdict line and returns a
``CheckResult``. When a case fails, the learner's output is compared with known-wrong variants
(LayerNorm instead of RMSNorm, rotate-half pairs, ReLU instead of SiLU, a tiled repeat_kv, a
missing causal mask…): the variant it matches names the mistake in the hint. Notebooks write::

    assert check_rmsnorm(MyRMSNorm).passed

A learner's code that raises ``NotImplementedError`` (a TODO skeleton) is *not written yet*, not wrong:
the check returns ``CheckResult(passed=False, not_written=True)`` and prints one line saying the
notebook goes on with the package's version. ``use(result, mine, package, what)`` then returns what
later cells should build with — the learner's version once it passes — so a student copy runs top to
bottom whatever is filled in::

    Norm = use(check_rmsnorm(MyRMSNorm), MyRMSNorm, RMSNorm, "RMSNorm")

``check_answer(name, value, expected)`` does the same for an exercise's number (``...`` = not written).

What each check expects of the learner's code (Meta's names, so package weights can be copied in):

==================  ===========================================================================
check_rmsnorm       a class ``C(dim, eps=...)`` holding a gain ``weight`` (dim,), or ``fn(x, weight, eps)``
check_rope          ``apply_rotary_emb(xq, xk, freqs_cis)`` with Meta's complex ``freqs_cis`` (T, hd/2),
                    and/or ``precompute_freqs_cis(head_dim, end, theta)`` -> complex (end, hd/2)
                    or real (end, hd/2, 2)
check_swiglu        a class ``C(dim, hidden_dim)`` with Linear ``w1``, ``w2``, ``w3``, or ``fn(x, w1, w2, w3)``
check_repeat_kv     ``fn(x, n_rep)``, x (B, S, n_kv_heads, head_dim)
check_attention     a class ``C(args)`` with ``wq wk wv wo``; ``forward(x, freqs_cis)`` builds its own
                    causal mask; if ``forward`` takes ``start_pos`` and ``cache`` (a package
                    ``KVCache``) the cached path is checked too; a ``mask`` argument gets Meta's
                    additive (T, S) mask
check_block         a class ``C(layer_id, args)`` with ``attention``, ``feed_forward``,
                    ``attention_norm``, ``ffn_norm``; forward as for attention
check_model         a class ``C(args)`` with Meta's parameter names; ``forward(tokens)`` or
                    ``forward(tokens, start_pos=0, cache=None)`` -> logits (B, T, V); with start_pos,
                    cached decoding in chunks at start_pos > 0 is checked (a package ``KVCache`` is
                    passed if forward takes ``cache``), and one config has rope_theta 1e6
check_greedy        ``fn(model, ids, max_new_tokens, eos_id)`` -> the new ids (list of int)
==================  ===========================================================================

When no known mistake matches a block's or model's output, the check feeds the learner's own
sub-layers the package's intermediate values and says which step differs.

The checks live in one module per build: harness (what they share), norm, rope, ffn, attention, block,
model (notebooks 02-06); builds (what the later ones share), chat (01), training (07), sampling and
generation (08), rlhf (10-11), gatt (12).
"""

from .attention import check_attention, check_repeat_kv
from .block import check_block
from .chat import check_chat_encoder
from .ffn import check_swiglu
from .gatt import check_gatt_sequence
from .generation import check_generate
from .harness import CheckResult, check_answer, use
from .model import check_greedy, check_model
from .norm import check_rmsnorm
from .rlhf import check_best_of_n, check_kl_penalised_reward, check_ranking_loss
from .rope import check_rope
from .sampling import check_temperature, check_top_k, check_top_p
from .training import check_masked_loss, check_train_step, reference_masked_loss, reference_train_step

__all__ = [
    "CheckResult",
    "use",
    "check_answer",
    "check_greedy",
    "check_rmsnorm",
    "check_rope",
    "check_swiglu",
    "check_repeat_kv",
    "check_attention",
    "check_block",
    "check_model",
    "check_chat_encoder",
    "check_gatt_sequence",
    "check_generate",
    "check_best_of_n",
    "check_kl_penalised_reward",
    "check_ranking_loss",
    "check_temperature",
    "check_top_k",
    "check_top_p",
    "check_masked_loss",
    "check_train_step",
    "reference_masked_loss",
    "reference_train_step",
]

# Helpers the tests reach into (not part of the API).
from .attention import _heads_evidence  # noqa: E402, F401
from .harness import _run_cases  # noqa: E402, F401
from .norm import _rms_cases  # noqa: E402, F401
