"""Static matplotlib figures for the course: each function returns a ``Figure`` and never shows it.

Figures are built in the course's style by ``figures.py`` (``matplotlib.figure.Figure``, not pyplot); in
IPython, importing this module registers a PNG formatter for ``Figure`` (unless one exists), so a notebook
displays a figure by ending a cell with it. Widgets (``widgets.py``) redraw these same figures. Data helpers
(``*_data``) return the numbers a figure plots, so tests and notebooks can assert on them.

    norm_invariance(shift, scale)           RMSNorm vs LayerNorm under x -> scale·x + shift   (02)
    rope_explorer(m, n, pair)               a rotated q/k pair, score vs m − n, θ_i spectrum  (03)
    activation_curves(name, show_grad)      ReLU / GELU / SiLU / SwiGLU gate and gradients    (04)
    gqa_groups(n_heads, n_kv_heads)         which query heads share which KV head             (05)
    kv_cache_memory(n_kv_heads, measured)   KV-cache bytes vs context for 7B/70B shapes       (05)
    param_breakdown(name_or_args)           parameter count by component                      (00)
"""

from __future__ import annotations

import math

import matplotlib
import matplotlib.patches
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from ..core import calc
from ..core.config import ModelArgs
from ..core.norm import LayerNorm, rms_norm
from ..core.rope import apply_rotary_emb, freqs_cis_real, rope_frequencies
from .figures import (
    BLUE,
    GREEN,
    GREY,
    ORANGE,
    PURPLE,
    RED,
    figure_png,  # noqa: F401  (viz.figure_png: the widgets and tests use it from here)
    new_figure,
)


# --- 02: RMSNorm vs LayerNorm -------------------------------------------------------------------
def norm_invariance_data(
    shift: float = 0.0, scale: float = 1.0, dim: int = 12, seed: int = 0, eps: float = 1e-5
) -> dict:
    """x, x' = scale·x + shift, and both norms (unit gain) of each; every array has shape (dim,)."""
    x = torch.randn(dim, generator=torch.Generator().manual_seed(seed)) + 0.3
    x2 = scale * x + shift
    ln = LayerNorm(dim, eps)
    with torch.no_grad():
        out = {
            "x": x,
            "x_new": x2,
            "rms": rms_norm(x, torch.ones(dim), eps),
            "rms_new": rms_norm(x2, torch.ones(dim), eps),
            "ln": ln(x),
            "ln_new": ln(x2),
        }
    return {k: v.numpy() for k, v in out.items()}


def norm_invariance(shift: float = 0.0, scale: float = 1.0, dim: int = 12, seed: int = 0) -> Figure:
    """Three panels: x and scale·x + shift; RMSNorm of both; LayerNorm of both."""
    d = norm_invariance_data(shift, scale, dim, seed)
    fig, (a0, a1, a2) = new_figure(3, 3.9, 3.6, bottom=0.27, top=0.84)
    idx, w = np.arange(dim), 0.4
    panels = [
        (a0, "x", "x_new", f"input x and\n{scale:g}·x + {shift:g}", None),
        (a1, "rms", "rms_new", "RMSNorm", "rms"),
        (a2, "ln", "ln_new", "LayerNorm", "ln"),
    ]
    for ax, k0, k1, title, _ in panels:
        ax.bar(idx - w / 2, d[k0], w, color=BLUE, label="x" if k0 == "x" else "norm(x)")
        ax.bar(idx + w / 2, d[k1], w, color=ORANGE, label="scale·x + shift" if k0 == "x" else "norm(scale·x + shift)")
        ax.axhline(0, color=GREY, lw=0.8)
        ax.set_xlabel("component")
        if k0 != "x":
            diff = float(np.abs(d[k1] - d[k0]).max())
            verdict = "unchanged" if diff < 1e-3 else "changed"
            title = f"{title} of both: {verdict}\nmax |Δ| = {diff:.2g}"
            ax.set_ylim(-3.5, 3.5)
        ax.set_title(title)
    a0.set_ylabel("value")
    a0.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    a1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    return fig


