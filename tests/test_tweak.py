"""The tweak lab: each variant really differs in the named way; runs are seeded; the cache is exact."""

import json
import math

import pytest
import torch
from torch import nn

from llama2_lab.core.norm import LayerNorm, RMSNorm
from llama2_lab.core.transformer import Transformer, TransformerBlock
from llama2_lab.experiments import tweak as tw

LAB = tw.Lab.preset("test")
V = 2048


def build(**changes):
    return tw.build_model(tw.Variant(**changes), LAB, V, seed=0)


def names(model):
    return {n for n, _ in model.named_parameters()}


def test_reference_is_the_package_model_with_its_parameter_names():
    model = build()
    plain = Transformer(tw.model_args(tw.Variant(), LAB, V))
    assert isinstance(model, Transformer)
    assert names(model) == names(plain)
    assert tw.count_params(model) == plain.num_params()
    assert all(type(layer) is TransformerBlock for layer in model.layers)


@pytest.mark.parametrize("norm, cls", [("layernorm", LayerNorm), ("none", nn.Identity)])
def test_norm_variants_swap_every_norm(norm, cls):
    model = build(norm=norm)
    norms = [model.norm] + [m for layer in model.layers for m in (layer.attention_norm, layer.ffn_norm)]
    assert all(type(m) is cls for m in norms)
    assert not any(isinstance(m, RMSNorm) for m in model.modules())
    n_norms = 2 * LAB.n_layers + 1
    ref = tw.count_params(build())
    if norm == "layernorm":  # a bias beside every gain
        assert tw.count_params(model) == ref + n_norms * LAB.dim
        assert "layers.0.attention_norm.bias" in names(model)
    else:
        assert tw.count_params(model) == ref - n_norms * LAB.dim
        assert not any("norm" in n for n in names(model))


def test_post_norm_normalises_after_the_residual_sum():
    model = build(norm_place="post").eval()
    block = model.layers[0]
    assert isinstance(block, tw.PostNormBlock) and isinstance(model.norm, nn.Identity)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.5)
        x = torch.randn(2, 5, LAB.dim) * 3
        f = model.freqs_cis[:5]
        h = block.attention_norm(x + block.attention(x, f))
        post = h + block.feed_forward(h)
        assert torch.allclose(block(x, f), block.ffn_norm(post), atol=1e-5)
        # the output is normalised (RMS 1 with unit gains) and differs from the pre-norm order
        block.ffn_norm.weight.fill_(1.0)
        assert torch.allclose(block(x, f).pow(2).mean(-1).sqrt(), torch.ones(2, 5), atol=1e-3)
        assert not torch.allclose(block(x, f), TransformerBlock.forward(block, x, f), atol=1e-3)


def test_learned_positions_have_a_table_of_the_training_length_only():
    model = build(positions="learned")
    assert model.tok_embeddings.positions.shape == (LAB.seq_len, LAB.dim)
    assert not model.tok_embeddings.positions.any()  # starts at zero: the model starts as the no-position one
    assert tw.count_params(model) == tw.count_params(build()) + LAB.seq_len * LAB.dim
    assert model.args.max_seq_len == LAB.seq_len
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.ones(1, LAB.seq_len + 1, dtype=torch.long))
    with pytest.raises(tw.TweakError, match="learned absolute positions"):
        model.new_cache(1)


def test_no_positions_means_no_table_and_identity_rotations():
    model = build(positions="none")
    assert not any("position" in n for n in names(model))
    assert torch.equal(model.freqs_cis[..., 0], torch.ones_like(model.freqs_cis[..., 0]))
    assert torch.equal(model.freqs_cis[..., 1], torch.zeros_like(model.freqs_cis[..., 1]))
    model.to(torch.bfloat16)  # the table is rebuilt on a dtype change: it must stay the identity
    assert torch.equal(model.freqs_cis[..., 1], torch.zeros_like(model.freqs_cis[..., 1]))
    rope = build()
    assert rope.freqs_cis[1:, :, 1].abs().max() > 0.1  # the reference does rotate
    assert rope.args.max_seq_len == LAB.probe_len  # RoPE can be evaluated past the training length


def test_rope_theta_changes_the_table_only():
    a, b = build(), build(rope_theta=100.0)
    assert names(a) == names(b)
    assert not torch.allclose(a.freqs_cis, b.freqs_cis)


