"""checkpoint.py: every format round-trips, HF parity, strict errors, safety, memory, and a real llama2.c model."""

import json
import os
import struct
from pathlib import Path

import pytest
import torch

from llama2_lab import formats as ck
from llama2_lab.core.calc import count_params
from llama2_lab.core.config import ModelArgs
from llama2_lab.core.rope import permute_to_hf
from llama2_lab.core.transformer import Transformer
from llama2_lab.formats import CheckpointError
from llama2_lab.formats import common as ck_common
from llama2_lab.formats import hf as ck_hf
from llama2_lab.formats import llama2c as ck_llama2c
from llama2_lab.formats import loading as ck_loading
from llama2_lab.formats import meta as ck_meta


def make_model(name="tiny", seed=0, **overrides) -> Transformer:
    # std 0.5 makes attention sharp, so a wrong permutation or shard order changes the logits a lot.
    return Transformer(ModelArgs.from_name(name, **overrides)).init_weights(std=0.5, seed=seed).eval()


TOKENS = torch.randint(0, 512, (2, 13), generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def logits(model, tokens=TOKENS):
    return model(tokens)


def assert_same_model(a: Transformer, b: Transformer):
    assert a.args.hidden_dim == b.args.hidden_dim and a.args.kv_heads == b.args.kv_heads
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert torch.equal(logits(a), logits(b))


# --- round trips ----------------------------------------------------------------------------------
def test_project_roundtrip(tmp_path):
    m = make_model()
    ck.save_model(m, tmp_path, tokenizer=b"not-parsed-here")
    assert ck.detect_format(tmp_path) == "project"
    assert json.loads((tmp_path / "params.json").read_text()) == m.args.to_dict()
    assert (tmp_path / "tokenizer.model").read_bytes() == b"not-parsed-here"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "params.json", "tokenizer.model"]
    m2 = ck.load_model(tmp_path)
    assert m2.args == m.args
    assert_same_model(m, m2)
    assert ck.load_model(tmp_path / "params.json").args == m.args  # a file inside the folder works too


@pytest.mark.parametrize("n_shards", [1, 2])
def test_meta_roundtrip(tmp_path, n_shards):
    m = make_model()
    ck.save_meta(m, tmp_path, n_shards=n_shards)
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == [f"consolidated.{i:02d}.pth" for i in range(n_shards)]
    if n_shards == 2:  # really split as model parallelism would: wq by rows, wo by columns
        s0 = torch.load(tmp_path / "consolidated.00.pth", weights_only=True)
        assert s0["layers.0.attention.wq.weight"].shape == (32, 64)
        assert s0["layers.0.attention.wo.weight"].shape == (64, 32)
        assert s0["tok_embeddings.weight"].shape == (512, 32)
        assert s0["norm.weight"].shape == (64,)
    assert ck.detect_format(tmp_path) == "meta"
    assert_same_model(m, ck.load_model(tmp_path))


def test_meta_real_params_json_vocab_minus_one_and_rope_freqs(tmp_path):
    m = make_model("tiny-mha")
    ck.save_meta(m, tmp_path, n_shards=2)
    # Meta's own params.json: no n_kv_heads for MHA, vocab_size -1 (the tokenizer decides).
    a = m.args
    (tmp_path / "params.json").write_text(
        json.dumps(
            {
                "dim": a.dim,
                "multiple_of": a.multiple_of,
                "n_heads": a.n_heads,
                "n_layers": a.n_layers,
                "norm_eps": a.norm_eps,
                "vocab_size": -1,
                "max_seq_len": a.max_seq_len,
            }
        )
    )
    for i in range(2):  # some Meta files carry the RoPE table as rope.freqs
        p = tmp_path / f"consolidated.{i:02d}.pth"
        sd = torch.load(p, weights_only=True)
        sd["rope.freqs"] = torch.zeros(8)
        torch.save(sd, p)
    m2 = ck.load_model(tmp_path)
    assert m2.args.vocab_size == 512
    assert_same_model(m, m2)
    assert "dropped rope.freqs" in ck.info(tmp_path)["notes"]


