"""llama2_lab.course.viz and llama2_lab.course.widgets: figures build headless; explorers respond to their Python API."""

from __future__ import annotations

import base64
import statistics
import time

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from llama2_lab.core import calc
from llama2_lab.core.config import ModelArgs
from llama2_lab.course import viz, widgets
from llama2_lab.course.attention_views import attention_heatmap

torch.set_num_threads(1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _update_cpu_seconds(explorer, settings: list[dict]) -> float:
    """Median CPU time of one update. CPU (not wall) time, so other jobs on the machine do not make it flaky."""
    times = []
    for s in settings:
        start = time.process_time()
        explorer.set(**s)
        times.append(time.process_time() - start)
    return statistics.median(times)


def _bar_heights(fig: Figure, axis: int) -> np.ndarray:
    return np.array([p.get_height() for p in fig.axes[axis].patches])


# --- viz: static figures ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: viz.norm_invariance(1.0, 2.0),
        lambda: viz.rope_explorer(3, 1, 2),
        lambda: viz.activation_curves("GELU"),
        lambda: viz.gqa_groups(8, 2),
        lambda: viz.kv_cache_memory(4, {1: 10.0, 2: None, 4: 8.0, 8: 5.0}),
        lambda: viz.param_breakdown("llama2-70b"),
        lambda: attention_heatmap(torch.softmax(torch.rand(6, 6), -1), list("abcdef"), title="attention"),
    ],
)
def test_viz_figures_render(make):
    fig = make()
    assert isinstance(fig, Figure) and fig.axes
    assert all(ax.get_title() for ax in fig.axes if ax.get_label() != "<colorbar>")
    assert viz.figure_png(fig).startswith(PNG_MAGIC)


def test_norm_invariance_data_teaches_the_invariances():
    scaled = viz.norm_invariance_data(shift=0.0, scale=3.0)
    assert np.allclose(scaled["rms"], scaled["rms_new"], atol=1e-5)  # RMSNorm: scale-invariant
    assert np.allclose(scaled["ln"], scaled["ln_new"], atol=1e-5)
    shifted = viz.norm_invariance_data(shift=1.5, scale=1.0)
    assert not np.allclose(shifted["rms"], shifted["rms_new"], atol=1e-2)  # …but not shift-invariant
    assert np.allclose(shifted["ln"], shifted["ln_new"], atol=1e-4)  # LayerNorm is both


def test_rope_scores_depend_only_on_distance():
    d = viz.rope_scores_data(head_dim=32, positions=12)
    for dist in (-5, 0, 3):
        vals = d["score"][d["distance"] == dist]
        assert vals.max() - vals.min() < 1e-4


def test_activation_data_gradients():
    x = np.array([-2.0, 0.0, 2.0])
    f, g = viz.activation_data("SiLU", x)
    assert np.allclose(f, x / (1 + np.exp(-x))) and abs(g[1] - 0.5) < 1e-9
    f, _ = viz.activation_data("SwiGLU gate", x, value=2.0)
    assert np.allclose(f, 2 * x / (1 + np.exp(-x)))
    with pytest.raises(ValueError, match="choose one of"):
        viz.activation_data("tanh", x)


def test_kv_cache_data_matches_calc():
    d = viz.kv_cache_data(8, contexts=[4096])
    a7, a70 = ModelArgs.from_name("llama2-7b"), ModelArgs.from_name("llama2-70b")
    assert d["llama2-70b"]["chosen"][0] * 2**30 == pytest.approx(calc.kv_cache_bytes(a70, 4096))  # 70B really has 8
    assert d["llama2-7b"]["MHA"][0] * 2**30 == pytest.approx(calc.kv_cache_bytes(a7, 4096))  # 2 GiB
    assert d["llama2-7b"]["chosen"][0] == pytest.approx(d["llama2-7b"]["MHA"][0] / 4)


def test_gqa_groups_rejects_bad_ratio():
    with pytest.raises(ValueError, match="multiple"):
        viz.gqa_groups(8, 3)


# --- widgets ---------------------------------------------------------------------------------------
def _timed_set(explorer, **values) -> float:
    start = time.process_time()
    explorer.set(**values)
    return time.process_time() - start


def test_norm_explorer():
    ex = widgets.NormExplorer()
    before = _bar_heights(ex.figure, 1).copy()
    times = [_timed_set(ex, shift=-2.0, scale=1.0)]
    assert ex.values == {"shift": -2.0, "scale": 1.0}
    assert not np.allclose(before, _bar_heights(ex.figure, 1))  # the RMSNorm panel changed
    assert np.allclose(ex.data["ln"], ex.data["ln_new"], atol=1e-4)  # LayerNorm did not
    start = time.process_time()
    ex.controls["scale"].value = 3.0  # what the slider does in the browser
    times.append(time.process_time() - start)
    assert ex.data["x_new"] == pytest.approx(3.0 * ex.data["x"] - 2.0, abs=1e-5)
    times.append(_timed_set(ex, shift=0.0))
    assert np.allclose(ex.data["rms"], ex.data["rms_new"], atol=1e-5)  # pure scaling: RMSNorm unchanged
    assert statistics.median(times) < 1.0  # CPU seconds per update, median of 3


