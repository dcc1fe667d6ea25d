"""The benchmark harness (llama2_lab.inference.bench) on tiny shapes: it measures, compares like with like, writes JSON."""

import json

import pytest
import torch

from llama2_lab.core.config import ModelArgs
from llama2_lab.core.transformer import Transformer
from llama2_lab.inference import bench

transformers = pytest.importorskip("transformers", reason="the HF comparison needs transformers (a dev dependency)")


@pytest.fixture
def small_copy(monkeypatch):
    """bench.run measures bandwidth with 256 MB on a CPU; 8 MB is plenty for a test."""
    real = bench.copy_bandwidth
    monkeypatch.setattr(bench, "copy_bandwidth", lambda device: real(device, nbytes=8 << 20, repeats=2))


def _model(seed=0, **kw):
    args = ModelArgs(
        **{**dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=96, multiple_of=16, max_seq_len=64), **kw}
    )
    return Transformer(args).init_weights(std=0.3, seed=seed).eval()


@pytest.mark.parametrize("n_kv_heads", [None, 2, 1])  # MHA, GQA, MQA: wk is permuted with n_kv_heads
def test_hf_twin_gives_our_logits(n_kv_heads):
    model = _model(n_kv_heads=n_kv_heads)
    twin = bench.hf_twin(model)
    tokens = torch.randint(0, 96, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(tokens)
        theirs = twin(tokens).logits.float()
    assert ours.shape == theirs.shape == (2, 11, 96)
    assert (ours - theirs).abs().max().item() < 1e-4


def test_hf_twin_greedy_tokens_match_ours():
    model = _model(seed=3)
    prompt = torch.tensor([[1, 7, 9, 30, 4]])
    with torch.inference_mode():
        hf = (
            bench.hf_twin(model)
            .generate(prompt, max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)[
                0, 5:
            ]
            .tolist()
        )
        cache, ids = model.new_cache(1, 17), []
        tok = model(prompt, 0, cache)[:, -1].argmax(-1, keepdim=True)
        for pos in range(5, 17):
            ids.append(int(tok))
            if pos < 16:
                tok = model(tok, pos, cache)[:, -1].argmax(-1, keepdim=True)
    assert ids == hf


def test_weight_bytes_per_token_counts_every_weight_but_the_embedding_table():
    model = _model()
    a = model.args
    per_layer = (
        2 * a.dim * a.dim
        + 2 * a.dim * a.kv_heads * a.head_dim  # wq, wo, wk, wv
        + 3 * a.dim * a.hidden_dim
        + 2 * a.dim
    )  # w1, w2, w3, two norms
    expected = 4 * (a.n_layers * per_layer + a.dim + a.vocab_size * a.dim + a.dim)  # + norm, output, one row
    assert bench.weight_bytes_per_token(model) == expected
    assert bench.weight_bytes_per_token(model.to(torch.bfloat16)) == expected // 2


def test_copy_bandwidth_is_positive_and_plausible():
    bw = bench.copy_bandwidth(torch.device("cpu"), nbytes=8 << 20, repeats=3)
    assert 1e8 < bw < 1e13  # between 0.1 GB/s and 10 TB/s


def test_run_tiny_shape_writes_json_with_every_engine(tmp_path, small_copy):
    out = tmp_path / "bench.json"
    result = bench.run(
        device="cpu",
        shape="tiny",
        prompt_len=8,
        new_tokens=6,
        batches=(1, 2),
        compile=False,
        hf=True,
        repeats=1,
        out=str(out),
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    engines = {(r["engine"], r["batch"]) for r in result["rows"]}
    assert engines == {
        (e, b) for b in (1, 2) for e in ("project eager", "HF generate (default cache)", "HF generate (static cache)")
    }
    for r in result["rows"]:
        assert "error" not in r, r
        for key in ("ttft_s", "prefill_tok_s", "decode_tok_s", "vs_hf_best", "decode_tok_s_cpu_time"):
            assert r[key] > 0, (key, r)
        assert (r["of_bound"] is not None) == (r["batch"] == 1)
    best = max(r["decode_tok_s"] for r in result["rows"] if r["batch"] == 1 and r["engine"].startswith("HF"))
    eager = next(r for r in result["rows"] if r["batch"] == 1 and r["engine"] == "project eager")
    assert eager["vs_hf_best"] == pytest.approx(eager["decode_tok_s"] / best)
    assert result["bound_tok_s"] == pytest.approx(
        result["copy_bandwidth_GBps"] * 1e9 / result["weight_bytes_per_token"]
    )
    table = bench.format_result(result)
    assert "project eager" in table and "bound" in table


def test_plot_breakdown_draws_both_panels(small_copy):
    result = bench.run(
        device="cpu", shape="tiny", prompt_len=4, new_tokens=3, batches=(1,), compile=False, hf=False, repeats=1
    )
    fig = bench.plot_breakdown(result)
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="no successful rows"):
        bench.plot_breakdown({**result, "rows": [{"engine": "x", "batch": 1, "error": "boom"}]})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_run_on_cuda_in_bf16(tmp_path, small_copy):
    model = _model().cuda().to(torch.bfloat16)
    tokens = torch.randint(0, 96, (1, 9), device="cuda")
    with torch.no_grad():
        assert (model(tokens) - bench.hf_twin(model)(tokens).logits.float()).abs().max().item() < 0.1  # bf16 rounding
    result = bench.run(
        device="cuda",
        shape="tiny",
        prompt_len=8,
        new_tokens=6,
        batches=(1, 2),
        compile=False,
        hf=True,
        repeats=1,
        out=str(tmp_path / "bench.json"),
    )
    assert result["dtype"] == "bfloat16" and result["bound_tok_s"] > 0
    for r in result["rows"]:
        assert "error" not in r, r
        assert r["decode_tok_s"] > 0 and r["peak_memory_bytes"] >= r["peak_extra_bytes"] > 0


def _load_memory_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "load_memory.py"
    spec = importlib.util.spec_from_file_location("load_memory", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("fmt", ["project", "hf"])
def test_hand_written_safetensors_loads_with_every_tensor(tmp_path, fmt):
    from safetensors import safe_open

    from llama2_lab import formats as checkpoint

    lm = _load_memory_module()
    args = ModelArgs.from_name("tiny")
    nbytes = lm.write_checkpoint(tmp_path, args, fmt)
    assert nbytes == 2 * Transformer(args).num_params()
    assert checkpoint.detect_format(tmp_path) == fmt
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:  # the library reads our bytes
        t = f.get_tensor(lm.tensor_table(args, fmt)[-1][0])
    assert t.dtype == torch.bfloat16 and torch.isfinite(t).all() and t.abs().max() < 1
    model = checkpoint.load_model(tmp_path, dtype=torch.bfloat16)
    assert model.num_params() == Transformer(args).num_params()


def test_load_memory_measures_and_cleans_up(tmp_path):
    lm = _load_memory_module()
    out = tmp_path / "lm.json"
    assert lm.main(["--shape", "tiny", "--dir", str(tmp_path / "work"), "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["weight_bytes"] == 2 * r["params"] and r["peak_rss"] >= r["rss_before_load"] > 0
    assert r["ratio_peak_to_weights"] == pytest.approx(r["peak_rss"] / r["weight_bytes"])
    assert list((tmp_path / "work").iterdir()) == []  # the temporary checkpoint is gone