def test_meta_shards_with_different_norms_are_refused(tmp_path):
    ck.save_meta(make_model(), tmp_path, n_shards=2)
    p = tmp_path / "consolidated.01.pth"
    sd = torch.load(p, weights_only=True)
    sd["norm.weight"] = sd["norm.weight"] + 1
    torch.save(sd, p)
    with pytest.raises(CheckpointError, match="norm.weight.*differs.*identical"):
        ck.load_model(tmp_path)


@pytest.mark.parametrize("max_shard_bytes", [None, 60_000])
def test_hf_roundtrip(tmp_path, max_shard_bytes):
    m = make_model()
    ck.save_hf(m, tmp_path, max_shard_bytes=max_shard_bytes)
    files = sorted(p.name for p in tmp_path.iterdir())
    if max_shard_bytes is None:
        assert files == ["config.json", "model.safetensors"]
    else:
        assert "model.safetensors.index.json" in files and len([f for f in files if f.startswith("model-")]) > 2
        idx = json.loads((tmp_path / "model.safetensors.index.json").read_text())
        assert len(idx["weight_map"]) == len(m.state_dict())
    assert ck.detect_format(tmp_path) == "hf"
    m2 = ck.load_model(tmp_path)
    assert m2.args.hidden_dim == m.args.hidden_dim
    assert_same_model(m, m2)


def test_hf_weights_are_permuted_and_named_as_transformers_expects(tmp_path):
    from safetensors.torch import load_file

    m = make_model()
    ck.save_hf(m, tmp_path)
    hf = load_file(tmp_path / "model.safetensors")
    sd = m.state_dict()
    assert torch.equal(
        hf["model.layers.1.self_attn.q_proj.weight"], permute_to_hf(sd["layers.1.attention.wq.weight"], 4)
    )
    assert torch.equal(
        hf["model.layers.1.self_attn.k_proj.weight"], permute_to_hf(sd["layers.1.attention.wk.weight"], 2)
    )
    assert torch.equal(hf["model.layers.1.self_attn.v_proj.weight"], sd["layers.1.attention.wv.weight"])
    assert torch.equal(hf["model.layers.0.mlp.gate_proj.weight"], sd["layers.0.feed_forward.w1.weight"])
    assert torch.equal(hf["model.layers.0.mlp.up_proj.weight"], sd["layers.0.feed_forward.w3.weight"])
    assert torch.equal(hf["lm_head.weight"], sd["output.weight"])


def test_hf_to_project_to_hf_identical_tensors(tmp_path):
    from safetensors.torch import load_file

    ck.save_hf(make_model("tiny-mqa", seed=3), tmp_path / "hf1")
    ck.save_model(ck.load_model(tmp_path / "hf1"), tmp_path / "proj")
    ck.save_hf(ck.load_model(tmp_path / "proj"), tmp_path / "hf2")
    a, b = load_file(tmp_path / "hf1" / "model.safetensors"), load_file(tmp_path / "hf2" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "hf1" / "config.json").read_text()) == json.loads(
        (tmp_path / "hf2" / "config.json").read_text()
    )


