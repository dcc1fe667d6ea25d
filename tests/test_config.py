import json

import pytest

from llama2_lab.core.config import PRESETS, ConfigError, ModelArgs, ffn_hidden_dim


@pytest.mark.parametrize(
    "name, hidden, kind",
    [
        ("llama2-7b", 11008, "MHA"),
        ("llama2-13b", 13824, "MHA"),
        ("llama2-34b", 22016, "GQA"),
        ("llama2-70b", 28672, "GQA"),
        ("llama1-33b", 17920, "MHA"),
        ("llama1-65b", 22016, "MHA"),
    ],
)
def test_presets_ffn_width_and_attention(name, hidden, kind):
    a = ModelArgs.from_name(name)
    assert a.hidden_dim == hidden
    assert a.attention_kind == kind
    assert a.head_dim == 128


def test_ffn_rule_truncates_twice_then_rounds_up():
    # 70B: int(8·8192/3) = 21845; ×1.3 = 28398.5 -> 28398; next multiple of 4096 = 28672
    assert ffn_hidden_dim(8192, 4096, 1.3) == 28672
    assert ffn_hidden_dim(64, 4) == 172  # stories260K
    assert ffn_hidden_dim(288, 32) == 768  # stories15M


def test_context_and_eps_llama1_vs_llama2():
    assert ModelArgs.from_name("llama2-7b").max_seq_len == 4096
    assert ModelArgs.from_name("llama1-7b").max_seq_len == 2048
    assert ModelArgs.from_name("llama1-7b").norm_eps == 1e-6


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ConfigError) as e:
        ModelArgs.from_name("llama2-8b")
    for name in ("llama2-7b", "llama2-13b", "llama2-34b", "llama2-70b", "llama1-65b"):
        assert name in str(e.value)


def test_params_json_from_meta_with_vocab_minus_one(tmp_path):
    p = tmp_path / "params.json"
    p.write_text(
        json.dumps(
            {
                "dim": 8192,
                "multiple_of": 4096,
                "ffn_dim_multiplier": 1.3,
                "n_heads": 64,
                "n_kv_heads": 8,
                "n_layers": 80,
                "norm_eps": 1e-05,
                "vocab_size": -1,
            }
        )
    )
    a = ModelArgs.from_params_json(p)
    assert a.vocab_size == 32000 and a.kv_heads == 8 and a.hidden_dim == 28672
    assert ModelArgs.from_params_json(tmp_path, vocab_size=32016).vocab_size == 32016


def test_params_json_round_trip(tmp_path):
    a = ModelArgs.from_name("tiny")
    a.to_params_json(tmp_path / "params.json")
    assert ModelArgs.from_params_json(tmp_path / "params.json") == a


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(dim=100, n_heads=3), "divisible by n_heads"),
        (dict(dim=96, n_heads=32), "must be even"),
        (dict(dim=64, n_heads=4, n_kv_heads=3), "multiple of n_kv_heads"),
        (dict(dim=0), "positive integer"),
        (dict(norm_eps=0.0), "norm_eps"),
        (dict(ffn_dim_multiplier=-1.0), "ffn_dim_multiplier"),
        (dict(n_kv_heads=0), "n_kv_heads"),
    ],
)
def test_invalid_configs_say_what_to_fix(kwargs, words):
    base = dict(dim=64, n_layers=1, n_heads=4, vocab_size=32, multiple_of=8)
    with pytest.raises(ConfigError, match=words):
        ModelArgs(**{**base, **kwargs})


def test_bad_params_json(tmp_path):
    (tmp_path / "params.json").write_text('{"dim": 64, "n_layers": 1, "n_heads": 4, "wat": 1}')
    with pytest.raises(ConfigError, match="unknown params.json field"):
        ModelArgs.from_params_json(tmp_path)
    (tmp_path / "params.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelArgs.from_params_json(tmp_path)
    with pytest.raises(FileNotFoundError, match="no params.json"):
        ModelArgs.from_params_json(tmp_path / "nowhere")


def test_every_preset_is_valid():
    for name in PRESETS:
        ModelArgs.from_name(name)
