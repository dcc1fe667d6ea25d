"""What the learner sees in notebooks 01, 08 and 09: token tables, small value tables, chat transcripts, the
KV-cache picture and the side-by-side chat panel, so that the notebooks show a one-line call, not an HTML wall.

Every function returns an HTML string (or a matplotlib figure / a widget); ``show_html`` displays one. Tables wrap
between tokens, never inside one, and fit a 1440-pixel-wide screen.
"""

from __future__ import annotations

import html as _html
from collections.abc import Callable, Sequence

import torch

from ..core.transformer import Transformer

ROLE_COLOURS = {
    "bos": "#d9d9d9",
    "eos": "#d9d9d9",
    "tag": "#fde2b8",
    "system": "#d4c4ee",
    "user": "#c6dbef",
    "assistant": "#c7e9c0",
}
_CELL = "border:1px solid #fff;padding:2px 5px;font-family:monospace;font-size:12px;text-align:center;white-space:pre"


def show_html(text: str) -> None:
    """Display an HTML string in the notebook."""
    from IPython.display import HTML, display

    display(HTML(text))


def _piece(tokenizer, i: int) -> str:
    """A token's piece as a reader wants it: a byte piece of printable ASCII as its character, newline as \\n."""
    p = tokenizer.id_to_piece(int(i))
    if p.startswith("<0x") and p.endswith(">") and len(p) == 6:
        b = int(p[3:5], 16)
        p = {0x0A: "\\n", 0x09: "\\t", 0x20: "␣"}.get(b, chr(b) if 0x21 <= b < 0x7F else p)
    return p.replace("\n", "\\n")


def token_table(
    tokenizer,
    ids: Sequence[int],
    *,
    roles: Sequence[str] | None = None,
    mask: Sequence[int] | None = None,
    highlight: Sequence[bool] | None = None,
    per_row: int = 16,
    title: str = "",
) -> str:
    """HTML: one column per token (piece, id, and the loss mask when given), wrapped every per_row tokens.

    roles (one per token: a key of ROLE_COLOURS) colours the columns; highlight (one bool per token) marks
    columns in orange when no roles are given. Byte pieces of printable ASCII are shown as their character
    (the real Llama 2 vocabulary spells '[' as <0x5B>), a newline as \\n.
    """
    ids = [int(i) for i in ids]
    blocks = []
    for start in range(0, len(ids), per_row):
        rows = {"piece": [], "id": []}
        if mask is not None:
            rows["mask"] = []
        for i in range(start, min(start + per_row, len(ids))):
            if roles is not None:
                bg = f"background:{ROLE_COLOURS.get(roles[i], '#eeeeee')}"
                tip = f" title='{_html.escape(roles[i])}'"
            else:
                bg = "background:#ffe0a0" if highlight is not None and highlight[i] else "background:#eeeeee"
                tip = ""
            rows["piece"].append(f"<td style='{_CELL};{bg}'{tip}>{_html.escape(_piece(tokenizer, ids[i]))}</td>")
            rows["id"].append(f"<td style='{_CELL};{bg};color:#555'>{ids[i]}</td>")
            if mask is not None:
                on = bool(mask[i])
                style = "font-weight:bold;background:#c6f6c6" if on else "color:#bbb"
                rows["mask"].append(f"<td style='{_CELL};{style}'>{int(on)}</td>")
        body = "".join(f"<tr><th style='{_CELL};text-align:right'>{k}</th>{''.join(v)}</tr>" for k, v in rows.items())
        blocks.append(f"<table style='border-collapse:collapse;margin:0 0 6px 0'>{body}</table>")
    head = f"<div><b>{_html.escape(title)}</b></div>" if title else ""
    legend = ""
    if roles is not None:
        used = [r for r in ROLE_COLOURS if r in set(roles) and r != "eos"]
        legend = (
            "<div>"
            + " ".join(
                f"<span style='background:{ROLE_COLOURS[r]};padding:2px 6px;font-size:12px'>"
                f"{'bos / eos' if r == 'bos' else r}</span>"
                for r in used
            )
            + "</div>"
        )
    return head + legend + "".join(blocks)


def dialog_table(tokenizer, dialog, per_row: int = 16) -> tuple[str, list[int], list[int]]:
    """The encoded dialog as a token table coloured by who wrote each token, with the SFT loss mask.
    -> (html, ids, mask), ids and mask from ``chat.encode_dialog_with_mask``."""
    from ..text.chat import dialog_segments, encode_dialog_with_mask

    ids, mask = encode_dialog_with_mask(tokenizer, dialog)
    roles = [s.role for s in dialog_segments(tokenizer, dialog)]
    return token_table(tokenizer, ids, roles=roles, mask=mask, per_row=per_row), ids, mask