def test_hf_tied_embeddings_and_inv_freq(tmp_path):
    from safetensors.torch import load_file, save_file

    m = make_model()
    ck.save_hf(m, tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    del sd["lm_head.weight"]
    sd["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)  # older HF files store it
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["tie_word_embeddings"] = True
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    m2 = ck.load_model(tmp_path)
    assert torch.equal(m2.output.weight, m.tok_embeddings.weight)
    assert m2.output.weight.data_ptr() != m2.tok_embeddings.weight.data_ptr()  # untied copy, saves cleanly
    notes = ck.info(tmp_path)["notes"]
    assert any("tied" in n for n in notes) and any("inv_freq" in n for n in notes)


def test_hf_pytorch_model_bin(tmp_path):
    from safetensors.torch import load_file

    m = make_model()
    ck.save_hf(m, tmp_path)
    torch.save(load_file(tmp_path / "model.safetensors"), tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    assert_same_model(m, ck.load_model(tmp_path))


@pytest.mark.parametrize("name", ["tiny-mha", "tiny", "tiny-mqa"])
def test_hf_folder_matches_transformers(tmp_path, name):
    transformers = pytest.importorskip("transformers")
    m = make_model(name, seed=7)
    ck.save_hf(m, tmp_path, max_shard_bytes=100_000)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32, local_files_only=True).eval()
    assert hf.config.num_key_value_heads == m.args.kv_heads
    with torch.no_grad():
        ours, theirs = m(TOKENS), hf(TOKENS).logits
    assert ours.abs().max() > 5  # sharp enough that a wrong permutation would show
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_loads_folder_saved_by_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.5)  # sharp attention, and non-trivial norm gains
    hf.save_pretrained(tmp_path, max_shard_size="100KB")  # the library's own config.json and shard naming
    m = ck.load_model(tmp_path)
    assert (m.args.hidden_dim, m.args.kv_heads, m.args.max_seq_len) == (172, 2, 128)
    with torch.no_grad():
        torch.testing.assert_close(m(TOKENS), hf(TOKENS).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("shared", [True, False])
def test_llama2c_roundtrip(tmp_path, version, shared):
    m = make_model("stories260k")  # hidden 172 needs multiple_of 4: the header stores only the width
    if shared:
        with torch.no_grad():
            m.output.weight.copy_(m.tok_embeddings.weight)
    path = tmp_path / "m.bin"
    ck.export_llama2c(m, path, version=version)
    a = m.args
    n = count_params(a)["total"] - (a.vocab_size * a.dim if shared else 0)
    rope = 2 * a.max_seq_len * a.head_dim // 2 if version == 0 else 0
    assert path.stat().st_size == (28 if version == 0 else 256) + 4 * (n + rope)
    header = path.read_bytes()[:40]
    if version == 0:
        assert struct.unpack("<7i", header[:28]) == (64, 172, 5, 8, 4, 512 if shared else -512, 512)
    else:
        assert struct.unpack("<Ii7iB", header[:37]) == (0x616B3432, 1, 64, 172, 5, 8, 4, 512, 512, int(shared))
    m2 = ck.load_model(path)
    assert m2.args.hidden_dim == 172 and m2.args.multiple_of == 4
    assert_same_model(m, m2)


@pytest.mark.parametrize(
    "dim,hidden,want",
    [
        (4096, 11008, (256, None)),
        (5120, 13824, (256, None)),
        (8192, 22016, (256, None)),
        (8192, 28672, (4096, 1.3)),
        (64, 172, (4, None)),
        (288, 768, (256, None)),
    ],
)
def test_ffn_args_for_hidden(dim, hidden, want):
    assert ck.ffn_args_for_hidden(dim, hidden) == want
    for odd in (100, 173, 1000, 29000):  # any width can be described exactly
        m, f = ck.ffn_args_for_hidden(dim if dim < 1000 else 64, odd)
        assert (
            ModelArgs(dim=dim if dim < 1000 else 64, n_heads=4, multiple_of=m, ffn_dim_multiplier=f).hidden_dim == odd
        )


# --- loading options ------------------------------------------------------------------------------
def test_bf16_load_and_dtype_names(tmp_path):
    m = make_model()
    ck.save_model(m, tmp_path)
    m16 = ck.load_model(tmp_path, dtype="bf16")
    assert {p.dtype for p in m16.parameters()} == {torch.bfloat16}
    assert m16.freqs_cis.dtype == torch.float32  # RoPE table stays float32
    assert torch.equal(m16.layers[0].attention.wq.weight, m.layers[0].attention.wq.weight.to(torch.bfloat16))
    assert (logits(m16) - logits(m)).abs().max() < 0.1 * logits(m).abs().max()
    ck.save_model(m16, tmp_path / "bf")
    assert ck.info(tmp_path / "bf")["dtypes"] == ["bfloat16"]
    assert ck.load_model(tmp_path / "bf").tok_embeddings.weight.dtype == torch.bfloat16  # None keeps stored dtype
    with pytest.raises(CheckpointError, match="unknown dtype"):
        ck.load_model(tmp_path, dtype="float8")


def test_load_builds_on_meta_device(tmp_path, monkeypatch):
    ck.save_model(make_model(), tmp_path)
    seen = []

    class Spy(Transformer):
        def __init__(self, args):
            super().__init__(args)
            seen.append(self.output.weight.device.type)

    monkeypatch.setattr(ck_loading, "Transformer", Spy)
    ck.load_model(tmp_path)
    assert seen == ["cpu"]  # small: a plain build is faster than the first meta build
    monkeypatch.setattr(ck_loading, "META_BUILD_MIN_PARAMS", 0)  # what every real Llama 2 size takes
    m = ck.load_model(tmp_path)
    assert seen == ["cpu", "meta"]
    assert_same_model(m, ck.load_model(tmp_path))
    assert all(p.device.type == "cpu" for p in m.parameters()) and m.freqs_cis.device.type == "cpu"
    assert all(p.requires_grad for p in m.parameters())  # still trainable after assign=True


def test_memory_refusal(tmp_path, monkeypatch):
    m = make_model()
    ck.save_model(m, tmp_path)
    need32 = m.num_params() * 4
    from llama2_lab.core.calc import buffer_bytes

    # bf16 weights plus the float32 RoPE table just fit; float32 weights do not.
    monkeypatch.setattr(ck_loading, "available_memory", lambda device: need32 // 2 + buffer_bytes(m.args) + 10)
    with pytest.raises(CheckpointError, match=r"needs about .* but only .* available.*bfloat16"):
        ck.load_model(tmp_path)
    assert ck.load_model(tmp_path, dtype=torch.bfloat16).num_params() == m.num_params()  # half the bytes fit
    assert ck.load_model(tmp_path, check_memory=False).num_params() == m.num_params()


def test_available_memory_is_sane():
    free = ck.available_memory("cpu")
    assert free is None or free > 10 * 2**20


def test_info_reads_headers_only(tmp_path, monkeypatch):
    m = make_model()
    ck.save_meta(m, tmp_path / "meta", n_shards=2)
    ck.save_hf(m, tmp_path / "hf", max_shard_bytes=60_000)
    ck.export_llama2c(m, tmp_path / "m.bin")

    def no_read():
        raise AssertionError("info() read weights")

    class NoRead(ck.LazyTensor):
        def __post_init__(self):
            self.read = no_read

    for module in (ck_common, ck_meta, ck_hf, ck_llama2c):  # every reader that makes lazy tensors
        monkeypatch.setattr(module, "LazyTensor", NoRead)
    for path, fmt, shards in [(tmp_path / "meta", "meta", 2), (tmp_path / "m.bin", "llama2c", 1)]:
        d = ck.info(path)
        assert (d["format"], d["shards"], d["n_params"], d["dtypes"], d["problems"]) == (
            fmt,
            shards,
            m.num_params(),
            ["float32"],
            [],
        )
        assert d["bytes_on_disk"] == sum(p.stat().st_size for p in ([path] if path.is_file() else path.iterdir()))
        assert fmt in ck.format_info(d) and f"{m.num_params():,}" in ck.format_info(d)
    d = ck.info(tmp_path / "hf")
    assert d["format"] == "hf" and d["shards"] > 2 and d["args"].hidden_dim == m.args.hidden_dim


def test_default_model_path():
    try:
        path = ck.default_model_path()
    except ck.CheckpointNotFoundError as e:
        assert "llama2-lab train --preset lab-tiny" in str(e)
    else:
        assert path.name == "llama2-lab-tiny" and ck.detect_format(path) == "project"


# --- strictness and safety ------------------------------------------------------------------------
def test_unknown_and_missing_paths(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CheckpointError, match="(?s)Recognised formats.*project.*meta.*hf.*llama2c"):
        ck.load_model(tmp_path)
    with pytest.raises(CheckpointError, match="(?s)cannot tell.*consolidated"):
        ck.load_model(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ck.load_model(tmp_path / "nope")


def test_truncated_safetensors(tmp_path):
    ck.save_model(make_model(), tmp_path)
    p = tmp_path / "model.safetensors"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="truncated"):
        ck.load_model(tmp_path)
    p.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="too short"):
        ck.load_model(tmp_path)
    p.write_bytes(data[:8] + b"{not json" + data[17:])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ck.load_model(tmp_path)


def test_truncated_llama2c(tmp_path):
    p = tmp_path / "m.bin"
    ck.export_llama2c(make_model(), p)
    data = p.read_bytes()
    p.write_bytes(data[:-4])
    with pytest.raises(CheckpointError, match=r"implies [\d,]+ bytes but the file has .*truncated"):
        ck.load_model(p)
    p.write_bytes(data[:20])
    with pytest.raises(CheckpointError, match="shorter than the 28-byte"):
        ck.load_model(p)


def test_llama2c_wrong_magic_version_and_garbage(tmp_path):
    p = tmp_path / "m.bin"
    ck.export_llama2c(make_model(), p, version=1)
    data = bytearray(p.read_bytes())
    data[4:8] = struct.pack("<i", 2)
    p.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="version 2 is not supported"):
        ck.load_model(p)
    data[0:4] = b"XXXX"  # magic gone: read as a v0 header, which then makes no sense
    p.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not describe a Llama model|implies"):
        ck.load_model(p)
    p.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(CheckpointError, match="zip"):
        ck.load_model(p)


def _edit_project(folder, fn):
    from safetensors.torch import load_file, save_file

    sd = load_file(folder / "model.safetensors")
    fn(sd)
    save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})


