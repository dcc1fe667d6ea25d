"""llama2_lab.course.checks: the package's own pieces pass; typical learner mistakes fail with the right hint."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llama2_lab.core import attention, ffn, norm, rope
from llama2_lab.core import transformer as model
from llama2_lab.course import checks
from llama2_lab.course.checks import CheckResult

torch.set_num_threads(1)


def assert_caught(result: CheckResult, mistake: str, *words: str) -> None:
    """The check failed, diagnosed ``mistake``, and the hint says each of ``words``."""
    assert isinstance(result, CheckResult)
    assert not result.passed, "a wrong implementation passed"
    assert result.mistake == mistake, f"diagnosed {result.mistake!r}, hint: {result.hint}"
    for w in words:
        assert w.lower() in result.hint.lower(), f"{w!r} not in hint: {result.hint}"


# --- the package passes its own checks ---------------------------------------------------------
@pytest.mark.parametrize("check, obj", [
    (checks.check_rmsnorm, norm.RMSNorm), (checks.check_rmsnorm, norm.rms_norm),
    (checks.check_swiglu, ffn.FeedForward), (checks.check_swiglu, ffn.swiglu),
    (checks.check_repeat_kv, attention.repeat_kv), (checks.check_attention, attention.Attention),
    (checks.check_block, model.TransformerBlock), (checks.check_model, model.Transformer),
])
def test_package_passes(check, obj, capsys):
    r = check(obj)
    assert r.passed and r.cases >= 4 and r.max_error < 1e-4 and r.hint == ""
    assert capsys.readouterr().out.startswith(f"✓ {check.__name__}: passed {r.cases} cases")


def test_package_rope_passes(capsys):
    r = checks.check_rope(rope.apply_rotary_emb, rope.precompute_freqs_cis)
    assert r.passed and r.cases == 9
    assert checks.check_rope(precompute_freqs_cis=rope.precompute_freqs_cis).passed
    assert checks.check_rope(rope.apply_rotary_emb).passed
    out = capsys.readouterr().out
    assert out.count("✓") == 3 and "✗" not in out


def test_torch_rmsnorm_passes():
    assert checks.check_rmsnorm(nn.RMSNorm, verbose=False).passed


def test_verdict_and_bool(capsys):
    r = checks.check_repeat_kv(lambda x, n: x, verbose=True)
    out = capsys.readouterr().out
    assert out.startswith("✗ check_repeat_kv: failed on case 2") and "hint:" in out
    assert not r and str(r) in out
    with pytest.raises(TypeError, match="needs apply_rotary_emb"):
        checks.check_rope()


def test_checks_leave_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.check_attention(attention.Attention, verbose=False)
    assert torch.equal(torch.rand(3), expected)


# --- RMSNorm -----------------------------------------------------------------------------------------
class _Gain(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))


class LayerNormish(_Gain):
    def forward(self, x):
        xf = x.float()
        xf = xf - xf.mean(-1, keepdim=True)
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class NoUpcast(_Gain):
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class NoCastBack(_Gain):
    def forward(self, x):
        xf = x.float()
        return xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()


def test_rmsnorm_layernorm():
    assert_caught(checks.check_rmsnorm(LayerNormish, verbose=False), "layernorm", "LayerNorm", "mean")


def test_rmsnorm_eps_outside():
    fn = lambda x, w, eps: (x.float() / (x.float().pow(2).mean(-1, keepdim=True).sqrt() + eps)).type_as(x) * w
    r = checks.check_rmsnorm(fn, verbose=False)
    assert_caught(r, "eps_outside_sqrt", "outside the square root")
    assert "tiny values" in r.failed_case


def test_rmsnorm_no_gain():
    fn = lambda x, w, eps: (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)).type_as(x)
    assert_caught(checks.check_rmsnorm(fn, verbose=False), "no_gain", "gain", "weight")


def test_rmsnorm_wrong_dim():
    fn = lambda x, w, eps: (x.float() * torch.rsqrt(x.float().pow(2).mean(0, keepdim=True) + eps)).type_as(x) * w
    assert_caught(checks.check_rmsnorm(fn, verbose=False), "wrong_dim", "wrong dim", "mean(-1")


def test_rmsnorm_no_float32_upcast():
    r = checks.check_rmsnorm(NoUpcast, verbose=False)
    assert_caught(r, "no_upcast", "float32", "type_as")
    assert "float16" in r.failed_case


def test_rmsnorm_forgot_to_cast_back():
    r = checks.check_rmsnorm(NoCastBack, verbose=False)
    assert not r.passed and r.mistake == "dtype" and "type_as" in r.hint


def test_rmsnorm_without_a_gain_parameter():
    class NoParams(nn.Module):
        def __init__(self, dim, eps=1e-5):
            super().__init__()

        def forward(self, x):
            return x

    r = checks.check_rmsnorm(NoParams, verbose=False)
    assert not r.passed and r.mistake == "setup" and "`weight`" in r.hint


# --- RoPE --------------------------------------------------------------------------------------------
def _meta_style_apply(pairing="interleaved", sign=1.0, rotate_k=True):
    def apply(xq, xk, freqs_cis):
        cos, sin = freqs_cis.real[None, :, None, :], sign * freqs_cis.imag[None, :, None, :]

        def rot(x):
            xf = x.float()
            if pairing == "half":
                a, b = xf.chunk(2, -1)
                return torch.cat((a * cos - b * sin, a * sin + b * cos), -1).type_as(x)
            a, b = xf[..., 0::2], xf[..., 1::2]
            return torch.stack((a * cos - b * sin, a * sin + b * cos), -1).flatten(-2).type_as(x)
        return rot(xq), (rot(xk) if rotate_k else xk)
    return apply


def test_rope_own_real_arithmetic_passes():
    assert checks.check_rope(_meta_style_apply(), verbose=False).passed


def test_rope_rotate_half():
    assert_caught(checks.check_rope(_meta_style_apply("half"), verbose=False), "rotate_half", "rotate-half", "x[2i]")


def test_rope_sin_sign():
    assert_caught(checks.check_rope(_meta_style_apply(sign=-1.0), verbose=False), "sin_sign", "sign of sin")


def test_rope_k_not_rotated():
    assert_caught(checks.check_rope(_meta_style_apply(rotate_k=False), verbose=False), "k_not_rotated", "rotate both")


def _table(kind):
    def precompute(head_dim, end, theta=10000.0):
        if kind == "exponent":
            freqs = 1.0 / (theta ** (torch.arange(head_dim // 2).float() / head_dim))
        elif kind == "theta":
            freqs = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        else:
            freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
        t = torch.arange(1, end + 1).float() if kind == "off_by_one" else torch.arange(end).float()
        angles = torch.outer(t, freqs)
        return torch.polar(torch.ones_like(angles), angles)
    return precompute


def test_rope_table_own_passes_with_apply():
    assert checks.check_rope(_meta_style_apply(), _table("right"), verbose=False).passed


def test_rope_positions_off_by_one():
    r = checks.check_rope(precompute_freqs_cis=_table("off_by_one"), verbose=False)
    assert_caught(r, "positions_off_by_one", "positions start at 0")


def test_rope_exponent():
    assert_caught(checks.check_rope(precompute_freqs_cis=_table("exponent"), verbose=False), "exponent", "2i/head_dim")


def test_rope_theta_ignored():
    r = checks.check_rope(_meta_style_apply(), _table("theta"), verbose=False)
    assert_caught(r, "theta_ignored", "theta")
    assert "theta=1e+06" in r.failed_case


def test_rope_view_as_complex_in_bf16():
    def apply(xq, xk, freqs_cis):  # forgets .float(): view_as_complex rejects bf16
        q = torch.view_as_complex(xq.reshape(*xq.shape[:-1], -1, 2))
        k = torch.view_as_complex(xk.reshape(*xk.shape[:-1], -1, 2))
        f = freqs_cis[None, :, None, :]
        return torch.view_as_real(q * f).flatten(3).type_as(xq), torch.view_as_real(k * f).flatten(3).type_as(xk)

    r = checks.check_rope(apply, verbose=False)
    assert not r.passed and r.mistake == "exception" and "bfloat16" in r.failed_case
    assert "view_as_complex" in r.hint and ".float()" in r.hint


# --- SwiGLU ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn, mistake, word", [
    (lambda x, w1, w2, w3: F.linear(F.silu(F.linear(x, w3)) * F.linear(x, w1), w2), "gate_value_swapped", "w1 is the gate"),
    (lambda x, w1, w2, w3: F.linear(F.relu(F.linear(x, w1)) * F.linear(x, w3), w2), "relu", "ReLU"),
    (lambda x, w1, w2, w3: F.linear(F.gelu(F.linear(x, w1)) * F.linear(x, w3), w2), "gelu", "GELU"),
    (lambda x, w1, w2, w3: F.linear(F.silu(F.linear(x, w1) * F.linear(x, w3)), w2), "silu_on_product", "gate only"),
])
def test_swiglu_mistakes(fn, mistake, word):
    assert_caught(checks.check_swiglu(fn, verbose=False), mistake, word)


def test_swiglu_module_with_bias():
    class Biased(nn.Module):
        def __init__(self, dim, hidden_dim):
            super().__init__()
            self.w1, self.w2, self.w3 = nn.Linear(dim, hidden_dim), nn.Linear(hidden_dim, dim), nn.Linear(dim, hidden_dim)

        def forward(self, x):
            return self.w2(F.silu(self.w1(x)) * self.w3(x))

    r = checks.check_swiglu(Biased, verbose=False)
    assert not r.passed and r.mistake == "setup" and "bias=False" in r.hint


def test_swiglu_wrong_names():
    class Named(nn.Module):
        def __init__(self, dim, hidden_dim):
            super().__init__()
            self.gate = nn.Linear(dim, hidden_dim, bias=False)

    r = checks.check_swiglu(Named, verbose=False)
    assert not r.passed and "w1 (gate)" in r.hint


# --- repeat_kv ---------------------------------------------------------------------------------------
def test_repeat_kv_tiled():
    assert_caught(checks.check_repeat_kv(lambda x, n: x.repeat(1, 1, n, 1), verbose=False), "tiled", "h // n_rep")


def test_repeat_kv_seq_axis():
    r = checks.check_repeat_kv(lambda x, n: x.repeat_interleave(n, dim=1), verbose=False)
    assert_caught(r, "seq_axis", "sequence axis")


def test_repeat_kv_not_repeated():
    assert_caught(checks.check_repeat_kv(lambda x, n: x, verbose=False), "not_repeated", "unchanged")


def test_repeat_kv_interleave_passes():
    assert checks.check_repeat_kv(lambda x, n: x.repeat_interleave(n, dim=2), verbose=False).passed


# --- attention ---------------------------------------------------------------------------------------
def make_attention(mistake=None, cached=False):
    """A learner-style attention class with one deliberate mistake."""

    class MyAttention(nn.Module):
        def __init__(self, args):
            super().__init__()
            self.n_heads, self.n_kv, self.hd = args.n_heads, args.kv_heads, args.head_dim
            self.wq = nn.Linear(args.dim, args.n_heads * self.hd, bias=False)
            self.wk = nn.Linear(args.dim, self.n_kv * self.hd, bias=False)
            self.wv = nn.Linear(args.dim, self.n_kv * self.hd, bias=False)
            self.wo = nn.Linear(args.n_heads * self.hd, args.dim, bias=False)

        def _forward(self, x, freqs_cis, start_pos=0, cache=None):
            B, T, _ = x.shape
            q = self.wq(x).view(B, T, self.n_heads, self.hd)
            k = self.wk(x).view(B, T, self.n_kv, self.hd)
            v = self.wv(x).view(B, T, self.n_kv, self.hd)
            q, k = rope.apply_rotary_emb(q, k, freqs_cis)
            if mistake == "rotate_v":
                v, _ = rope.apply_rotary_emb(v, v, freqs_cis)
            if cache is not None and mistake != "cache_ignored":
                k_, v_ = cache.update(0, start_pos, k.transpose(1, 2), v.transpose(1, 2))
                k, v = k_.transpose(1, 2), v_.transpose(1, 2)
            n_rep = self.n_heads // self.n_kv
            if mistake == "tiled":
                k, v = k.repeat(1, 1, n_rep, 1), v.repeat(1, 1, n_rep, 1)
            elif mistake != "no_repeat":
                k, v = attention.repeat_kv(k, n_rep), attention.repeat_kv(v, n_rep)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            scale = self.hd if mistake == "scale_head_dim" else math.sqrt(self.hd)
            scores = q.float() @ k.float().transpose(-2, -1) / scale
            S = k.shape[2]
            offset = 0 if mistake == "cache_ignored" else S - T
            diag = {"mask_excludes_diagonal": 0, "mask_off_by_one": 2}.get(mistake, 1)
            if mistake != "no_mask":
                scores = scores + torch.full((T, S), float("-inf")).triu(diag + offset)
            probs = torch.softmax(scores, dim=-2 if mistake == "softmax_wrong_dim" else -1).type_as(q)
            out = probs @ v
            if mistake == "merge_without_transpose":
                out = out.reshape(B, T, -1)
            else:
                out = out.transpose(1, 2).reshape(B, T, -1)
            return self.wo(out)

    if cached:
        MyAttention.forward = lambda self, x, freqs_cis, start_pos=0, cache=None: self._forward(x, freqs_cis, start_pos, cache)
    else:
        MyAttention.forward = lambda self, x, freqs_cis: self._forward(x, freqs_cis)
    return MyAttention


def test_learner_style_attention_passes():
    assert checks.check_attention(make_attention(), verbose=False).passed
    r = checks.check_attention(make_attention(cached=True), verbose=False)
    assert r.passed and r.cases == 7


@pytest.mark.parametrize("mistake, words", [
    ("no_mask", ["no causal mask"]),
    ("mask_excludes_diagonal", ["see itself"]),
    ("mask_off_by_one", ["off by one"]),
    ("tiled", ["h // n_rep"]),
    ("scale_head_dim", ["sqrt(head_dim)"]),
    ("softmax_wrong_dim", ["dim=-1"]),
    ("rotate_v", ["only q and k"]),
    ("merge_without_transpose", ["transpose(1, 2)"]),
])
def test_attention_mistakes(mistake, words):
    key = {"tiled": "repeat_tiled"}.get(mistake, mistake)
    assert_caught(checks.check_attention(make_attention(mistake), verbose=False), key, *words)


def test_attention_forgot_repeat_kv():
    r = checks.check_attention(make_attention("no_repeat"), verbose=False)
    assert not r.passed and r.mistake == "exception"
    assert "repeat_kv" in r.hint and "n_kv_heads 2" in r.failed_case


def test_attention_cache_ignored():
    r = checks.check_attention(make_attention("cache_ignored", cached=True), verbose=False)
    assert_caught(r, "cache_ignored", "start_pos")
    assert "cached" in r.failed_case


# --- block and model ---------------------------------------------------------------------------------
def make_block(kind=None):
    class MyBlock(nn.Module):
        def __init__(self, layer_id, args):
            super().__init__()
            self.attention = attention.Attention(args, layer_id)
            self.feed_forward = ffn.FeedForward(args.dim, args.hidden_dim)
            self.attention_norm = norm.RMSNorm(args.dim, args.norm_eps)
            self.ffn_norm = norm.RMSNorm(args.dim, args.norm_eps)

        def forward(self, x, freqs_cis):
            if kind == "post_norm":
                h = self.attention_norm(x + self.attention(x, freqs_cis))
                return self.ffn_norm(h + self.feed_forward(h))
            if kind == "no_residual":
                h = self.attention(self.attention_norm(x), freqs_cis)
                return self.feed_forward(self.ffn_norm(h))
            if kind == "norms_swapped":
                h = x + self.attention(self.ffn_norm(x), freqs_cis)
                return h + self.feed_forward(self.attention_norm(h))
            h = x + self.attention(self.attention_norm(x), freqs_cis)
            return h + self.feed_forward(self.ffn_norm(h))
    return MyBlock


def test_learner_block_passes():
    assert checks.check_block(make_block(), verbose=False).passed


@pytest.mark.parametrize("kind, words", [("post_norm", ["pre-norm"]), ("no_residual", ["residual"]),
                                         ("norms_swapped", ["swapped"])])
def test_block_mistakes(kind, words):
    assert_caught(checks.check_block(make_block(kind), verbose=False), kind, *words)


def make_model(kind=None):
    class MyModel(nn.Module):
        def __init__(self, args):
            super().__init__()
            self.args = args
            self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
            self.layers = nn.ModuleList(model.TransformerBlock(i, args) for i in range(args.n_layers))
            self.norm = norm.RMSNorm(args.dim, args.norm_eps)
            if kind != "no_output":
                self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
            if kind == "tied":
                self.output.weight = self.tok_embeddings.weight
            self.freqs_cis = rope.precompute_freqs_cis(args.head_dim, args.max_seq_len)

        def forward(self, tokens, start_pos):
            T = tokens.shape[1]
            h = self.tok_embeddings(tokens)
            for layer in self.layers:
                if kind == "post_norm":
                    a = layer.attention
                    h = layer.attention_norm(h + a(h, self.freqs_cis[:T]))
                    h = layer.ffn_norm(h + layer.feed_forward(h))
                else:
                    h = layer(h, self.freqs_cis[:T])
            if kind != "no_final_norm":
                h = self.norm(h)
            w = self.tok_embeddings.weight if kind == "no_output" else self.output.weight
            return (h @ w.T).float()
    return MyModel


def test_learner_model_passes():
    assert checks.check_model(make_model(), verbose=False).passed


def test_model_no_final_norm():
    assert_caught(checks.check_model(make_model("no_final_norm"), verbose=False), "no_final_norm", "final RMSNorm")


def test_model_post_norm():
    assert_caught(checks.check_model(make_model("post_norm"), verbose=False), "post_norm", "pre-norm")


def test_model_tied_output():
    assert_caught(checks.check_model(make_model("tied"), verbose=False), "tied_to_output", "separate")
    r = checks.check_model(make_model("no_output"), verbose=False)
    assert not r.passed and r.mistake == "setup" and "untied" in r.hint and "output.weight" in r.hint


def test_module_checks_reject_functions():
    with pytest.raises(TypeError, match="nn.Module class"):
        checks.check_attention(lambda x: x)
    with pytest.raises(TypeError, match="nn.Module class"):
        checks.check_model("Transformer")