# --- 03: RoPE --------------------------------------------------------------------------------
def rope_scores_data(head_dim: int = 64, positions: int = 24, theta: float = 10000.0, seed: int = 0) -> dict:
    """q·k after RoPE for one random (q, k) placed at every pair of positions (m, n) < ``positions``.

    Returns ``m``, ``n``, ``score`` (positions, positions) and ``distance`` = m − n.
    """
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(head_dim, generator=g)
    k = q + 0.5 * torch.randn(head_dim, generator=g)  # correlated, so the score peaks near distance 0
    table = freqs_cis_real(head_dim, positions, theta)
    qs = q.expand(1, positions, 1, head_dim)  # (B=1, T, H=1, head_dim): the same vector at every position
    ks = k.expand(1, positions, 1, head_dim)
    qr, kr = apply_rotary_emb(qs, ks, table)
    score = (qr[0, :, 0] @ kr[0, :, 0].T).numpy() / math.sqrt(head_dim)  # (T, T): row m, column n
    m, n = np.meshgrid(np.arange(positions), np.arange(positions), indexing="ij")
    return {"m": m, "n": n, "score": score, "distance": m - n, "q": q.numpy(), "k": k.numpy()}


def rope_explorer(
    m: int = 5,
    n: int = 2,
    pair: int = 0,
    head_dim: int = 64,
    theta: float = 10000.0,
    positions: int = 24,
    seed: int = 0,
) -> Figure:
    """(a) pair ``pair`` of q at position m and of k at n on the plane; (b) q_m·k_n vs m − n;
    (c) the frequency θ_i of every pair, log scale."""
    d = rope_scores_data(head_dim, positions, theta, seed)
    freqs = rope_frequencies(head_dim, theta).numpy()
    fig, (a0, a1, a2) = new_figure(3, 3.9, 3.7, top=0.84, wspace=0.38)

    # (a) the rotation of one pair
    t = np.linspace(0, 2 * np.pi, 200)
    a0.plot(np.cos(t), np.sin(t), color=GREY, lw=0.8)
    for vec, pos, color, name in ((d["q"], m, BLUE, "q"), (d["k"], n, ORANGE, "k")):
        v = vec[2 * pair : 2 * pair + 2]
        v = v / (np.linalg.norm(v) + 1e-9)
        ang = pos * freqs[pair]
        c, s = np.cos(ang), np.sin(ang)
        r = np.array([v[0] * c - v[1] * s, v[0] * s + v[1] * c])
        a0.annotate("", xy=v, xytext=(0, 0), arrowprops=dict(arrowstyle="->", color=color, alpha=0.3, lw=1.5))
        a0.annotate("", xy=r, xytext=(0, 0), arrowprops=dict(arrowstyle="->", color=color, lw=2.2))
        a0.text(
            *(1.2 * r),
            f"{name}@{pos}",
            color=color,
            ha="center",
            va="center",
            fontsize=9,
            bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8),
        )
    a0.set_aspect("equal")
    a0.set_xlim(-1.5, 1.5)
    a0.set_ylim(-1.5, 1.5)
    a0.set_xlabel(f"x[{2 * pair}]")
    a0.set_ylabel(f"x[{2 * pair + 1}]")
    a0.set_title(
        f"pair {pair} of q and k (faint: position 0)\nangle = position × θ_{pair}, θ_{pair} = {freqs[pair]:.3g}"
    )

    # (b) the relative-position property: every (m, n) with the same m − n gives the same score
    a1.scatter(d["distance"].ravel(), d["score"].ravel(), s=6, color=GREY, alpha=0.5, label="all (m, n)")
    a1.scatter([m - n], [d["score"][m % positions, n % positions]], s=60, color=RED, zorder=3, label=f"m={m}, n={n}")
    a1.set_xlabel("relative distance m − n")
    a1.set_ylabel("q_m · k_n / √head_dim")
    a1.set_title("q_m · k_n for every (m, n) < " + str(positions) + "\ndepends only on m − n")
    a1.legend(loc="upper left", frameon=False)

    # (c) the spectrum: fast pairs first, slow pairs last
    i = np.arange(len(freqs))
    a2.semilogy(i, freqs, "o-", ms=3, color=PURPLE)
    a2.semilogy([pair], [freqs[pair]], "o", ms=9, color=RED)
    a2.set_xlabel("pair index i")
    a2.set_ylabel("θ_i (radians per position)")
    wave = 2 * np.pi / freqs[pair]
    a2.set_title(f"θ_i = {theta:g}^(−2i/{head_dim})\npair {pair} turns once per {wave:,.0f} positions")
    a2.minorticks_off()
    return fig


# --- 04: activations -------------------------------------------------------------------------
ACTIVATIONS = ("SiLU", "ReLU", "GELU", "SwiGLU gate")