def test_wrong_shape_names_tensor_and_shapes(tmp_path):
    ck.save_model(make_model(), tmp_path)
    _edit_project(tmp_path, lambda sd: sd.__setitem__("layers.1.attention.wk.weight", torch.zeros(16, 64)))
    with pytest.raises(
        CheckpointError, match=r"layers\.1\.attention\.wk\.weight: expected shape \(32, 64\).*found \(16, 64\)"
    ):
        ck.load_model(tmp_path)


def test_missing_key(tmp_path):
    ck.save_model(make_model(), tmp_path)
    _edit_project(tmp_path, lambda sd: sd.pop("layers.0.ffn_norm.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) \['layers\.0\.ffn_norm\.weight'\]"):
        ck.load_model(tmp_path)


def test_unexpected_key(tmp_path):
    ck.save_model(make_model(), tmp_path)
    _edit_project(tmp_path, lambda sd: sd.__setitem__("layers.9.attention.wq.weight", torch.zeros(64, 64)))
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\) \['layers\.9\.attention\.wq\.weight'\]"):
        ck.load_model(tmp_path)
    assert ck.info(tmp_path)["problems"]  # info reports rather than raises


def test_hf_unknown_weight_name_is_unexpected(tmp_path):
    from safetensors.torch import load_file, save_file

    ck.save_hf(make_model(), tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    sd["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(64)
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"unexpected.*q_proj\.bias"):
        ck.load_model(tmp_path)


class _Evil:
    """Pickles to a call that writes a marker file: what an attacker's checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "marker.txt"
    ck.save_meta(make_model(), tmp_path / "ckpt")
    p = tmp_path / "ckpt" / "consolidated.00.pth"
    sd = torch.load(p, weights_only=True)
    sd["payload"] = _Evil(marker)
    torch.save(sd, p)
    assert not marker.exists()  # saving did not run it either
    with pytest.raises(CheckpointError, match="refused.*nothing in it ran"):
        ck.load_model(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="refused"):
        ck.info(tmp_path / "ckpt")
    assert not marker.exists()


def test_pth_that_is_not_a_checkpoint(tmp_path):
    ck.save_meta(make_model(), tmp_path)
    p = tmp_path / "consolidated.00.pth"
    good = p.read_bytes()
    p.write_bytes(b"this is not a zip nor a pickle")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        ck.load_model(tmp_path)
    p.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        ck.load_model(tmp_path)
    torch.save({"model": {"w": torch.zeros(2)}, "step": 3}, p)
    with pytest.raises(CheckpointError, match="not tensors.*training checkpoint"):
        ck.load_model(tmp_path)


def test_meta_missing_shard(tmp_path):
    ck.save_meta(make_model(), tmp_path, n_shards=2)
    (tmp_path / "consolidated.00.pth").unlink()
    with pytest.raises(CheckpointError, match="shard is missing"):
        ck.load_model(tmp_path)


@pytest.mark.parametrize(
    "edit,msg",
    [
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope scaling"),
        ({"model_type": "mistral", "architectures": ["MistralForCausalLM"]}, "only Llama"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"attention_bias": True}, "attention_bias"),
    ],
)
def test_hf_config_refusals(tmp_path, edit, msg):
    ck.save_hf(make_model(), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, **edit}))
    with pytest.raises(CheckpointError, match=msg):
        ck.load_model(tmp_path)


def test_absurd_sizes_fail_fast(tmp_path):
    ck.save_model(make_model(), tmp_path / "proj")
    params = json.loads((tmp_path / "proj" / "params.json").read_text())
    (tmp_path / "proj" / "params.json").write_text(json.dumps({**params, "dim": 1_500_000_001}))
    with pytest.raises(CheckpointError, match="dim = 1500000001 is not a plausible size"):
        ck.load_model(tmp_path / "proj")
    ck.save_hf(make_model(), tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**cfg, "num_attention_heads": -4}))
    with pytest.raises(CheckpointError, match="n_heads = -4"):
        ck.load_model(tmp_path / "hf")


def test_save_meta_refuses_unsplittable(tmp_path):
    with pytest.raises(CheckpointError, match="n_kv_heads = 1 is not divisible"):
        ck.save_meta(make_model("tiny-mqa"), tmp_path, n_shards=2)


def test_export_llama2c_refuses_what_it_cannot_store(tmp_path):
    with pytest.raises(CheckpointError, match="rope_theta"):
        ck.export_llama2c(make_model(rope_theta=1e6), tmp_path / "x.bin")
    assert not (tmp_path / "x.bin").exists()


def test_writes_are_atomic(tmp_path, monkeypatch):
    m = make_model()
    ck.save_model(m, tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()
    import safetensors.torch as st

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(st, "save_file", boom)
    with pytest.raises(OSError):
        ck.save_model(make_model(seed=1), tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before  # old file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "params.json"]  # no temp left


# --- conformance with a real llama2.c checkpoint ------------------------------------------------
@torch.no_grad()
def greedy(model, ids, n):
    """Greedy decoding with the KV cache: prefill the prompt, then one token at a time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only add synchronisation on a shared machine
    try:
        cache = model.new_cache(1, len(ids) + n)
        out = model(torch.tensor([ids]), 0, cache)
        ids = list(ids)
        for _ in range(n):
            ids.append(int(out[0, -1].argmax()))
            out = model(torch.tensor([ids[-1:]]), len(ids) - 1, cache)
        return ids
    finally:
        torch.set_num_threads(threads)


# karpathy/llama2.c test_all.py (commit 350e04f): run.c and sample.py, greedy from BOS for 200 steps.
LLAMA2C_EXPECTED = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, "
    "she saw a big, red ball. She wanted to play with it, but it was too high.\nLily's mom said, \"Lily, "
    "let's go to the park.\" Lily was sad and didn't know what to do. She said, \"I want to play with your "
    "ball, but I can't find it.\"\nLily was sad and didn't know what to do. She said, \"I'm sorry, Lily. "
    "I didn't know what to do.\"\nLily didn't want to help her mom, so she"
)


