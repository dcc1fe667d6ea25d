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
@pytest.mark.parametrize(
    "check, obj",
    [
        (checks.check_rmsnorm, norm.RMSNorm),
        (checks.check_rmsnorm, norm.rms_norm),
        (checks.check_swiglu, ffn.FeedForward),
        (checks.check_swiglu, ffn.swiglu),
        (checks.check_repeat_kv, attention.repeat_kv),
        (checks.check_attention, attention.Attention),
        (checks.check_block, model.TransformerBlock),
        (checks.check_model, model.Transformer),
    ],
)
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
@pytest.mark.parametrize(
    "fn, mistake, word",
    [
        (
            lambda x, w1, w2, w3: F.linear(F.silu(F.linear(x, w3)) * F.linear(x, w1), w2),
            "gate_value_swapped",
            "w1 is the gate",
        ),
        (lambda x, w1, w2, w3: F.linear(F.relu(F.linear(x, w1)) * F.linear(x, w3), w2), "relu", "ReLU"),
        (lambda x, w1, w2, w3: F.linear(F.gelu(F.linear(x, w1)) * F.linear(x, w3), w2), "gelu", "GELU"),
        (lambda x, w1, w2, w3: F.linear(F.silu(F.linear(x, w1) * F.linear(x, w3)), w2), "silu_on_product", "gate only"),
    ],
)
def test_swiglu_mistakes(fn, mistake, word):
    assert_caught(checks.check_swiglu(fn, verbose=False), mistake, word)


def test_swiglu_module_with_bias():
    class Biased(nn.Module):
        def __init__(self, dim, hidden_dim):
            super().__init__()
            self.w1, self.w2, self.w3 = (
                nn.Linear(dim, hidden_dim),
                nn.Linear(hidden_dim, dim),
                nn.Linear(dim, hidden_dim),
            )

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
        MyAttention.forward = lambda self, x, freqs_cis, start_pos=0, cache=None: self._forward(
            x, freqs_cis, start_pos, cache
        )
    else:
        MyAttention.forward = lambda self, x, freqs_cis: self._forward(x, freqs_cis)
    return MyAttention


def test_learner_style_attention_passes():
    assert checks.check_attention(make_attention(), verbose=False).passed
    r = checks.check_attention(make_attention(cached=True), verbose=False)
    assert r.passed and r.cases == 7


@pytest.mark.parametrize(
    "mistake, words",
    [
        ("no_mask", ["no causal mask"]),
        ("mask_excludes_diagonal", ["see itself"]),
        ("mask_off_by_one", ["off by one"]),
        ("tiled", ["h // n_rep"]),
        ("scale_head_dim", ["sqrt(head_dim)"]),
        ("softmax_wrong_dim", ["dim=-1"]),
        ("rotate_v", ["only q and k"]),
        ("merge_without_transpose", ["transpose(1, 2)"]),
    ],
)
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


@pytest.mark.parametrize(
    "kind, words", [("post_norm", ["pre-norm"]), ("no_residual", ["residual"]), ("norms_swapped", ["swapped"])]
)
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
            theta = 10000.0 if kind == "theta_ignored" else args.rope_theta
            self.freqs_cis = rope.precompute_freqs_cis(args.head_dim, args.max_seq_len, theta)

        def forward(self, tokens, start_pos=0, cache=None):
            T = tokens.shape[1]
            s = 0 if kind == "rope_not_offset" else start_pos
            freqs = self.freqs_cis[s : s + T]
            h = self.tok_embeddings(tokens)
            for layer in self.layers:
                if kind == "post_norm":
                    a = layer.attention
                    h = layer.attention_norm(h + a(h, freqs))
                    h = layer.ffn_norm(h + layer.feed_forward(h))
                elif kind == "attn_residual_missing":
                    h = layer.attention(layer.attention_norm(h), freqs, start_pos, cache)
                    h = h + layer.feed_forward(layer.ffn_norm(h))
                else:
                    h = layer(h, freqs, start_pos, cache)
            if kind != "no_final_norm":
                h = self.norm(h)
            w = self.tok_embeddings.weight if kind == "no_output" else self.output.weight
            return (h @ w.T).float()

    if kind == "no_start_pos":
        MyModel.forward = lambda self, tokens: MyModel.__dict__["_full"](self, tokens)
        MyModel._full = lambda self, tokens: self.output(self.norm(_stack(self, tokens))).float()
    return MyModel


