"""The attention explorer and the sampling playground, driven through their Python API."""

import math
import statistics
import time

import numpy as np
import pytest
import torch

from llama2_lab.core.config import ModelArgs
from llama2_lab.core.transformer import Transformer
from llama2_lab.course.explorer import (
    AttentionExplorer,
    ExplorerError,
    SamplingPlayground,
    attention_heatmap,
    bin_attention,
    distributions_chart,
    figure_png,
    head_label,
    heads_grid,
    kv_groups,
    network_view,
    token_row_html,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_MAGIC
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def causal_patterns(n_layers, n_heads, S, seed=0):
    """Random lower-triangular attention (rows sum to 1) in run_with_cache's naming and shape."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n_layers, 1, n_heads, S, S, generator=g) * 3
    mask = torch.ones(S, S, dtype=torch.bool).tril()
    probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    return {f"layers.{i}.attention.pattern": probs[i] for i in range(n_layers)}


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    args = ModelArgs.from_name("tiny", max_seq_len=64)
    return Transformer(args).init_weights(seed=0).eval()


@pytest.fixture(scope="module")
def long_patterns():
    return causal_patterns(2, 4, 1200, seed=1)


# --- binning -----------------------------------------------------------------------------------
def test_bin_attention_is_max_pool():
    a = np.arange(36, dtype=np.float32).reshape(6, 6)
    got = bin_attention(a, 2)
    want = np.array([[7, 9, 11], [19, 21, 23], [31, 33, 35]], dtype=np.float32)
    np.testing.assert_array_equal(got, want)


def test_bin_attention_partial_last_bin_and_leading_axes():
    rng = np.random.default_rng(0)
    a = rng.random((3, 7, 7)).astype(np.float32)
    got = bin_attention(a, 3)
    assert got.shape == (3, 3, 3)
    for h in range(3):
        for i in range(3):
            for j in range(3):
                block = a[h, 3 * i : 3 * i + 3, 3 * j : 3 * j + 3]  # the last block is 1 wide
                assert got[h, i, j] == block.max()
    # a single strong link survives binning, which averaging would wash out
    b = np.zeros((1000, 1000), dtype=np.float32)
    b[517, 3] = 0.9
    pooled = bin_attention(torch.from_numpy(b), 4)
    assert pooled.shape == (250, 250) and pooled[129, 0] == pytest.approx(0.9) and pooled.sum() == pytest.approx(0.9)


def test_bin_attention_rejects_bad_input():
    with pytest.raises(ExplorerError, match="positive integer"):
        bin_attention(np.zeros((4, 4)), 0)
    with pytest.raises(ExplorerError, match=r"\(\.\.\., S, S\)"):
        bin_attention(np.zeros(4), 2)


# --- labels and row html ---------------------------------------------------------------------
def test_gqa_labels_and_groups():
    assert kv_groups(6, 2) == [[0, 1, 2], [3, 4, 5]]
    assert head_label(5, 6, 2) == "h5 (kv 1)"
    assert head_label(5, 32, 8) == "h5 (kv 1)" and head_label(31, 32, 8) == "h31 (kv 7)"
    assert head_label(3, 4, 4) == "h3 (kv 3)"  # MHA: every head its own KV head
    assert head_label(7, 8, 1) == "h7 (kv 0)"  # MQA
    with pytest.raises(ExplorerError, match="multiple of n_kv_heads"):
        kv_groups(6, 4)


def test_explorer_widget_shows_gqa_labels_and_legend():
    ex = AttentionExplorer(causal_patterns(2, 6, 10), [f"t{i}" for i in range(10)], n_kv_heads=2)
    w = ex.widget
    labels = [label for label, _ in ex._w_head.options]
    assert labels == ["h0 (kv 0)", "h1 (kv 0)", "h2 (kv 0)", "h3 (kv 1)", "h4 (kv 1)", "h5 (kv 1)"]
    assert "kv 1</b> ← h3 h4 h5" in ex._w_legend.value and "GQA" in ex._w_legend.value
    assert "l2l-explorer" in w._dom_classes and "l2l-explorer-layer" in ex._w_layer._dom_classes


def test_token_row_html_shades_by_weight():
    html = token_row_html(["▁The", "▁cat", "<b>"], [0.25, 0.75, 0.0], query=1, n_prompt=2)
    spans = html.split("<span")[1:]
    assert len(spans) == 3
    assert "rgba(31,119,180,0.250)" in spans[0] and "rgba(31,119,180,0.750)" in spans[1]
    assert "outline" in spans[1] and "outline" not in spans[0]  # the query token
    assert "&lt;b&gt;" in spans[2] and "<b>" not in spans[2].split(">", 1)[1]  # escaped
    assert "border-bottom" in spans[2] and "border-bottom" not in spans[0]  # generated token
    assert " The" in spans[0]  # SentencePiece's ▁ shown as a space
    assert "↵" in token_row_html(["<0x0A>"], [1.0])  # the newline byte piece, readable
    # a causal row stops at the query: later tokens are drawn as masked
    short = token_row_html(["a", "b", "c"], [1.0])
    assert "masked" in short.split("<span")[3]
    norm = token_row_html(["a", "b"], [0.1, 0.2], normalize=True)
    assert "0.500" in norm and "1.000" in norm
    with pytest.raises(ExplorerError, match="weights for"):
        token_row_html(["a"], [0.5, 0.5])
    with pytest.raises(ExplorerError, match=">= 0"):
        token_row_html(["a", "b"], [-0.5, 1.5])


# --- figures -----------------------------------------------------------------------------------
@pytest.mark.parametrize("S", [12, 1200])
def test_figures_small_and_long(S, long_patterns):
    pats = causal_patterns(2, 4, S) if S < 100 else long_patterns
    toks = [f"▁w{i}" for i in range(S)]
    layer = pats["layers.1.attention.pattern"][0]  # (H, S, S)
    figs = [
        attention_heatmap(layer[0], toks, title="x", n_prompt=S // 2),
        heads_grid(layer, 2, toks, n_prompt=S // 2),
        network_view(pats, tokens=toks, n_prompt=S // 2),
    ]
    for fig in figs:
        png = figure_png(fig)
        w, h = png_size(png)
        assert 300 < w < 1400 and 200 < h < 1400  # the image size does not grow with S
        assert len(png) < 400_000
    heat = figs[0].axes[0].images[0].get_array()
    assert max(heat.shape) <= 256  # binned for long inputs
    if S == 1200:
        assert heat.shape == (240, 240)
        np.testing.assert_allclose(heat, bin_attention(layer[0], 5))
    else:
        np.testing.assert_allclose(heat, layer[0].numpy())
        assert [t.get_text() for t in figs[0].axes[0].get_xticklabels()][:2] == [" w0", " w1"]
    grid_titles = [ax.get_title() for ax in figs[1].axes if ax.get_title()]
    assert grid_titles == ["h0 (kv 0)", "h1 (kv 0)", "h2 (kv 1)", "h3 (kv 1)"]


def test_network_view_is_max_over_layers_and_heads():
    pats = causal_patterns(3, 4, 20, seed=3)
    net = network_view(pats, bin_size=1).axes[0].images[0].get_array()
    stacked = torch.stack([p[0] for p in pats.values()])  # (L, H, S, S)
    np.testing.assert_allclose(net, stacked.amax(dim=(0, 1)).numpy(), rtol=1e-6)
    binned = network_view(pats, bin_size=4).axes[0].images[0].get_array()
    np.testing.assert_allclose(binned, bin_attention(stacked.amax(dim=(0, 1)), 4), rtol=1e-6)
    with pytest.raises(ExplorerError, match="image stays small"):
        network_view(causal_patterns(1, 1, 1100), bin_size=1)


def test_heatmap_checks_its_input():
    with pytest.raises(ExplorerError, match="one \\(S, S\\) pattern"):
        attention_heatmap(np.zeros((2, 3, 3)))
    with pytest.raises(ExplorerError, match="token strings"):
        attention_heatmap(np.zeros((3, 3)), ["a", "b"])


# --- the explorer ------------------------------------------------------------------------------
def test_explorer_accepts_run_with_cache_and_generate_formats(small_model):
    ids = torch.tensor([[1, 5, 9, 33, 7, 100, 3, 8]])
    _, rec = small_model.run_with_cache(ids)  # also holds layers.{i}.output, which is ignored
    toks = [f"t{i}" for i in range(8)]
    a = AttentionExplorer(rec, toks, small_model.args.kv_heads)
    b = AttentionExplorer({i: rec[f"layers.{i}.attention.pattern"][0] for i in range(2)}, toks, 2)
    assert a.layers == b.layers == [0, 1] and a.n_heads == 4
    assert a.current_png() == b.current_png()
    from llama2_lab.inference import generate

    gen = generate(small_model, [1, 5, 9], 6, temperature=0, record_attention=True)
    S = 3 + len(gen)
    g = AttentionExplorer(gen.attention, [f"t{i}" for i in range(S)], 2, n_prompt=3)
    assert g.S == S
    for p in g.patterns.values():  # rows of a causal attention sum to 1
        np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-4)
        assert np.all(np.triu(p, 1) == 0)
    with pytest.raises(ExplorerError, match="token strings"):
        AttentionExplorer(rec, toks[:5], 2)
    with pytest.raises(ExplorerError, match="batch 2"):
        AttentionExplorer({0: torch.zeros(2, 4, 8, 8)}, toks, 2)
    with pytest.raises(ExplorerError, match="no attention patterns"):
        AttentionExplorer({"layers.0.output": torch.zeros(1, 8, 64)}, toks)


def test_explorer_set_changes_png_and_exports(tmp_path):
    ex = AttentionExplorer(causal_patterns(3, 4, 30), [f"t{i}" for i in range(30)], n_kv_heads=2, n_prompt=20)
    seen = {ex.current_png()}
    for kw in [dict(head=1), dict(layer=2), dict(token=5), dict(view="heads"), dict(layer=1), dict(view="network")]:
        ex.set(**kw)
        png = ex.current_png()
        assert png[:8] == PNG_MAGIC
        assert png not in seen, f"set({kw}) did not change the image"
        seen.add(png)
    assert ex.state == {"layer": 1, "head": 1, "view": "network", "token": 5}
    # the same state gives the same picture
    ex.set(view="head", layer=0, head=0)
    first = ex.current_png()
    ex.set(head=3)
    ex.set(head=0)
    assert ex.current_png() == first
    out = ex.save_png(tmp_path / "sub" / "view.png")
    assert out.read_bytes()[:8] == PNG_MAGIC and out.read_bytes() == first
    # the Save button writes the file named in the path box
    _ = ex.widget  # build the widgets
    ex._w_path.value = str(tmp_path / "button.png")
    ex._w_save.click()
    assert (tmp_path / "button.png").read_bytes() == first and "saved" in ex._w_status.value
    for bad, msg in [
        (dict(layer=7), "not recorded"),
        (dict(head=4), "head must be"),
        (dict(view="3d"), "view must be"),
        (dict(token=30), "token must be"),
    ]:
        with pytest.raises(ExplorerError, match=msg):
            ex.set(**bad)


def test_explorer_widgets_drive_the_view():
    ex = AttentionExplorer(causal_patterns(2, 4, 16), [f"t{i}" for i in range(16)], n_kv_heads=2, n_prompt=10)
    _ = ex.widget  # build the widgets
    before = ex._w_image.value
    ex._w_head.value = 2  # what a click in the browser does
    assert ex.state["head"] == 2 and ex._w_image.value != before
    ex._w_token.value = 12
    assert "outline" in ex._w_row.value.split("<span")[13] and "generated" in ex._w_token_label.value
    assert "layer 0, h2 (kv 1)" in ex._w_row_title.value
    ex.set(view="network")
    assert ex._w_view.value == "network" and ex._w_head.disabled and ex._w_layer.disabled
    assert "max over all layers and heads" in ex._w_row_title.value  # the row follows the view
    net_row = np.max([p[:, 12, :13].max(0) for p in ex.patterns.values()], axis=0)
    assert ex.row_html() == token_row_html(ex.tokens, net_row, query=12, n_prompt=10)


def test_explorer_static_fallback_png():
    ex = AttentionExplorer(causal_patterns(1, 2, 6), list("abcdef"))
    bundle = ex._repr_mimebundle_()
    import base64

    assert base64.b64decode(bundle["image/png"]) == ex.current_png()
    assert "AttentionExplorer" in bundle["text/plain"]


def test_long_input_redraw_time_and_image_size(long_patterns):
    toks = [f"w{i}" for i in range(1200)]
    ex = AttentionExplorer(long_patterns, toks, n_kv_heads=2, n_prompt=1000)
    assert max(png_size(ex.current_png())) < 1000
    times = []
    for h in (1, 2, 3):  # every redraw shows a new head: nothing cached
        t0 = time.perf_counter()
        ex.set(head=h)
        times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 2.0, times
    for view in ("heads", "network"):
        t0 = time.perf_counter()
        ex.set(view=view)
        assert time.perf_counter() - t0 < 6.0  # a fresh figure, drawn once and then cached
        assert len(ex.current_png()) < 400_000


# --- the sampling playground -------------------------------------------------------------------
@pytest.fixture(scope="module")
def tok_and_model():
    from llama2_lab.text.tokenizer import train_tokenizer

    rng = np.random.default_rng(0)
    words = "once upon a time there was a little cat who liked to play in the sun with her friend".split()
    texts = [" ".join(rng.choice(words, 10)) + "." for _ in range(300)]
    tok = train_tokenizer(texts, 300)
    args = ModelArgs.from_name("tiny", vocab_size=len(tok), max_seq_len=48)
    return tok, Transformer(args).init_weights(std=0.2, seed=0).eval()


def test_playground_filters_change_the_chart(tok_and_model):
    tok, model = tok_and_model
    pg = SamplingPlayground(model, tok, "Once upon a time", temperature=1.0, top_k=None, top_p=None)
    png0 = pg.current_png()
    calls = pg.model_calls
    assert calls == 1
    d = pg.distributions
    torch.testing.assert_close(d["raw"], d["top_p"])  # T = 1, no filters: nothing changes
    pg.set(top_k=5)
    assert int((pg.distributions["top_k"] > 0).sum()) == 5
    png1 = pg.current_png()
    pg.set(top_p=0.3)
    png2 = pg.current_png()
    pg.set(temperature=0.3)
    png3 = pg.current_png()
    assert len({png0, png1, png2, png3}) == 4
    assert pg.model_calls == calls  # slider moves re-filter the cached logits
    bars = [p.get_width() for p in pg.figure.axes[2].patches]
    assert sum(b > 0 for b in bars) == 5  # the top-k panel keeps five bars
    for key, p in pg.distributions.items():
        assert float(p.sum()) == pytest.approx(1.0, abs=1e-5), key
    with pytest.raises(ValueError, match="top_p"):
        pg.set(top_p=1.5)


def test_playground_sample_is_seeded_and_appends(tok_and_model):
    tok, model = tok_and_model
    a = SamplingPlayground(model, tok, "the cat", seed=3)
    b = SamplingPlayground(model, tok, "the cat", seed=3)
    n0 = len(a.ids)
    pieces = [a.sample() for _ in range(4)]
    assert len(a.ids) == n0 + 4 and a.text == tok.decode(a.ids)
    assert a.text.startswith("the cat") and "".join(pieces) == a.text[len("the cat") :]
    b.sample(4)
    assert a.ids == b.ids
    assert a.model_calls == 4  # one forward per sampled token (the chart is drawn lazily)
    a.current_png()
    assert a.model_calls == 5
    a.set(temperature=0)
    greedy = int(a.logits().argmax())
    a.sample()
    assert a.ids[-1] == greedy
    a.reset()
    assert len(a.ids) == n0
    _ = a.widget  # build the widgets
    a._w_sample.click()
    assert len(a.ids) == n0 + 1 and "color:#c2410c" in a._w_text.value
    before = a._w_chart.value
    a._w_temp.value = 1.7  # a slider move from the browser
    assert a.temperature == pytest.approx(1.7) and a._w_chart.value != before
    a.set(prompt="once")
    assert a.ids == tok.encode("once", bos=True) and a._w_prompt.value == "once"
    with pytest.raises(ExplorerError, match="max_seq_len"):
        a.sample(100)


def test_distributions_chart_marks_removed_tokens():
    from llama2_lab.inference import filtered_distributions

    logits = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0])
    d = filtered_distributions(logits, 1.0, top_k=2, top_p=None)
    fig = distributions_chart(d, list("abcde"), top_n=5, temperature=1.0, top_k=2)
    texts = [t.get_text() for t in fig.axes[2].texts]
    assert texts.count("✕") == 3
    assert math.isclose(sum(p.get_width() for p in fig.axes[2].patches), 1.0, rel_tol=1e-5)
    with pytest.raises(ExplorerError, match="labels"):
        distributions_chart(d, list("abc"))


@pytest.mark.parametrize("n_heads, n_kv, grid", [(32, 32, (6, 6)), (64, 8, (8, 8)), (8, 1, (1, 8)), (6, 2, (2, 3))])
def test_heads_grid_layout_follows_kv_groups(n_heads, n_kv, grid):
    """Llama 2 7B (MHA), 70B (GQA, 8 KV heads), an MQA model and the shipped GQA shape."""
    pats = causal_patterns(1, n_heads, 6)["layers.0.attention.pattern"]
    fig = heads_grid(pats, n_kv)
    shown = [ax for ax in fig.axes if ax.get_title()]
    assert len(shown) == n_heads
    rows, cols = grid
    assert fig.axes[0].get_subplotspec().get_gridspec().get_geometry() == (rows, cols)
    colours = {ax.get_title(): ax.spines["left"].get_edgecolor() for ax in shown}
    n_rep = n_heads // n_kv
    assert colours[head_label(0, n_heads, n_kv)] == colours[head_label(n_rep - 1, n_heads, n_kv)]
    if n_kv > 1:
        assert colours[head_label(0, n_heads, n_kv)] != colours[head_label(n_rep, n_heads, n_kv)]


def test_explorer_row_keeps_the_query_in_view_on_a_long_text():
    from llama2_lab.course import explorer

    S = 600
    ex = AttentionExplorer(causal_patterns(1, 2, S), [f"t{i}" for i in range(S)], n_prompt=500)
    ex.set(token=550)
    row = ex.row_html()
    lo = 550 - explorer.ROW_BEFORE
    assert f"… {lo} earlier tokens …" in row  # the window starts late and says so
    spans = row.split("<span title=")[1:]
    assert len(spans) == explorer.ROW_BEFORE + explorer.ROW_AFTER + 1  # ... and ends a little after the query
    assert "outline" in spans[explorer.ROW_BEFORE] and "#550 " in spans[explorer.ROW_BEFORE]
    ex.set(token=5)
    assert "earlier tokens" not in ex.row_html()  # near the start, the row starts at token 0
