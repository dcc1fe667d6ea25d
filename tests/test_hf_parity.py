"""Parity with Hugging Face: LlamaForCausalLM on the same weights gives the same logits.

The weights go through the project's own Meta -> HF conversion (checkpoint.save_hf, which permutes the
q/k rows for rotate-half RoPE). wq/wk get std 0.5 so attention is sharp: with small random weights
attention is nearly uniform and a RoPE layout mistake would pass unnoticed.
"""

import pytest
import torch

from llama2_lab.core.config import ModelArgs
from llama2_lab.core.transformer import Transformer
from llama2_lab.formats import save_hf

transformers = pytest.importorskip("transformers")


def sharp_model(n_kv_heads, seed=0):
    args = ModelArgs(
        dim=64, n_layers=2, n_heads=8, n_kv_heads=n_kv_heads, vocab_size=300, multiple_of=16, max_seq_len=128
    )
    m = Transformer(args).init_weights(std=0.1, seed=seed).eval()
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for layer in m.layers:
            for w in (layer.attention.wq.weight, layer.attention.wk.weight):
                w.copy_(torch.randn(w.shape, generator=gen) * 0.5)
            for norm in (layer.attention_norm, layer.ffn_norm):
                norm.weight.copy_(1 + 0.2 * torch.randn(norm.weight.shape, generator=gen))
    return m


@pytest.mark.parametrize("n_kv_heads", [8, 2, 1], ids=["MHA", "GQA", "MQA"])
def test_logits_match_hugging_face(tmp_path, n_kv_heads):
    ours = sharp_model(n_kv_heads)
    save_hf(ours, tmp_path)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path, torch_dtype=torch.float32).eval()
    tokens = torch.randint(0, 300, (2, 100), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = hf(tokens).logits
        got = ours(tokens)
        _, rec = ours.run_with_cache(tokens)
    assert rec["layers.1.attention.pattern"].max(-1).values.mean() > 0.5, "attention should be sharp"
    diff = (got - expected).abs().max().item()
    print(f"max |logit difference| vs HF ({n_kv_heads} KV heads): {diff:.2e}")
    assert diff < 1e-4


def test_a_rope_layout_mistake_would_be_caught(tmp_path):
    """Control: skipping the q/k permutation makes the logits differ by far more than the tolerance."""
    ours = sharp_model(2)
    save_hf(ours, tmp_path)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        for i, layer in enumerate(ours.layers):  # load Meta-layout q/k into HF without permuting
            hf.model.layers[i].self_attn.q_proj.weight.copy_(layer.attention.wq.weight)
            hf.model.layers[i].self_attn.k_proj.weight.copy_(layer.attention.wk.weight)
        tokens = torch.randint(0, 300, (1, 60), generator=torch.Generator().manual_seed(3))
        assert (ours(tokens) - hf(tokens).logits).abs().max() > 1e-2