def activation_data(name: str, x: np.ndarray, value: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """f(x) and df/dx for one activation; "SwiGLU gate" is silu(x)·value (value = the w3 path)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {ACTIVATIONS}.")
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    f = {
        "SiLU": lambda: F.silu(t),
        "ReLU": lambda: F.relu(t),
        "GELU": lambda: F.gelu(t),
        "SwiGLU gate": lambda: F.silu(t) * value,
    }[name]()
    (grad,) = torch.autograd.grad(f.sum(), t)
    return f.detach().numpy(), grad.numpy()


def activation_curves(
    name: str = "SiLU", show_grad: bool = True, value: float = 1.0, lo: float = -5.0, hi: float = 5.0
) -> Figure:
    """The chosen activation (bold) against the others (faint); its gradient on the right."""
    x = np.linspace(lo, hi, 401)
    fig, axes = new_figure(2 if show_grad else 1, 4.4, 3.4, wspace=0.22)
    colors = dict(zip(ACTIVATIONS, (BLUE, GREY, GREEN, ORANGE)))
    for other in ACTIVATIONS:
        f, g = activation_data(other, x, value)
        chosen = other == name
        kw = dict(
            color=colors[other],
            lw=2.4 if chosen else 1.0,
            alpha=1.0 if chosen else 0.45,
            label=other + (f" (value {value:g})" if other == "SwiGLU gate" else ""),
        )
        axes[0].plot(x, f, **kw)
        if show_grad:
            axes[1].plot(x, g, **kw)
    axes[0].set_title(f"{name}(x)")
    axes[0].set_xlabel("pre-activation x")
    axes[0].legend(loc="upper left", frameon=False)
    axes[0].axhline(0, color=GREY, lw=0.6)
    if show_grad:
        axes[1].set_title(f"d/dx {name}(x)")
        axes[1].set_xlabel("pre-activation x")
        axes[1].axhline(0, color=GREY, lw=0.6)
    return fig


# --- 05: attention, GQA, KV cache ----------------------------------------------------------------
def gqa_groups(n_heads: int = 8, n_kv_heads: int = 2) -> Figure:
    """Query heads (top) coloured by the KV head (bottom) they read: h // (n_heads / n_kv_heads)."""
    if n_heads % n_kv_heads:
        raise ValueError(f"n_heads ({n_heads}) must be a multiple of n_kv_heads ({n_kv_heads}).")
    n_rep = n_heads // n_kv_heads
    fig, (ax,) = new_figure(1, max(5.0, 0.55 * n_heads + 1), 2.4, left=0.02, right=0.98, bottom=0.02)
    cmap = matplotlib.colormaps["tab10"]
    for h in range(n_heads):
        g = h // n_rep
        ax.add_patch(
            matplotlib.patches.FancyBboxPatch((h, 1.2), 0.8, 0.6, boxstyle="round,pad=0.02", color=cmap(g % 10))
        )
        ax.text(h + 0.4, 1.5, f"q{h}", ha="center", va="center", fontsize=8, color="white")
        centre = (g * n_rep + n_rep / 2) - 0.1
        ax.plot([h + 0.4, centre], [1.2, 0.6], color=cmap(g % 10), lw=1)
    for g in range(n_kv_heads):
        x0 = g * n_rep + 0.05
        ax.add_patch(
            matplotlib.patches.FancyBboxPatch(
                (x0, 0.0), n_rep - 0.3, 0.6, boxstyle="round,pad=0.02", color=cmap(g % 10), alpha=0.8
            )
        )
        ax.text(x0 + (n_rep - 0.3) / 2, 0.3, f"k{g}, v{g}", ha="center", va="center", fontsize=8, color="white")
    kind = "MHA" if n_rep == 1 else ("MQA" if n_kv_heads == 1 else "GQA")
    ax.set_xlim(-0.2, n_heads)
    ax.set_ylim(-0.1, 1.9)
    ax.axis("off")
    ax.set_title(f"{kind}: {n_heads} query heads share {n_kv_heads} KV head(s), {n_rep} per group")
    return fig


KV_PRESETS = ("llama2-7b", "llama2-70b")


def kv_cache_data(n_kv_heads: int, presets=KV_PRESETS, contexts=None, dtype="bfloat16") -> dict:
    """GiB of KV cache (batch 1) per preset for ``n_kv_heads`` (capped at its n_heads), MHA and MQA."""
    contexts = np.array(contexts if contexts is not None else [256, 512, 1024, 2048, 3072, 4096])
    out = {"contexts": contexts}
    for name in presets:
        a = ModelArgs.from_name(name)
        kv = min(n_kv_heads, a.n_heads)
        while a.n_heads % kv:
            kv -= 1
        per_tok = {
            k: calc.kv_cache_bytes_per_token(a.replace(n_kv_heads=v), dtype) / 2**30
            for k, v in (("chosen", kv), ("MHA", a.n_heads), ("MQA", 1))
        }
        out[name] = {k: contexts * v for k, v in per_tok.items()} | {"n_kv_heads": kv, "n_heads": a.n_heads}
    return out


def kv_cache_memory(
    n_kv_heads: int = 8,
    measured: dict | None = None,
    presets=KV_PRESETS,
    dtype="bfloat16",
    measured_title: str = "measured decode speed",
) -> Figure:
    """KV-cache GiB vs context for the presets (solid: ``n_kv_heads``; dashed MHA, dotted MQA), and, when
    ``measured`` ({n_kv_heads: tokens/s}) is given, the measured decode speed of a tiny model."""
    d = kv_cache_data(n_kv_heads, presets, dtype=dtype)
    fig, axes = new_figure(2 if measured is not None else 1, 4.8, 3.6, wspace=0.3, left=0.08)
    ax = axes[0]
    for name, color in zip(presets, (BLUE, ORANGE, GREEN)):
        p, c = d[name], d["contexts"]
        ax.plot(
            c, p["chosen"], "-o", ms=3, color=color, lw=2, label=f"{name}: {p['n_kv_heads']} of {p['n_heads']} KV heads"
        )
        ax.plot(c, p["MHA"], "--", color=color, lw=1, alpha=0.6)
        ax.plot(c, p["MQA"], ":", color=color, lw=1, alpha=0.6)
        ax.annotate(
            f"{p['chosen'][-1]:.2f} GiB",
            (c[-1], p["chosen"][-1]),
            textcoords="offset points",
            xytext=(-4, 6),
            ha="right",
            fontsize=8,
            color=color,
        )
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel(f"KV cache, GiB ({dtype}, batch 1)")
    ax.set_title("KV cache per sequence (dashed MHA, dotted MQA)")
    ax.legend(loc="upper left", frameon=False)
    if measured is not None:
        ax2 = axes[1]
        keys = sorted(measured)
        vals = [measured[k] if measured[k] is not None else 0.0 for k in keys]
        bars = ax2.bar([str(k) for k in keys], vals, color=[RED if k == n_kv_heads else GREY for k in keys])
        for b, k in zip(bars, keys):
            txt = "not yet measured" if measured[k] is None else f"{measured[k]:.0f}"
            ax2.text(
                b.get_x() + b.get_width() / 2,
                b.get_height(),
                txt,
                ha="center",
                va="bottom",
                fontsize=8,
                rotation=90 if measured[k] is None else 0,
            )
        ax2.set_xlabel("n_kv_heads (tiny model, 8 query heads)")
        ax2.set_ylabel("decode tokens / s (this machine)")
        ax2.set_title(measured_title)
    return fig


# --- 00: parameter breakdown ------------------------------------------------------------------------
def _short(n: float) -> str:
    """1234567 -> '1.23M' (K, M, B)."""
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:,.2f}{unit}"
    return f"{n:,.0f}"