def pieces_html(tokenizer, text: str) -> str:
    """Chips for the tokens of text: the piece, its id on hover; byte-fallback pieces orange."""
    ids = tokenizer.encode(text)
    chips = []
    for i in ids:
        colour = "#fdd0a2" if tokenizer.is_byte(i) else "#c6dbef"
        chips.append(
            f"<span title='id {i}' style='background:{colour};margin:1px;padding:1px 4px;display:inline-block;"
            f"border-radius:3px;font-family:monospace'>{_html.escape(tokenizer.id_to_piece(i))}</span>"
        )
    return f"<div><b>{len(ids)} tokens</b> ({len(tokenizer):,} pieces in the vocabulary)</div>" + "".join(chips)


def value_table(
    values: Sequence[float],
    *,
    label: str = "step",
    value_label: str = "loss",
    per_row: int = 10,
    fmt: str = "{:.2f}",
    start: int = 1,
) -> str:
    """A list of numbers as a small table, per_row to a row, with the index above each value."""
    blocks = []
    for s in range(0, len(values), per_row):
        chunk = list(values[s : s + per_row])
        idx = "".join(f"<td style='{_CELL};color:#777'>{s + j + start}</td>" for j in range(len(chunk)))
        val = "".join(f"<td style='{_CELL}'>{fmt.format(v)}</td>" for v in chunk)
        blocks.append(
            f"<table style='border-collapse:collapse;margin:0 0 4px 0'><tr><th style='{_CELL};"
            f"text-align:right'>{label}</th>{idx}</tr><tr><th style='{_CELL};text-align:right'>"
            f"{value_label}</th>{val}</tr></table>"
        )
    return "".join(blocks)