def _stack(m, tokens):
    h = m.tok_embeddings(tokens)
    for layer in m.layers:
        h = layer(h, m.freqs_cis[: tokens.shape[1]])
    return h


def test_learner_model_passes():
    r = checks.check_model(make_model(), verbose=False)
    assert r.passed and r.note == ""
    assert r.cases == 7  # five configs (one with rope_theta 1e6) and two cached runs at start_pos > 0


def test_model_without_start_pos_passes_with_a_note(capsys):
    r = checks.check_model(make_model("no_start_pos"))
    assert r.passed and r.cases == 5 and "cached decoding was not checked" in r.note
    assert "note: forward takes no start_pos" in capsys.readouterr().out


def test_model_cached_decoding_rope_not_offset():
    r = checks.check_model(make_model("rope_not_offset"), verbose=False)
    assert_caught(r, "rope_not_offset", "freqs_cis[start_pos : start_pos + T]")
    assert "cached decoding" in r.failed_case and "start_pos" in r.failed_case


def test_model_rope_theta_ignored():
    r = checks.check_model(make_model("theta_ignored"), verbose=False)
    assert_caught(r, "theta_ignored", "args.rope_theta")
    assert "rope_theta 1e+06" in r.failed_case


def test_model_no_final_norm():
    assert_caught(checks.check_model(make_model("no_final_norm"), verbose=False), "no_final_norm", "final RMSNorm")


def test_model_post_norm():
    assert_caught(checks.check_model(make_model("post_norm"), verbose=False), "post_norm", "pre-norm")


def test_model_attention_residual_missing():
    r = checks.check_model(make_model("attn_residual_missing"), verbose=False)
    assert_caught(r, "attn_residual_missing", "residual of the attention branch is missing")


def test_model_tied_output():
    assert_caught(checks.check_model(make_model("tied"), verbose=False), "tied_to_output", "separate")
    r = checks.check_model(make_model("no_output"), verbose=False)
    assert not r.passed and r.mistake == "setup" and "untied" in r.hint and "output.weight" in r.hint


def test_model_substep_names_the_block():
    """A mistake no known variant matches: the hint names the sub-step (block 0's feed-forward), not just values."""

    class OddFFN(ffn.FeedForward):
        def forward(self, x):
            return 1.5 * super().forward(x)

    Base = make_model()

    class Odd(Base):
        def __init__(self, args):
            super().__init__(args)
            self.layers[0].feed_forward = OddFFN(args.dim, args.hidden_dim)

    r = checks.check_model(Odd, verbose=False)
    assert not r.passed and r.mistake == "substep_feed_forward", r.hint
    assert "block 0" in r.hint and "feed-forward" in r.hint and "check_swiglu" in r.hint


def test_module_checks_reject_functions():
    with pytest.raises(TypeError, match="nn.Module class"):
        checks.check_attention(lambda x: x)
    with pytest.raises(TypeError, match="nn.Module class"):
        checks.check_model("Transformer")


# --- not written yet, and use() ------------------------------------------------------------------------
class _TodoNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        raise NotImplementedError("TODO: write MyRMSNorm")


def _todo(*args, **kwargs):
    raise NotImplementedError("TODO")


class _TodoModule(nn.Module):
    def __init__(self, *args):
        super().__init__()
        raise NotImplementedError("TODO")


@pytest.mark.parametrize(
    "check, obj, what",
    [
        (checks.check_rmsnorm, _TodoNorm, "RMSNorm"),
        (checks.check_rmsnorm, _todo, "RMSNorm"),
        (checks.check_swiglu, _TodoModule, "SwiGLU"),
        (checks.check_repeat_kv, _todo, "repeat_kv"),
        (checks.check_attention, _TodoModule, "Attention"),
        (checks.check_block, _TodoModule, "TransformerBlock"),
        (checks.check_model, _TodoModule, "Transformer"),
    ],
)
def test_not_written_yet(check, obj, what, capsys):
    r = check(obj)
    assert not r.passed and r.not_written and r.what == what
    out = capsys.readouterr().out
    assert out == (
        f"{what}: not written yet — fill in the TODO cell above; the rest of this notebook uses the package's {what}.\n"
    )


def test_rope_not_written_table_or_apply(capsys):
    assert checks.check_rope(_todo, _todo).not_written
    assert checks.check_rope(_todo, _table("right")).not_written  # the table is fine, apply is a TODO
    assert checks.check_rope(precompute_freqs_cis=_todo).not_written
    out = capsys.readouterr().out
    assert out.count("RoPE: not written yet") == 2 and out.count("RoPE table: not written yet") == 1
    assert checks.check_rope(_todo, verbose=False).what == "apply_rotary_emb"


