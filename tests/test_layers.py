"""Each component against an independent formula (written out here, not imported)."""

import math

import pytest
import torch
import torch.nn.functional as F

from llama2_lab.core.attention import Attention, attention_probs, causal_mask, repeat_kv
from llama2_lab.core.config import ModelArgs
from llama2_lab.core.ffn import FeedForward, swiglu
from llama2_lab.core.norm import LayerNorm, RMSNorm, rms_norm
from llama2_lab.core.rope import (
    apply_rotary_emb,
    apply_rotary_emb_rotate_half,
    freqs_cis_real,
    permute_from_hf,
    permute_to_hf,
    precompute_freqs_cis,
)


def test_rmsnorm_matches_formula_and_is_scale_invariant():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16)
    norm = RMSNorm(16, eps=1e-5)
    norm.weight.data = torch.rand(16) + 0.5
    expected = (
        torch.stack([torch.stack([v / math.sqrt(float((v**2).mean()) + 1e-5) for v in row]) for row in x])
        * norm.weight.data
    )
    assert torch.allclose(norm(x), expected, atol=1e-6)
    assert torch.allclose(norm(7.0 * x), norm(x), atol=1e-5)  # scale invariant
    assert not torch.allclose(norm(x + 3.0), norm(x), atol=1e-2)  # not shift invariant (no re-centering)
    ln = LayerNorm(16)
    assert torch.allclose(ln(x + 3.0), ln(x), atol=1e-4)  # LayerNorm is