def rows_table(
    header: Sequence[str], rows: Sequence[Sequence], title: str = "", code_columns: Sequence[int] = ()
) -> str:
    """A plain HTML table; the columns in code_columns in monospace. Cells wrap between words."""
    th = "".join(f"<th style='text-align:left;padding:2px 8px'>{_html.escape(str(h))}</th>" for h in header)
    body = []
    for r in rows:
        tds = []
        for j, v in enumerate(r):
            text = _html.escape(str(v))
            if j in code_columns:
                text = f"<code style='white-space:pre-wrap'>{text}</code>"
            tds.append(f"<td style='text-align:left;padding:2px 8px;vertical-align:top'>{text}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    head = f"<div><b>{_html.escape(title)}</b></div>" if title else ""
    return f"{head}<table style='border-collapse:collapse'><tr>{th}</tr>{''.join(body)}</table>"


def chat_transcript(title: str, system: str, turns: Sequence[tuple[str, str, str]]) -> str:
    """A checked chat as a table: turn, user, reply, verdicts. turns: (user, reply, marks)."""
    rows = [(k, u, r, m) for k, (u, r, m) in enumerate(turns, start=1)]
    return rows_table(["k", "user", "reply", "checks"], rows, code_columns=(2,), title=f"{title} — system: {system}")


def side_by_side(*parts: str) -> str:
    """HTML blocks next to each other, each taking an equal share of the width (wrapping below 600 px)."""
    cols = "".join(f"<div style='flex:1 1 0;min-width:300px'>{p}</div>" for p in parts)
    return f"<div style='display:flex;flex-wrap:wrap;gap:16px'>{cols}</div>"


# --- 08: the generation loop, watched from outside ---------------------------------------------------
class CallRecorder(torch.nn.Module):
    """Wraps a model; records every call: tokens fed, start_pos, the cache passed, and the last position's logits.

    Pass it where a model goes (``my_generate(CallRecorder(model), ...)``): the calls show what a generation
    loop did (one prefill, then one token per step against the cache) without changing what it computes.
    """

    def __init__(self, model: Transformer):
        super().__init__()
        self.model = model
        self.args = model.args
        self.calls: list[dict] = []

    def forward(self, tokens, start_pos: int = 0, cache=None, *rest, **kw):
        out = self.model(tokens, start_pos, cache, *rest, **kw)
        self.calls.append(
            dict(
                fed=int(tokens.shape[-1]),
                start=int(start_pos),
                filled=int(start_pos) + int(tokens.shape[-1]),
                cache=cache,
                logits=out[0, -1].detach().clone(),
            )
        )
        return out

    def new_cache(self, *a, **kw):
        return self.model.new_cache(*a, **kw)


def kv_cache_figure(calls: Sequence[dict], max_len: int, bytes_per_position: int, n_layers: int, kv_heads: int):
    """Left: which cache positions each call found filled (grey) and wrote (green). Right: KiB in use."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    grid = torch.zeros(len(calls), max_len)
    for i, s in enumerate(calls):
        grid[i, : s["start"]] = 1
        grid[i, s["start"] : s["filled"]] = 2
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw=dict(width_ratios=[1.4, 1]))
    ax1.imshow(
        grid,
        aspect="auto",
        cmap=ListedColormap(["white", "#bbbbbb", "#2ca02c"]),
        vmin=0,
        vmax=2,
        interpolation="nearest",
    )
    ax1.set_xlabel("cache position")
    ax1.set_ylabel("call (0 = prefill)")
    ax1.set_title(
        f"KV cache of {max_len} positions: prefill writes {calls[0]['filled']}, each decode step writes 1", fontsize=10
    )
    ax2.plot(range(len(calls)), [s["filled"] * bytes_per_position / 1024 for s in calls], "o-", ms=3)
    ax2.set_xlabel("call")
    ax2.set_ylabel("KiB of keys + values in use")
    ax2.set_title(
        f"{bytes_per_position:,} bytes per position (float32, {n_layers} layers × {kv_heads} KV heads)", fontsize=10
    )
    fig.tight_layout()
    return fig


def package_generate(
    model,
    prompt_ids,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k=None,
    top_p=None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """The package's ``generate`` behind the signature of notebook 08's ``my_generate`` (no stop at EOS)."""
    from ..inference import generate

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator)) if generator is not None else None
    return list(
        generate(
            model,
            list(prompt_ids),
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            eos_id=None,
        )
    )


# --- 09: chat with two models side by side -------------------------------------------------------------
class ChatPanel:
    """Two (or more) chat models answering the same messages under the same system prompt, side by side.

    ``reply(model, messages) -> str`` produces one reply. Each model keeps its own history. The transcripts are
    HTML that wraps long replies (nothing is clipped); ``send(text)`` is what the send button does.
    """

    def __init__(
        self,
        models: dict,
        reply: Callable,
        system: str = "",
        titles: dict | None = None,
        question: str = "What is your name?",
    ):
        import ipywidgets as W

        self.models, self.reply = models, reply
        self.titles = titles or {k: k for k in models}
        self.history: dict[str, list[dict]] = {k: [] for k in models}
        self.system_box = W.Text(value=system, description="system", layout=W.Layout(width="95%"))
        self.user_box = W.Text(value=question, description="user", layout=W.Layout(width="70%"))
        self.send_button = W.Button(description="send", button_style="primary")
        self.reset_button = W.Button(description="reset")
        self.boxes = {
            k: W.HTML(layout=W.Layout(width="100%", border="1px solid #ccc", padding="4px", min_height="60px"))
            for k in models
        }
        self.send_button.on_click(lambda _: self.send(self.user_box.value))
        self.reset_button.on_click(lambda _: self.reset())
        cols = [
            W.VBox(
                [W.HTML(f"<b>{_html.escape(self.titles[k])}</b>"), self.boxes[k]],
                layout=W.Layout(width=f"{96 // len(models)}%"),
            )
            for k in models
        ]
        self.widget = W.VBox(
            [
                self.system_box,
                W.HBox([self.user_box, self.send_button, self.reset_button]),
                W.HBox(cols, layout=W.Layout(width="100%")),
            ]
        )
        self._render()

    def send(self, text: str) -> dict[str, str]:
        self.user_box.value = text
        out = {}
        for k, model in self.models.items():
            msgs = (
                [{"role": "system", "content": self.system_box.value}]
                + self.history[k]
                + [{"role": "user", "content": text}]
            )
            out[k] = self.reply(model, msgs)
            self.history[k] += [{"role": "user", "content": text}, {"role": "assistant", "content": out[k]}]
        self._render()
        return out

    def reset(self) -> None:
        for h in self.history.values():
            h.clear()
        self._render()

    def _render(self) -> None:
        for k, box in self.boxes.items():
            lines = [
                f"<div style='margin:2px 0'><span style='color:#555'>user:</span> {_html.escape(m['content'])}</div>"
                if m["role"] == "user"
                else f"<div style='margin:2px 0 8px 0'><span style='color:#555'>{_html.escape(self.titles[k])}:</span> "
                f"<code style='white-space:pre-wrap;word-break:break-word'>{_html.escape(m['content'])}</code></div>"
                for m in self.history[k]
            ]
            box.value = (
                "<div style='white-space:normal;line-height:1.4'>"
                + ("".join(lines) or "<i>(no messages yet)</i>")
                + "</div>"
            )

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