def test_rope_explorer():
    ex = widgets.RopeExplorer()
    times = [_timed_set(ex, m=9, n=4)]
    s1 = ex.data["current_score"]
    times.append(_timed_set(ex, m=15, n=10))  # same distance, same score: the relative-position property
    assert ex.data["current_score"] == pytest.approx(s1, abs=1e-4)
    times.append(_timed_set(ex, n=14, pair=3))
    assert ex.data["current_score"] != pytest.approx(s1, abs=1e-3)
    red = ex.figure.axes[1].collections[-1].get_offsets()[0]
    assert red[0] == 1  # the highlighted point sits at m − n = 1
    assert "pair 3" in ex.figure.axes[0].get_title()
    assert statistics.median(times) < 1.0


def test_activation_explorer():
    ex = widgets.ActivationExplorer()
    assert len(ex.figure.axes) == 2
    f_silu = ex.data["f"].copy()
    times = [_timed_set(ex, name="ReLU", show_grad=False)]
    assert len(ex.figure.axes) == 1 and not np.allclose(f_silu, ex.data["f"])
    assert ex.data["f"].min() == 0.0
    with pytest.raises(ValueError, match="choose one of"):
        ex.set(name="tanh")
    times.append(_timed_set(ex, name="SwiGLU gate", value=2.0))
    assert ex.data["f"] == pytest.approx(2.0 * f_silu, abs=1e-9)
    times.append(_timed_set(ex, show_grad=True))
    assert len(ex.figure.axes) == 2
    assert statistics.median(times) < 1.0


def test_gqa_explorer_measures_once_and_never_while_the_slider_moves(monkeypatch):
    calls = []

    def fake(options):
        calls.append(tuple(options))
        return {
            k: {"median": 100.0 / k, "lo": 90.0 / k, "hi": 110.0 / k, "runs": [90.0 / k, 100.0 / k, 110.0 / k]}
            for k in options
        }

    monkeypatch.setattr(widgets, "measure_decode_all", fake)
    ex = widgets.GQAExplorer()
    assert calls == [(1, 2, 4, 8)]  # every option, once, when the explorer is made
    assert ex.values == {"n_kv_heads": 8} and ex.measured[8] == pytest.approx(12.5)
    assert ex.noise == pytest.approx(0.2) and "20%" in ex.status.value and "median of 3" in ex.status.value
    gib8 = ex.data["llama2-70b"]["chosen"][-1]
    ex.set(n_kv_heads=1)
    assert ex.data["llama2-70b"]["chosen"][-1] == pytest.approx(gib8 / 8)
    heights = _bar_heights(ex.figure, 1)
    assert heights.tolist() == pytest.approx([100.0, 50.0, 25.0, 12.5])
    assert _update_cpu_seconds(ex, [{"n_kv_heads": 2}, {"n_kv_heads": 4}, {"n_kv_heads": 1}]) < 1.0
    assert calls == [(1, 2, 4, 8)]  # the slider never re-measures
    ex.measure_all()
    assert calls == [(1, 2, 4, 8), (1, 2, 4, 8)]
    assert widgets.GQAExplorer(measure=False, value=2).values == {"n_kv_heads": 2}


def test_measure_decode_speed_is_real(monkeypatch):
    monkeypatch.setenv("LLAMA2_LAB_FAST", "1")
    stats = widgets.measure_decode_all([1, 2], context=64, batch=1, steps=3)
    for s in stats.values():
        assert 0 < s["lo"] <= s["median"] <= s["hi"] < 1e7 and len(s["runs"]) == 3
    assert widgets.measure_decode_speed(2, context=64, batch=1, steps=3) == stats[2]["median"]  # cached


def test_config_explorer():
    ex = widgets.ConfigExplorer()
    assert ex.data["total"] == 6_738_415_616
    assert _update_cpu_seconds(ex, [{"preset": "tiny"}, {"preset": "llama2-13b"}, {"preset": "llama2-70b"}]) < 1.0
    assert ex.data["total"] == 68_976_648_192
    assert "68,976,648,192" in ex.figure.axes[0].get_title()


def test_display_bundle_has_widget_and_static_png():
    ex = widgets.ConfigExplorer("tiny")
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"]).startswith(PNG_MAGIC)
    assert bundle["text/plain"] == "ConfigExplorer(preset='tiny')"
    assert ex.image.value == ex.png


def test_set_rejects_unknown_and_out_of_range():
    ex = widgets.RopeExplorer()
    with pytest.raises(ValueError, match="no control 'q'"):
        ex.set(q=1)
    with pytest.raises(ValueError, match="outside"):
        ex.set(m=500)
    assert ex.values["m"] == 5  # nothing changed