@pytest.mark.reference
def test_stories260k_header_and_golden_output(reference):
    from llama2_lab.text.tokenizer import Tokenizer

    path, tok = reference("stories260K.bin"), Tokenizer(reference("tok512.model"))
    d = ck.info(path)
    assert d["format"] == "llama2c" and d["problems"] == []
    m = ck.load_model(path)
    a = m.args
    assert (a.dim, a.n_layers, a.n_heads, a.kv_heads, a.vocab_size, a.hidden_dim, a.max_seq_len) == (
        64,
        5,
        8,
        4,
        512,
        172,
        512,
    )
    assert torch.equal(m.output.weight, m.tok_embeddings.weight)  # shared classifier
    assert tok.decode(greedy(m, [1], 200)) == LLAMA2C_EXPECTED

    ids = greedy(m, [1, 403, 407, 261, 378], 60)  # BOS + "Once upon a time"
    text = tok.decode(ids)
    assert text.startswith("Once upon a time, there was a little girl named Lily.")
    words = set(text.lower().replace(",", " ").replace(".", " ").split())
    assert {"the", "she", "to", "was", "play"} <= words
    # Fluent text needs no byte fallback except the newline, which this tokenizer only has as <0x0A>.
    assert {tok.id_to_piece(i) for i in ids if tok.id_to_piece(i).startswith("<0x")} <= {"<0x0A>"}
    assert "\ufffd" not in text