def test_a_wrong_implementation_is_not_not_written():
    r = checks.check_repeat_kv(lambda x, n: x, verbose=False)
    assert not r.passed and not r.not_written


def test_use_picks_the_learners_only_when_it_passed(capsys):
    mine, package = object(), object()
    assert checks.use(checks.check_rmsnorm(norm.RMSNorm, verbose=False), mine, package, "RMSNorm") is mine
    assert checks.use(checks.check_rmsnorm(_TodoNorm, verbose=False), mine, package, "RMSNorm") is package
    assert checks.use(checks.check_rmsnorm(LayerNormish, verbose=False), mine, package, "RMSNorm") is package
    assert capsys.readouterr().out.splitlines() == [
        "Using your RMSNorm.",
        "Using the package's RMSNorm (yours is not written yet).",
        "Using the package's RMSNorm (yours did not pass its check).",
    ]


def test_check_answer(capsys):
    assert checks.check_answer("n", ...).not_written
    assert checks.check_answer("n", 42, 42).passed
    r = checks.check_answer("n", 41, 42, hint="count again")
    assert not r.passed and r.hint == "count again"
    assert checks.check_answer("x", 0.5001, 0.5, rel=1e-3).passed
    assert not checks.check_answer("x", 0.6, 0.5, rel=1e-3).passed
    assert checks.check_answer("x", 3, ok=lambda v: v > 2).passed
    out = capsys.readouterr().out
    assert "n: not written yet" in out and "✓ n = 42" in out and "✗ n = 41" in out and "hint: count again" in out


# --- the strengthened checks -------------------------------------------------------------------------
class FixedEps(_Gain):
    """Takes eps in the constructor but always uses 1e-5: passes every case whose eps is 1e-5."""

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).type_as(x) * self.weight


class NoEpsArg(nn.Module):
    """A constructor without eps: the check builds it as NoEpsArg(dim), so its own eps is used."""

    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).type_as(x) * self.weight


def test_rmsnorm_uses_the_eps_it_was_built_with():
    r = checks.check_rmsnorm(FixedEps, verbose=False)
    assert_caught(r, "eps_ignored", "self.eps = eps")
    assert "eps 0.5" in r.failed_case
    assert_caught(checks.check_rmsnorm(NoEpsArg, verbose=False), "eps_ignored", "1e-6")


def test_rmsnorm_cases_vary_eps():
    eps = {c.data["eps"] for c in checks._rms_cases()}
    assert len(eps) >= 4 and 0.5 in eps


def test_rope_complex128_table_is_accepted_with_a_note(capsys):
    def precompute128(head_dim, end, theta=10000.0):
        freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        angles = torch.outer(torch.arange(end, dtype=torch.float64), freqs)
        return torch.polar(torch.ones_like(angles), angles)  # complex128

    r = checks.check_rope(_meta_style_apply(), precompute128)
    assert r.passed and "complex128" in r.note and "accepted" in r.note
    assert checks.check_rope(precompute_freqs_cis=precompute128, verbose=False).note
    out = capsys.readouterr().out
    assert out.startswith("✓ check_rope") and "note: your table is complex128" in out
    # wider *and* wrong is still wrong
    wrong = lambda hd, end, theta=10000.0: precompute128(hd, end, 10000.0)
    assert_caught(checks.check_rope(precompute_freqs_cis=wrong, verbose=False), "theta_ignored", "theta")


def _broken_attention(error):
    """Attention whose forward raises a shape error unrelated to the KV heads, or one that is."""
    Base = make_attention()

    class Broken(Base):
        def forward(self, x, freqs_cis):
            if error == "hidden":  # a (B, T, dim) + (dim + 1) mismatch: nothing to do with heads
                return x + torch.zeros(x.shape[-1] + 1)
            return self._forward(x, freqs_cis)

    return Broken


def test_repeat_kv_hint_only_with_evidence():
    r = checks.check_attention(_broken_attention("hidden"), verbose=False)
    assert not r.passed and r.mistake == "exception"
    assert "repeat_kv" not in r.hint  # the error is in the hidden size, not the heads
    r = checks.check_attention(make_attention("no_repeat"), verbose=False)
    assert "repeat_kv" in r.hint and "n_rep=2" in r.hint  # sizes 4 against 2 in the heads