@pytest.mark.parametrize("ffn", ["gelu", "relu"])
def test_mlp_variants_have_the_swiglu_parameter_count_within_one_percent(ffn):
    ref, model = build(), build(ffn=ffn)
    ff = model.layers[0].feed_forward
    assert isinstance(ff, tw.MLP) and ff.activation == ffn
    assert "layers.0.feed_forward.w3.weight" not in names(model)
    swiglu_ffn = sum(p.numel() for p in ref.layers[0].feed_forward.parameters())
    mlp_ffn = sum(p.numel() for p in ff.parameters())
    assert abs(mlp_ffn - swiglu_ffn) / swiglu_ffn < 0.01
    assert abs(tw.count_params(model) - tw.count_params(ref)) / tw.count_params(ref) < 0.01
    x = torch.randn(3, LAB.dim)
    act = torch.nn.functional.gelu if ffn == "gelu" else torch.relu
    assert torch.allclose(ff(x), ff.w2(act(ff.w1(x))))
    # the learner-size lab too (dim 64): exactly equal there
    big_ref, big = tw.build_model(tw.Variant(), tw.Lab(), V), tw.build_model(tw.Variant(ffn=ffn), tw.Lab(), V)
    assert abs(tw.count_params(big) - tw.count_params(big_ref)) / tw.count_params(big_ref) < 0.01


@pytest.mark.parametrize("n_kv, kind", [(None, "MHA"), (2, "GQA"), (1, "MQA")])
def test_attention_variants_have_the_named_kv_heads(n_kv, kind):
    model = build(n_kv_heads=n_kv)
    att = model.layers[0].attention
    assert model.args.attention_kind == kind
    assert att.n_heads == 4 and att.n_kv_heads == (n_kv or 4)
    head_dim = LAB.dim // 4
    assert att.wk.weight.shape == ((n_kv or 4) * head_dim, LAB.dim) == att.wv.weight.shape
    assert tw.kv_cache_bytes_per_token(model.args) == 2 * LAB.n_layers * (n_kv or 4) * head_dim * 2


def test_head_count_is_a_variant_and_a_bad_one_says_what_to_do():
    assert build(n_heads=8).layers[0].attention.n_heads == 8
    with pytest.raises(tw.TweakError, match="n_kv_heads"):
        build(n_kv_heads=3)
    with pytest.raises(tw.TweakError, match="choose one of"):
        tw.Variant(ffn="swish")


def test_tied_embeddings_share_one_matrix():
    model, ref = build(tied=True), build()
    assert model.output.weight is model.tok_embeddings.weight
    assert tw.count_params(model) == tw.count_params(ref) - V * LAB.dim
    assert "output.weight" not in names(model)  # named once, as tok_embeddings.weight


def test_variants_combine():
    model = build(norm="layernorm", norm_place="post", positions="learned", ffn="relu", n_kv_heads=1, tied=True)
    assert isinstance(model.layers[1], tw.PostNormBlock) and isinstance(model.layers[1].ffn_norm, LayerNorm)
    assert isinstance(model.norm, nn.Identity)  # post-norm: the last block already ends in a norm
    assert isinstance(model.layers[0].feed_forward, tw.MLP)
    logits = model(torch.ones(2, LAB.seq_len, dtype=torch.long))
    assert logits.shape == (2, LAB.seq_len, V)


# ---------------------------------------------------------------------------------------------
# Training, probes, cache
# ---------------------------------------------------------------------------------------------
def test_a_tiny_run_is_reproducible_and_the_cache_returns_it_without_training(tmp_path):
    steps = []
    a = tw.train_arm(tw.Variant(), LAB, seed=3, cache=tmp_path, callback=steps.append)
    assert len(steps) == LAB.steps and not a.cached
    assert all(math.isfinite(r["train_loss"]) for r in a.history)
    assert a.history[0]["train_loss"] > a.history[-1]["train_loss"]  # it learns something even in 6 steps
    b = tw.train_arm(tw.Variant(), LAB, seed=3, use_cache=False)
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    assert a.val_loss == b.val_loss and a.probes == b.probes
    c = tw.train_arm(tw.Variant(), LAB, seed=4, use_cache=False)
    assert c.history[-1]["train_loss"] != a.history[-1]["train_loss"]  # another seed, another run

    again = []
    hit = tw.train_arm(tw.Variant(), LAB, seed=3, cache=tmp_path, callback=again.append)
    assert hit.cached and again == []  # nothing trained
    assert {**hit.to_dict(), "cached": False} == a.to_dict()
    assert len(list(tmp_path.glob("*.json"))) == 1
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically
    other = tw.train_arm(tw.Variant(ffn="gelu"), LAB, seed=3, cache=tmp_path)
    assert not other.cached and other.key != a.key


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LLAMA2_LAB_CACHE", str(tmp_path))
    assert tw.cache_dir() == tmp_path / "tweak"
    monkeypatch.delenv("LLAMA2_LAB_CACHE")
    assert tw.cache_dir().parts[-3:] == (".cache", "llama2-lab", "tweak")


