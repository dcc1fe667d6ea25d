from decimal import Decimal

import pytest

from llama2_lab.core import calc
from llama2_lab.core.config import ModelArgs
from llama2_lab.core.transformer import Transformer


@pytest.mark.parametrize(
    "name, total",
    [
        ("llama2-7b", 6_738_415_616),
        ("llama2-13b", 13_015_864_320),
        ("llama2-34b", 33_743_970_304),
        ("llama2-70b", 68_976_648_192),
        ("llama1-33b", 32_528_943_616),
        ("llama1-65b", 65_285_660_672),
    ],
)
def test_exact_parameter_counts(name, total):
    parts = calc.count_params(ModelArgs.from_name(name))
    assert parts["total"] == total
    assert sum(v for k, v in parts.items() if k != "total") == total


def test_tied_embedding_count_for_comparison():
    assert calc.count_params(ModelArgs.from_name("llama2-7b"), tied_embeddings=True)["total"] == 6_607_343_616


@pytest.mark.parametrize("name", ["tiny", "tiny-mqa", "lab-tiny", "stories260k"])
def test_count_matches_the_module(name):
    a = ModelArgs.from_name(name)
    assert calc.count_params(a)["total"] == Transformer(a).num_params()


def test_kv_cache_bytes_mha_vs_gqa():
    a7, a70 = ModelArgs.from_name("llama2-7b"), ModelArgs.from_name("llama2-70b")
    # 7B MHA: 2 (k,v) · 32 layers · 32 heads · 128 · 2 bytes = 512 KiB per token, 2 GiB at 4k context
    assert calc.kv_cache_bytes_per_token(a7) == 524_288
    assert calc.kv_cache_bytes(a7, 4096) == 2 * 1024**3
    # 70B GQA: 8 KV heads instead of 64 -> 320 KiB per token, 8× smaller than MHA would be
    assert calc.kv_cache_bytes_per_token(a70) == 327_680
    assert calc.kv_cache_bytes_per_token(a70.replace(n_kv_heads=None)) == 8 * 327_680


def test_weight_bytes_and_flops():
    a = ModelArgs.from_name("llama2-7b")
    assert calc.weight_bytes(a, "bf16") == 2 * 6_738_415_616
    assert calc.weight_bytes(a, "float32") == 4 * 6_738_415_616
    assert calc.training_flops(6_738_415_616, 2e12) == pytest.approx(8.086e22, rel=1e-3)
    with pytest.raises(ValueError, match="unknown dtype"):
        calc.weight_bytes(a, "float8")


def test_carbon_table_matches_the_paper():
    rows, total = calc.carbon_table()
    assert [str(r.tco2eq) for r in rows] == ["31.22", "62.44", "153.90", "291.42"]
    assert total == Decimal("539.00")
    assert sum(r.gpu_hours for r in rows) == 3_311_616
    # truncation, not rounding: 62.4476 and 153.9074
    assert calc.carbon_tco2eq(368_640, 400) == Decimal("62.44761600")


def test_family_table_text():
    text = calc.format_family_table()
    assert "6,738,415,616" in text and "68,976,648,192" in text and "GQA" in text