def test_rmsnorm_computes_in_float32_and_casts_back():
    x = (torch.randn(4, 64) * 300).to(torch.bfloat16)
    w = torch.ones(64, dtype=torch.bfloat16)
    out = rms_norm(x, w)
    assert out.dtype == torch.bfloat16
    ref = (x.float() / (x.float().pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()).to(torch.bfloat16)
    assert torch.equal(out, ref)


def _rope_by_hand(x, pos, theta=10000.0):
    """Rotate pair (2i, 2i+1) of a (head_dim,) vector by pos·θ_i with an explicit 2×2 matrix."""
    hd = x.shape[-1]
    out = torch.empty_like(x)
    for i in range(hd // 2):
        ang = pos * theta ** (-2 * i / hd)
        c, s = math.cos(ang), math.sin(ang)
        out[2 * i] = c * x[2 * i] - s * x[2 * i + 1]
        out[2 * i + 1] = s * x[2 * i] + c * x[2 * i + 1]
    return out


def test_rope_matches_explicit_rotation_matrices():
    torch.manual_seed(0)
    T, H, hd = 6, 2, 8
    q, k = torch.randn(1, T, H, hd), torch.randn(1, T, H, hd)
    rq, rk = apply_rotary_emb(q, k, precompute_freqs_cis(hd, T))
    for t in range(T):
        for h in range(H):
            assert torch.allclose(rq[0, t, h], _rope_by_hand(q[0, t, h], t), atol=1e-5)
            assert torch.allclose(rk[0, t, h], _rope_by_hand(k[0, t, h], t), atol=1e-5)
    # the real (cos, sin) form of the table gives the same rotation
    rq2, _ = apply_rotary_emb(q, k, freqs_cis_real(hd, T))
    assert torch.allclose(rq, rq2, atol=1e-6)


def test_rope_relative_position_property():
    """q_m · k_n depends only on m − n: shift both positions, the score stays."""
    torch.manual_seed(1)
    hd = 16
    table = precompute_freqs_cis(hd, 64)
    q, k = torch.randn(1, 1, 1, hd), torch.randn(1, 1, 1, hd)

    def score(m, n):
        qm, _ = apply_rotary_emb(q, q, table[m : m + 1])
        kn, _ = apply_rotary_emb(k, k, table[n : n + 1])
        return float((qm * kn).sum())

    for offset in (1, 7, 40):
        assert score(5, 2) == pytest.approx(score(5 + offset, 2 + offset), abs=1e-4)
        assert score(9, 9) == pytest.approx(score(9 + offset, 9 + offset), abs=1e-4)
    assert abs(score(5, 2) - score(5, 4)) > 1e-3  # but it does depend on the distance


def test_interleaved_equals_rotate_half_after_permutation():
    """Meta's pairs (2i, 2i+1) vs HF's (i, i+hd/2): same attention scores once wq/wk rows are permuted."""
    torch.manual_seed(2)
    dim, H, T = 32, 4, 5
    hd = dim // H
    x = torch.randn(1, T, dim)
    wq, wk = torch.randn(dim, dim), torch.randn(dim, dim)
    meta_q = (x @ wq.T).view(1, T, H, hd)
    meta_k = (x @ wk.T).view(1, T, H, hd)
    mq, mk = apply_rotary_emb(meta_q, meta_k, precompute_freqs_cis(hd, T))
    hf_q = (x @ permute_to_hf(wq, H).T).view(1, T, H, hd)
    hf_k = (x @ permute_to_hf(wk, H).T).view(1, T, H, hd)
    hq = apply_rotary_emb_rotate_half(hf_q, torch.arange(T))
    hk = apply_rotary_emb_rotate_half(hf_k, torch.arange(T))
    meta_scores = torch.einsum("bthd,bshd->bhts", mq, mk)
    hf_scores = torch.einsum("bthd,bshd->bhts", hq, hk)
    assert torch.allclose(meta_scores, hf_scores, atol=1e-4)
    # without the permutation the two conventions disagree
    hq_wrong = apply_rotary_emb_rotate_half(meta_q, torch.arange(T))
    hk_wrong = apply_rotary_emb_rotate_half(meta_k, torch.arange(T))
    assert not torch.allclose(meta_scores, torch.einsum("bthd,bshd->bhts", hq_wrong, hk_wrong), atol=1e-2)


def test_permutation_round_trip_and_index_form():
    w = torch.arange(2 * 8 * 3, dtype=torch.float32).view(16, 3)  # 2 heads, head_dim 8
    assert torch.equal(permute_from_hf(permute_to_hf(w, 2), 2), w)
    hf = permute_to_hf(w, 2)
    # within a head, HF row j·hd/2 + i is Meta row 2i + j
    for h in range(2):
        for i in range(4):
            for j in range(2):
                assert torch.equal(hf[h * 8 + j * 4 + i], w[h * 8 + 2 * i + j])


def test_swiglu_formula():
    torch.manual_seed(3)
    ff = FeedForward(8, 24)
    x = torch.randn(2, 3, 8)
    a, b = x @ ff.w1.weight.T, x @ ff.w3.weight.T
    expected = (a * torch.sigmoid(a) * b) @ ff.w2.weight.T
    assert torch.allclose(ff(x), expected, atol=1e-6)
    assert torch.allclose(swiglu(x, ff.w1.weight, ff.w2.weight, ff.w3.weight), expected, atol=1e-6)


def test_repeat_kv_groups_consecutive_query_heads():
    x = torch.randn(2, 5, 3, 4)  # (B, S, n_kv_heads, head_dim)
    r = repeat_kv(x, 4)
    assert r.shape == (2, 5, 12, 4)
    for h in range(12):
        assert torch.equal(r[:, :, h], x[:, :, h // 4])  # query head h uses KV head h // n_rep
    assert repeat_kv(x, 1) is x


def test_causal_mask_aligned_to_the_end():
    m = causal_mask(2, 5)  # two new tokens at positions 3 and 4
    assert m.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    assert torch.equal(causal_mask(4, 4), torch.ones(4, 4, dtype=torch.bool).tril())


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_attention_against_a_per_head_loop(n_kv_heads):
    torch.manual_seed(4)
    args = ModelArgs(dim=32, n_layers=1, n_heads=4, n_kv_heads=n_kv_heads, vocab_size=16, max_seq_len=16)
    attn = Attention(args)
    for p in attn.parameters():
        p.data.normal_(0, 0.5)
    B, T, hd = 2, 6, 8
    x = torch.randn(B, T, 32)
    table = precompute_freqs_cis(hd, T)
    out = attn(x, table)
    q = (x @ attn.wq.weight.T).view(B, T, 4, hd)
    k = (x @ attn.wk.weight.T).view(B, T, n_kv_heads, hd)
    v = (x @ attn.wv.weight.T).view(B, T, n_kv_heads, hd)
    q, k = apply_rotary_emb(q, k, table)
    heads = []
    for h in range(4):
        g = h // (4 // n_kv_heads)
        s = q[:, :, h] @ k[:, :, g].transpose(1, 2) / math.sqrt(hd)  # (B, T, T)
        s = s + torch.full((T, T), float("-inf")).triu(1)
        heads.append(torch.softmax(s, -1) @ v[:, :, g])
    expected = torch.cat(heads, -1) @ attn.wo.weight.T
    assert torch.allclose(out, expected, atol=1e-5)
    # the recording path is the same maths
    rec = {}
    assert torch.allclose(attn(x, table, record=rec), out, atol=1e-5)
    probs = rec["layers.0.attention.pattern"]
    assert probs.shape == (B, 4, T, T)
    assert torch.allclose(probs.sum(-1), torch.ones(B, 4, T))
    assert float(probs.triu(1).abs().max()) == 0.0


def test_attention_probs_is_softmax_of_scaled_scores():
    q, k = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    p = attention_probs(q, k, None)
    assert torch.allclose(p, F.softmax(q @ k.transpose(-2, -1) / 2.0, -1))