def test_probes_say_when_learned_positions_cannot_go_past_the_training_length(tmp_path):
    res = tw.run_arms(
        {"rope": tw.Variant(), "learned": tw.Variant(positions="learned")}, LAB, seeds=(0,), cache=tmp_path
    )
    rope, learned = res["rope"][0].probes, res["learned"][0].probes
    assert len(rope["loss_by_position"]) == LAB.probe_len and rope["loss_beyond"] is not None
    assert len(learned["loss_by_position"]) == LAB.seq_len and learned["loss_beyond"] is None
    assert "no row" in learned["beyond_note"]
    for p in (rope, learned):
        assert p["name_copy_logp"] is None or p["name_copy_logp"] < 0
        assert p["repeat_first"] > 0 and p["repeat_second"] > 0
    rows = tw.summarize(res, "loss_beyond")
    assert rows[1]["n"] == 0 and rows[1]["missing"] == 1 and "no row" in rows[1]["note"]
    json.dumps([r.to_dict() for r in res["rope"]])  # JSON-ready


def test_a_learners_model_is_trained_with_the_package_init(tmp_path):
    ref = tw.train_arm(tw.Variant(), LAB, seed=0, use_cache=False)
    mine = tw.train_arm(tw.Variant(), LAB, seed=0, model_fn=Transformer, cache=tmp_path)
    # the package's Transformer given as "your own model" starts from the same weights: the same run
    assert [r["train_loss"] for r in mine.history] == pytest.approx([r["train_loss"] for r in ref.history], abs=1e-5)
    assert tw.train_arm(tw.Variant(), LAB, seed=0, model_fn=Transformer, cache=tmp_path).cached
    with pytest.raises(tw.TweakError, match="args"):
        tw.train_arm(tw.Variant(), LAB, seed=0, model_fn=lambda args: nn.Linear(2, 2), use_cache=False)


def test_a_diverged_run_is_reported_not_raised(tmp_path):
    res = tw.train_arm(tw.Variant(norm="none", lr=1e4), LAB, seed=0, use_cache=False)
    assert res.diverged_at is not None and res.val_loss is None and res.probes == {}
    table = tw.format_table(tw.summarize({"wild": [res]}))
    assert "diverged" in table


def _fake(label, vals):
    return [
        tw.RunResult(
            label=label,
            seed=i,
            variant={},
            history=[],
            val_loss=v,
            diverged_at=None,
            params=1,
            kv_bytes_per_token=1,
            probes={},
            wall_s=0.0,
            key="",
        )
        for i, v in enumerate(vals)
    ]


def test_compare_calls_a_difference_clear_only_beyond_the_seed_spread():
    res = {"a": _fake("a", [3.00, 3.02]), "b": _fake("b", [3.30, 3.31]), "c": _fake("c", [3.01, 3.04])}
    clear = tw.compare(res, "a", "b")
    assert clear["clear"] and clear["diff"] == pytest.approx(0.295) and "beyond" in clear["verdict"]
    close = tw.compare(res, "a", "c")
    assert not close["clear"] and "cannot tell" in close["verdict"]
    assert close["paired"] == pytest.approx([0.01, 0.02]) and "Seed by seed: +0.010, +0.020." in close["verdict"]
    one_seed = {"a": _fake("a", [3.0]), "b": _fake("b", [4.0])}
    assert not tw.compare(one_seed, "a", "b")["clear"]  # one seed shows no spread: never "clear"


def test_live_plot_and_widget_run_headless(tmp_path):
    pytest.importorskip("ipywidgets")
    from llama2_lab.course import tweak_view as tv

    results, fig = tv.run_live(
        {"ref": tw.Variant(), "mqa": tw.Variant(n_kv_heads=1)}, LAB, seeds=(0, 1), panel="kv", cache=tmp_path
    )
    assert len(fig.axes) == 2 and fig.axes[0].collections  # a band over seeds
    assert [len(v) for v in results.values()] == [2, 2]
    w = tv.TweakWidget(
        LAB, choices={"ref": tw.Variant(), "relu": tw.Variant(ffn="relu")}, selected=("ref", "relu"), cache=tmp_path
    )
    w.steps.value = w.steps.min
    w.seeds.value = 2
    w.button.click()
    assert set(w.results) == {"ref", "relu"} and all(len(v) == 2 for v in w.results.values())


@pytest.mark.parametrize("n_kv", [2, 1])
def test_with_params_of_widens_the_ffn_to_the_reference_count(n_kv):
    lab = tw.Lab()
    ref = tw.count_params(tw.build_model(tw.Variant(), lab, V))
    narrow = tw.Variant(n_kv_heads=n_kv)
    wide = tw.with_params_of(narrow, tw.Variant(), lab, V)
    assert wide.ffn_hidden > tw.ffn_width(narrow, tw.model_args(narrow, lab, V))
    assert tw.count_params(tw.build_model(narrow, lab, V)) < ref
    assert abs(tw.count_params(tw.build_model(wide, lab, V)) - ref) / ref < 0.001
