"""The fast path (static cache, fixed-shape step, torch.compile) gives the same greedy tokens as eager."""

import pytest
import torch

from llama2_lab.core.config import ModelArgs
from llama2_lab.core.transformer import Transformer
from llama2_lab.inference import generate
from llama2_lab.inference.fast import CompiledDecoder


def test_compiled_greedy_equals_eager():
    args = ModelArgs(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=64, multiple_of=16, max_seq_len=128)
    model = Transformer(args).init_weights(std=0.3, seed=0).eval()
    prompt = [1, 5, 9, 13, 17]
    eager = generate(model, prompt, 20, temperature=0)
    fast = generate(model, prompt, 20, temperature=0, compile=True)
    assert list(fast) == list(eager) and len(eager) == 20
    # a second request of another length reuses the compiled step (same rounded cache) and still agrees
    assert list(generate(model, prompt[:3], 12, temperature=0, compile=True)) == list(
        generate(model, prompt[:3], 12, temperature=0)
    )
    with pytest.raises(ValueError, match="record_attention needs the eager path"):
        generate(model, prompt, 2, compile=True, record_attention=True)


def test_compiled_decoder_masks_stale_cache_entries():
    args = ModelArgs(dim=32, n_layers=1, n_heads=4, vocab_size=64, multiple_of=16, max_seq_len=64)
    model = Transformer(args).init_weights(std=0.3, seed=1).eval()
    dec = CompiledDecoder.__new__(CompiledDecoder)  # the eager parts of the decoder, without compiling
    dec.model, dec.max_len, dec.cache = model, 64, model.new_cache(1, 64)
    dec._step = dec._decode
    with torch.no_grad():
        dec.prefill(torch.randint(0, 64, (1, 30)))  # fills positions 0..29 with another prompt's keys
        prompt = torch.tensor([[1, 2, 3]])
        logits = dec.prefill(prompt)
        step = dec.decode(logits.argmax(-1, keepdim=True), 3)
        ref = model(torch.cat([prompt, logits.argmax(-1, keepdim=True)], 1))[:, -1]
    assert torch.allclose(step, ref, atol=1e-5)