def param_breakdown(name_or_args="llama2-7b") -> Figure:
    """Horizontal bars of ``calc.count_params`` by component, with share of the total."""
    args = ModelArgs.from_name(name_or_args) if isinstance(name_or_args, str) else name_or_args
    label = name_or_args if isinstance(name_or_args, str) else "custom config"
    parts = calc.count_params(args)
    total = parts.pop("total")
    fig, (ax,) = new_figure(1, 7.0, 3.2, left=0.17, right=0.97)
    names = list(parts)[::-1]
    vals = np.array([parts[k] for k in names], dtype=float)
    unit, div = ("B", 1e9) if total >= 1e9 else (("M", 1e6) if total >= 1e6 else ("K", 1e3))
    bars = ax.barh(names, vals / div, color=[BLUE, GREEN, ORANGE, PURPLE, GREY][: len(names)])
    for b, v in zip(bars, vals):
        ax.text(
            b.get_width(),
            b.get_y() + b.get_height() / 2,
            f" {_short(v)} ({100 * v / total:.2g}%)",
            va="center",
            fontsize=9,
        )
    ax.set_xlim(0, vals.max() / div * 1.45)
    ax.set_xlabel(f"parameters ({unit})")
    kind = args.attention_kind
    ax.set_title(f"{label}: {total:,} parameters (dim {args.dim}, {args.n_layers} layers, {kind})")
    return fig