@pytest.mark.reference
def test_stories260k_converts_through_every_format(reference, tmp_path):
    m = ck.load_model(reference("stories260K.bin"))
    ck.export_llama2c(m, tmp_path / "v1.bin", version=1)
    ck.export_llama2c(m, tmp_path / "v0.bin", version=0)
    assert (tmp_path / "v0.bin").read_bytes() == reference("stories260K.bin").read_bytes()  # byte-exact re-export
    ck.save_hf(ck.load_model(tmp_path / "v1.bin"), tmp_path / "hf")
    ck.save_meta(ck.load_model(tmp_path / "hf"), tmp_path / "meta", n_shards=2)
    ck.save_model(ck.load_model(tmp_path / "meta"), tmp_path / "proj")
    assert_same_model(m, ck.load_model(tmp_path / "proj"))


@pytest.mark.reference
def test_load_tokenizer(reference, tmp_path):
    bin_path = reference("stories260K.bin")
    model_path = reference("tok512.model")
    # The Llama 2 tokenizer.model beside stories260K.bin has 32000 pieces: not this model's, so not found.
    assert ck.load_tokenizer(bin_path) is None
    with pytest.raises(CheckpointError, match="no tokenizer found"):
        ck.load_tokenizer(bin_path, required=True)
    os.symlink(bin_path, tmp_path / "stories260K.bin")
    os.symlink(model_path, tmp_path / "stories260K.model")
    assert len(ck.load_tokenizer(tmp_path / "stories260K.bin")) == 512
    m = ck.load_model(bin_path)
    ck.save_model(m, tmp_path / "proj", tokenizer=ck.load_tokenizer(model_path))
    tok = ck.load_tokenizer(tmp_path / "proj")
    assert tok.encode("Once upon a time") == [403, 407, 261, 378]
    ck.save_model(make_model(vocab_size=1024), tmp_path / "wrong", tokenizer=model_path)
    with pytest.raises(CheckpointError, match="512 pieces but the model's vocabulary is 1024"):
        ck.load_tokenizer(tmp_path / "wrong")
