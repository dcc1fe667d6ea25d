"""llama2_lab.course.view: the tables, progress bars and helpers the course notebooks show."""

import pytest
import torch
from torch import nn

from llama2_lab.core.config import ModelArgs
from llama2_lab.core.transformer import Transformer
from llama2_lab.course import view as course_view

torch.set_num_threads(1)


def test_table_html_from_dict_and_rows():
    html = course_view.table_html({1: 1690.4, 2: None, 4: (3.14159, "a<b")}, headers=("k", "v", "w"), caption="c")
    assert html.count("<tr>") == 4 and "<th" in html and "caption" in html
    assert "1,690" in html and "—" in html and "3.14" in html and "a&lt;b" in html  # escaped, no raw dict
    assert "white-space:nowrap" in html
    assert course_view.table_html([("x", 1), ("y", 2)]).count("<tr>") == 2


def test_call_progress_counts_calls_and_leaves_outputs_alone():
    lin = nn.Linear(3, 2)
    x = torch.randn(1, 3)
    want = lin(x)
    with course_view.call_progress(lin, total=5, desc="t") as bar:
        for _ in range(3):
            got = lin(x)
        assert bar.n == 3
    assert torch.equal(got, want)  # a hook that returned the bar's value would have replaced the output
    assert not lin._forward_hooks  # removed afterwards


def test_greedy_uncached_stops_at_eos_and_context():
    args = ModelArgs.from_name("tiny", vocab_size=40, max_seq_len=10)
    model = Transformer(args).init_weights(std=0.3, seed=3).eval()
    free = course_view.greedy_uncached(model, [1, 5], 20, eos_id=None)
    assert len(free) == 8  # 2 prompt + 8 new = max_seq_len
    stopped = course_view.greedy_uncached(model, [1, 5], 20, eos_id=free[2])
    assert stopped == free[: free.index(free[2])]


def test_story_rows_and_timing():
    class Tok:
        def encode(self, s, bos=True):
            return [1] + [ord(c) % 50 for c in s]

    rows = course_view.story_rows(Tok(), ["abcdef", "ghijk"], 3)
    assert rows.shape == (3, 4) and rows[0, 0] == 1
    with pytest.raises(ValueError, match="more stories"):
        course_view.story_rows(Tok(), ["a"], 30)
    med, lo, hi = course_view.time_repeats(lambda: sum(range(100)), repeats=5)
    assert 0 <= lo <= med <= hi


def test_kv_cache_figure_legend_carries_the_sizes():
    stats = {k: {"median": 100.0 / k, "lo": 90.0 / k, "hi": 110.0 / k, "runs": []} for k in (1, 2, 4, 8)}
    fig = course_view.kv_cache_figure(8, stats)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("1.25 GiB at 4k" in t for t in labels) and any("0.50 GiB at 4k" in t for t in labels)
    assert not fig.axes[0].texts  # no value labels drawn on top of the lines
    assert [round(p.get_height(), 6) for p in fig.axes[1].patches] == [100.0, 50.0, 25.0, 12.5]