def test_heads_evidence_parser():
    assert checks._heads_evidence(
        "The size of tensor a (4) must match the size of tensor b (2) at non-singleton dimension 1", 4, 2, 2
    )
    assert not checks._heads_evidence(
        "The size of tensor a (32) must match the size of tensor b (33) at non-singleton dimension 2", 4, 2, 2
    )
    assert checks._heads_evidence("shape '[2, 7, 4, 8]' is invalid for input of size 224", 4, 2, 2)
    assert not checks._heads_evidence("shape '[2, 7, 4, 8]' is invalid for input of size 440", 4, 2, 2)


def test_exception_hint_points_at_the_learners_line():
    """The error is raised inside the package's rope.py, called from the learner's code: the hint names the
    learner's line (this file), not rope.py or torch."""

    def apply(xq, xk, freqs_cis):
        return rope.apply_rotary_emb(xq, xk, freqs_cis[:-1])  # LEARNER-LINE: one row short

    r = checks.check_rope(apply, verbose=False)
    assert not r.passed and r.mistake == "exception"
    assert "test_checks.py" in r.hint and "LEARNER-LINE" in r.hint, r.hint
    assert "rope.py" not in r.hint and "/torch/" not in r.hint


def make_block_with(kind):
    Base = make_block()

    class B(Base):
        def forward(self, x, freqs_cis):
            a = self.attention(self.attention_norm(x), freqs_cis)
            if kind == "attn_residual_missing":
                h = a
                return h + self.feed_forward(self.ffn_norm(h))
            if kind == "ffn_residual_missing":
                return self.feed_forward(self.ffn_norm(x + a))
            if kind == "odd_ffn":  # a feed-forward that is not Llama's: no known variant matches
                h = x + a
                return h + 2.0 * self.feed_forward(self.ffn_norm(h))
            if kind == "odd_attention_inside":
                h = x + 0.5 * a
                return h + self.feed_forward(self.ffn_norm(h))
            raise ValueError(kind)

    return B


def test_block_names_the_missing_residual():
    assert_caught(
        checks.check_block(make_block_with("attn_residual_missing"), verbose=False),
        "attn_residual_missing",
        "residual of the attention branch is missing",
    )
    assert_caught(
        checks.check_block(make_block_with("ffn_residual_missing"), verbose=False),
        "ffn_residual_missing",
        "residual of the feed-forward branch is missing",
    )


def test_block_substep_when_no_variant_matches():
    # every sub-layer is the package's; only the combination is off -> the hint says so
    r = checks.check_block(make_block_with("odd_attention_inside"), verbose=False)
    assert not r.passed and r.mistake == "substep_combine" and "combines them" in r.hint, r.hint

    class OddFFN(ffn.FeedForward):
        def forward(self, x):
            return super().forward(x) * 1.1

    Base = make_block()

    class WithOddFFN(Base):
        def __init__(self, layer_id, args):
            super().__init__(layer_id, args)
            self.feed_forward = OddFFN(args.dim, args.hidden_dim)

    r = checks.check_block(WithOddFFN, verbose=False)
    assert not r.passed and r.mistake == "substep_feed_forward" and "feed-forward sub-layer" in r.hint, r.hint


# --- the greedy loop ---------------------------------------------------------------------------------
def _greedy(kind=None):
    def fn(model, ids, n, eos):
        ids, new = list(ids), []
        for _ in range(n):
            if len(ids) >= model.args.max_seq_len:
                break
            t = int(model(torch.tensor([ids]))[0, 0 if kind == "first" else -1].argmax())
            if t == eos and kind != "eos_included":
                break
            ids.append(t)
            new.append(t)
            if t == eos:
                break
        return ids if kind == "prompt" else new

    return fn


def test_greedy_passes_and_names_mistakes():
    from llama2_lab.course import view as course_view

    assert checks.check_greedy(course_view.greedy_uncached, verbose=False).passed
    assert checks.check_greedy(_greedy(), verbose=False).passed
    assert_caught(checks.check_greedy(_greedy("first"), verbose=False), "first_position", "logits[0, -1]")
    assert_caught(checks.check_greedy(_greedy("prompt"), verbose=False), "prompt_included", "only the new ids")
    assert_caught(checks.check_greedy(_greedy("eos_included"), verbose=False), "eos_included", "before")
    r = checks.check_greedy(_todo, verbose=False)
    assert r.not_written and r.what == "greedy loop"
