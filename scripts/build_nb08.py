"""Build notebooks/08_inference.ipynb with nbformat (outputs empty)."""
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/work/main/notebooks/08_inference.ipynb")
cells = []


def md(text):
    cells.append(new_markdown_cell(text.strip("\n")))


def code(text, tags=()):
    c = new_code_cell(text.strip("\n"))
    if tags:
        c.metadata["tags"] = list(tags)
    cells.append(c)


md("""
# 08 · Inference: the generation loop, sampling, speed, real checkpoints, and attention

**Goals**
1. Write the generation loop out by hand: *prefill* the prompt once, then *decode* one token at a
   time against the KV cache — and watch the cache fill up.
2. Measure tokens per second on the machine at hand (CPU; CUDA or Apple MPS when present).
3. Play with temperature, top-k and top-p and see what each does to the next-token distribution.
4. Stream text as it is generated.
5. Load a **real Llama 2** checkpoint when you have one (set `LLAMA2_CHECKPOINT`), estimate its memory
   first, and chat with it in the Llama-2-chat format. Without one, the same cells run the shipped tiny model.
6. Record attention during generation and explore it: one head, all heads of a layer (grouped by the
   KV head they share), and the whole network at once as in the paper's Figure 10 — on a text of more
   than 1,000 tokens.

Everything here runs on a laptop CPU. `LLAMA2_LAB_FAST=1` makes every cell quick (CI uses it).
""")

code('''
import os

# A real Llama 2 checkpoint: a Meta folder (consolidated.*.pth + params.json), a Hugging Face folder,
# or a llama2.c .bin. Unset: every cell below uses the shipped tiny model instead.
LLAMA2_CHECKPOINT = os.environ.get("LLAMA2_CHECKPOINT")
FAST = os.environ.get("LLAMA2_LAB_FAST") == "1"  # CI: keep every cell quick

import copy
import time

import matplotlib.pyplot as plt
import torch
from IPython.display import Image, display

from llama2_lab import calc, checkpoint, data
from llama2_lab.chat import encode_dialog
from llama2_lab.explorer import (AttentionExplorer, SamplingPlayground, attention_heatmap, figure_png,
                                 heads_grid, network_view)
from llama2_lab.generate import chat, filtered_distributions, generate, pick_device, stream
from llama2_lab.model import Transformer

torch.manual_seed(0)
# One thread in fast mode: on a shared CI machine, several busy threads fight over the cores and
# a small model can run 10x slower than with one.
torch.set_num_threads(1 if FAST else min(4, os.cpu_count() or 1))


def show(fig):
    """Show a matplotlib Figure made by llama2_lab.explorer (they are not pyplot figures)."""
    display(Image(figure_png(fig)))
''')

code('''
path = checkpoint.default_model_path()  # assets/models/llama2-lab-tiny, trained in notebook 07
model = checkpoint.load_model(path)
tok = checkpoint.load_tokenizer(path, required=True)
args = model.args
print(checkpoint.format_info(checkpoint.info(path)))
''')

md("""
## 1. The generation loop, written out

A decoder-only model predicts the next token from all the tokens before it. Generating *N* tokens
naively would rerun the whole sequence *N* times. The KV cache avoids that:

* **prefill** — run the whole prompt (*P* tokens) once. Every layer writes the keys and values of
  positions 0…P−1 into the cache, and the last position's logits give the first new token.
* **decode** — feed only the newest token, at position `pos`. Its query attends to the cached keys and
  values of positions 0…pos, and its own key and value are written at `pos`. One token in, one token out.

The cache holds `2 · n_layers · n_kv_heads · head_dim` numbers per position. That is why Llama 2 uses
grouped-query attention in its larger models (34B and 70B): 8 KV heads instead of 64 shrink the
cache 8× (Llama 2 paper §2.2, notebook 05).
""")

code('''
@torch.inference_mode()
def my_generate(model, prompt_ids, max_new_tokens):
    """Greedy decoding with a KV cache. Returns the new ids, what each step did, and each step's logits."""
    cache = model.new_cache(batch_size=1, max_len=len(prompt_ids) + max_new_tokens)  # sized to the request
    logits = model(torch.tensor([prompt_ids]), start_pos=0, cache=cache)  # prefill: (1, P, V)
    pos = len(prompt_ids)  # the next position to fill
    steps = [dict(fed=len(prompt_ids), start=0, filled=pos)]
    new_ids, step_logits = [], [logits[0, -1]]
    while True:
        next_id = int(logits[0, -1].argmax())  # greedy: temperature 0
        new_ids.append(next_id)
        if len(new_ids) == max_new_tokens:
            break
        logits = model(torch.tensor([[next_id]]), start_pos=pos, cache=cache)  # decode: (1, 1, V)
        steps.append(dict(fed=1, start=pos, filled=pos + 1))
        step_logits.append(logits[0, -1])
        pos += 1
    return new_ids, steps, torch.stack(step_logits), cache  # step_logits: (N, V)


prompt = "Once upon a time"
prompt_ids = tok.encode(prompt, bos=True)
new_ids, steps, step_logits, cache = my_generate(model, prompt_ids, 16 if FAST else 48)
print(repr(tok.decode(prompt_ids + new_ids)))

# Our loop is the package's greedy decoding (eos_id=None: do not stop at the end of a story).
assert new_ids == generate(model, prompt_ids, len(new_ids), temperature=0, eos_id=None)
''')

md("""
**Invariant: cached = uncached.** The logits of each decode step must equal those of one ordinary
forward pass over the whole sequence — the cache is only a way of not recomputing.
""")

code('''
with torch.inference_mode():
    full = model(torch.tensor([prompt_ids + new_ids]))[0]  # (P+N, V): no cache at all
P = len(prompt_ids)
uncached = full[P - 1: P - 1 + len(step_logits)]  # the logits that predicted each new token
err = (step_logits - uncached).abs().max().item()
print(f"max |cached - uncached| = {err:.2e}")
assert torch.allclose(step_logits, uncached, atol=1e-4)
''')

code('''
# What the cache looks like at every step: grey = already there, green = written by this step.
max_len = cache.max_len
grid = torch.zeros(len(steps), max_len)
for i, s in enumerate(steps):
    grid[i, : s["start"]] = 1
    grid[i, s["start"]: s["filled"]] = 2
per_token = calc.kv_cache_bytes_per_token(args, "float32")

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw=dict(width_ratios=[1.4, 1]))
ax1.imshow(grid, aspect="auto", cmap=plt.matplotlib.colors.ListedColormap(["white", "#bbbbbb", "#2ca02c"]),
           interpolation="nearest")
ax1.set_xlabel("cache position")
ax1.set_ylabel("step (0 = prefill)")
ax1.set_title(f"KV cache of {max_len} positions: prefill writes {P}, each decode step writes 1")
filled = [s["filled"] for s in steps]
ax2.plot(range(len(steps)), [f * per_token / 1024 for f in filled], "o-", ms=3)
ax2.set_xlabel("step")
ax2.set_ylabel("KiB of keys + values in use")
ax2.set_title(f"{per_token:,} bytes per position (float32, {args.n_layers} layers × {args.kv_heads} KV heads)")
plt.tight_layout()
plt.show()
''')

md("""
Per position, the cache grows by `2 · n_layers · n_kv_heads · head_dim · bytes`. For the real models
in bfloat16 at their full 4,096-token context:
""")

code('''
from llama2_lab.config import ModelArgs

for name in ["llama2-7b", "llama2-13b", "llama2-70b"]:
    a = ModelArgs.from_name(name)
    print(f"{name:11s} {a.attention_kind}: {calc.kv_cache_bytes_per_token(a) / 1024:6.0f} KiB per token, "
          f"{calc.human_bytes(calc.kv_cache_bytes(a, 4096)):>9s} for 4,096 tokens, "
          f"weights {calc.human_bytes(calc.weight_bytes(a))}")
print(f"this model   {args.attention_kind}: {calc.kv_cache_bytes_per_token(args, 'float32'):,} bytes per token (float32)")
''')

md("""
## 2. How fast? Tokens per second on this machine

Prefill processes *P* tokens in one batched pass, so it is fast per token; decoding does one token per
pass and, for big models, is limited by reading all the weights from memory once per token. We time
both with the package's `generate`, and a decode *without* the cache (rerunning the whole sequence
every step) to see what the cache buys. CUDA or MPS are measured too when present.
""")

code('''
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


@torch.inference_mode()
def speed(model, device, n_prompt, n_new):
    m = model if device.type == "cpu" else copy.deepcopy(model).to(device)
    ids = torch.tensor([data_ids[:n_prompt]], device=device)
    m(ids)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    m(ids)  # prefill alone
    sync(device)
    prefill = n_prompt / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    out = generate(m, ids[0].tolist(), n_new, temperature=0, eos_id=None)
    sync(device)
    decode = len(out) / (time.perf_counter() - t0)
    t0 = time.perf_counter()  # no cache: a full forward over everything for every new token
    seq = ids
    for _ in range(n_new):
        nxt = m(seq)[:, -1:].argmax(-1)
        seq = torch.cat([seq, nxt], dim=1)
    sync(device)
    nocache = n_new / (time.perf_counter() - t0)
    return prefill, decode, nocache


data_ids = tok.encode(" ".join(data.valid_stories(8)), bos=True)
devices = [torch.device("cpu")] + [pick_device()] * (pick_device().type != "cpu")
n_prompt, n_new = (64, 16) if FAST else (256, 128)
print(f"prompt {n_prompt} tokens, {n_new} new tokens, {torch.get_num_threads()} CPU threads")
for device in devices:
    pre, dec, nc = speed(model, device, n_prompt, n_new)
    print(f"{str(device):6s} prefill {pre:9,.0f} tok/s | decode with KV cache {dec:7,.0f} tok/s | "
          f"decode without cache {nc:6,.0f} tok/s")
''')

md("""
## 3. Sampling: temperature, top-k, top-p

The model gives logits; the sampler turns them into one token. Meta's reference code divides the
logits by the **temperature** (below 1 sharpens, above 1 flattens; 0 is greedy), takes the softmax and
then keeps the smallest set of most likely tokens whose probability adds up to **top-p** (nucleus
sampling), renormalised. Its defaults are temperature 0.6 and top-p 0.9. **Top-k** (keep the *k* most
likely) is the other common filter. Move the sliders: the chart shows the distribution after each step,
and the button draws a token from the last one (seeded, so a session replays exactly). The model runs
once per text; slider moves only re-filter the cached logits.
""")

code('''
# A prompt where several next tokens are plausible (after "Once upon a time" the model is sure of ",")
playground = SamplingPlayground(model, tok, "Once upon a time, there was a little", temperature=0.6, top_p=0.9,
                                seed=0)
playground
''')

md("""
The same thing from Python (what the widget calls). Each distribution sums to 1; top-k keeps *k*
tokens; temperature 0 always picks the most likely token.
""")

code('''
demo = SamplingPlayground(model, tok, "One day, a", temperature=1.0, top_k=0, top_p=1.0, seed=0)
d = demo.distributions
assert torch.allclose(d["raw"], d["top_p"])  # T = 1 and no filters: the raw softmax
demo.set(temperature=0.8, top_k=10, top_p=0.5)
d = demo.distributions
for name, p in d.items():
    assert abs(float(p.sum()) - 1) < 1e-5, name
assert int((d["top_k"] > 0).sum()) >= 10 and int((d["top_p"] > 0).sum()) <= int((d["top_k"] > 0).sum())
print("sampled:", repr(demo.sample(8)))
demo.set(temperature=0)
greedy = int(demo.logits().argmax())
demo.sample()
assert demo.ids[-1] == greedy
show(demo.figure)
''')

md("""
## 4. Streaming

`generate.stream` yields text as it is decoded, never half a UTF-8 character (a byte-fallback emoji
arrives as 4 tokens but is printed once, whole). The pieces continue the prompt exactly.
""")

code('''
n_stream = 40 if FAST else 150
pieces = []
print(prompt, end="")
for piece in stream(model, tok, prompt, n_stream, temperature=0.6, top_p=0.9, seed=1):
    print(piece, end="", flush=True)
    pieces.append(piece)
print()
same = generate(model, tok.encode(prompt, bos=True), n_stream, temperature=0.6, top_p=0.9, seed=1, tokenizer=tok)
assert "".join(pieces) == same.text  # streaming is the same generation, delivered piece by piece
''')

md("""
## 5. Real Llama 2 (or the tiny model)

Set the environment variable `LLAMA2_CHECKPOINT` before starting Jupyter to the folder of a real Llama 2
checkpoint (Meta's `consolidated.00.pth` + `params.json` + `tokenizer.model`, or a Hugging Face folder)
— e.g. `LLAMA2_CHECKPOINT=~/llama/llama-2-7b-chat jupyter lab`. The weights are yours; nothing is
downloaded here. Always look before you load: `checkpoint.info` reads only the headers, and the
memory estimate (weights + a full KV cache) says whether it fits. On a GPU the model is loaded in
bfloat16, the format it was trained in; the 7B model needs about 13.5 GB.
""")

code('''
if LLAMA2_CHECKPOINT:
    chat_path = os.path.expanduser(LLAMA2_CHECKPOINT)
    device = pick_device()  # cuda -> mps -> cpu
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
else:
    chat_path, device, dtype = path, torch.device("cpu"), torch.float32
meta = checkpoint.info(chat_path)
print(checkpoint.format_info(meta))
a = meta["args"]
dname = str(dtype).replace("torch.", "")
need = calc.inference_memory_bytes(a, dname, context=a.max_seq_len)
free = checkpoint.available_memory(device)
print(f"\\nneeds {calc.human_bytes(need)} on {device} in {dname}: weights {calc.human_bytes(calc.weight_bytes(a, dname))}"
      f" + KV cache {calc.human_bytes(calc.kv_cache_bytes(a, a.max_seq_len, 1, dname))} for {a.max_seq_len} tokens;"
      f" {calc.human_bytes(free) if free else 'unknown'} free")
''')

code('''
if LLAMA2_CHECKPOINT:
    t0 = time.perf_counter()
    chat_model = checkpoint.load_model(chat_path, device=device, dtype=dtype)
    chat_tok = checkpoint.load_tokenizer(chat_path, required=True)
    print(f"loaded in {time.perf_counter() - t0:.1f} s on {device}")
else:
    chat_model, chat_tok = model, tok
''')

md("""
Llama-2-chat wraps each user turn in `[INST] … [/INST]` and puts the system prompt inside the first
one between `<<SYS>>` and `<</SYS>>` (notebook 01). `chat` encodes the dialog exactly as Meta's code
does and generates until EOS. The shipped tiny model was only pretrained on stories — it has never seen
this format, so it answers with a story (notebook 09 fine-tunes it for chat). A real Llama-2-chat
answers properly.
""")

code('''
dialog = [
    {"role": "system", "content": "Always answer in one short sentence."},
    {"role": "user", "content": "Tell me about a cat who found a red ball."},
]
chat_ids = encode_dialog(chat_tok, dialog)
print(len(chat_ids), "prompt tokens:", chat_tok.pieces(chat_ids)[:16], "...")
t0 = time.perf_counter()
reply = chat(chat_model, chat_tok, dialog, max_new_tokens=32 if FAST else 128, seed=0)
print(f"[{time.perf_counter() - t0:.1f} s] assistant:", reply)
assert isinstance(reply, str)
''')

md("""
## 6. Looking inside: attention recorded during generation

`generate(..., record_attention=True)` keeps every layer's attention probabilities while it decodes:
the prefill gives the prompt's rows, each decode step adds one row. The result is, per layer, a full
lower-triangular `(n_heads, S, S)` matrix over prompt + generated tokens — exactly what a single
uncached forward would give (checked below). The explorer takes these tensors and the token strings,
never the model.

* **single head**: rows are query tokens, columns the tokens they attend to. The dashed orange lines
  separate the prompt from the generated tokens (orange labels). Pick a query token with the slider to
  read its row as shaded text.
* **all heads**: every head of a layer; heads that share a key/value head (GQA) share a frame colour.
* **whole network**: the maximum over all layers and heads, as in the paper's Figure 10.

Colours use a square-root scale so that small weights stay visible next to the large ones.
""")

code('''
story_prompt = tok.encode("Once upon a time, a little cat", bos=True)
g = generate(model, story_prompt, 24 if FAST else 60,
             temperature=0.6, top_p=0.9, seed=0, eos_id=None, record_attention=True)
story_ids = story_prompt + list(g)
story_tokens = tok.pieces(story_ids)
S = len(story_ids)

# Invariants: causal rows sum to 1, nothing attends to the future, and the attention recorded
# step by step on the KV cache equals one uncached forward over the whole text.
_, record = model.run_with_cache(torch.tensor([story_ids]))
for name, p in g.attention.items():  # p: (n_heads, S, S)
    assert torch.allclose(p.sum(-1), torch.ones(p.shape[:2]), atol=1e-4)
    assert torch.all(p.triu(1) == 0)
    assert torch.allclose(p, record[name][0], atol=1e-4), name

explorer = AttentionExplorer(g.attention, story_tokens, args.kv_heads, n_prompt=len(story_prompt),
                             title="story")
explorer
''')

md("""
The same views as static figures (they also show on GitHub): all heads of the last layer, and the
whole network.
""")

code('''
last = f"layers.{args.n_layers - 1}.attention.pattern"
show(heads_grid(g.attention[last], args.kv_heads, story_tokens, n_prompt=len(story_prompt),
                title=f"layer {args.n_layers - 1}"))
show(network_view(g.attention, tokens=story_tokens, n_prompt=len(story_prompt)))
''')

md("""
### A long text: more than 1,000 tokens

A full attention map of 1,000 tokens has a million cells per head — too many to draw one by one.
The explorer max-pools neighbouring tokens into at most 256 × 256 cells (a strong link survives
max-pooling; averaging would wash it out), so the image sent to the browser stays small however long
the text is. Hover the row text to read any token's exact weight.

The tiny model was trained on short sequences (its `max_seq_len`, printed at the top), so its
RoPE table stops there. RoPE itself is defined for any position, so we build the same model with a
longer table (same weights), run it on ~1,000 tokens of stories and let it generate a continuation.
Positions past the training length were never seen: look in the whole-network view for where the
patterns change. (Llama 2 was trained at 4,096 tokens, twice Llama 1's 2,048, §2.2; to see a real
model's long context, set `LLAMA2_CHECKPOINT`.)
""")

code('''
n_long, n_cont = 1000, (24 if FAST else 64)
long_ids = tok.encode("\\n".join(data.valid_stories(60)), bos=True)[:n_long]
assert len(long_ids) == n_long, "not enough story text"
long_model = Transformer(args.replace(max_seq_len=max(args.max_seq_len, n_long + n_cont))).eval()
long_model.load_state_dict(model.state_dict())  # the same weights; only the RoPE table is longer

lg = generate(long_model, long_ids, n_cont, temperature=0.6, top_p=0.9, seed=0, eos_id=None,
              record_attention=True)
long_tokens = tok.pieces(long_ids + list(lg))
print(f"{len(long_tokens)} tokens: {len(long_ids)} of stories + {len(lg)} generated")
long_explorer = AttentionExplorer(lg.attention, long_tokens, args.kv_heads, n_prompt=len(long_ids),
                                  title="long text")
long_explorer.set(view="network")
assert max(long_explorer.figure.axes[0].images[0].get_array().shape) <= 256  # binned
long_explorer
''')

md("""
## Exercises

**Exercise 1.** Some heads mostly look at the *previous* token. For every layer and head of the story
above, compute the mean attention weight from token *i* to token *i − 1* (the first sub-diagonal), find
the head where it is largest, and show that head's heatmap with `attention_heatmap`.
""")

code('''
# Solution
scores = {}
for name, p in g.attention.items():  # p: (n_heads, S, S)
    layer = int(name.split(".")[1])
    prev = p.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)  # (n_heads,) mean weight on token i-1
    for h in range(p.shape[0]):
        scores[(layer, h)] = float(prev[h])
best = max(scores, key=scores.get)
print(f"most previous-token-like: layer {best[0]}, head {best[1]} (mean weight {scores[best]:.2f})")
assert 0 <= scores[best] <= 1
show(attention_heatmap(g.attention[f"layers.{best[0]}.attention.pattern"][best[1]], story_tokens,
                       n_prompt=len(story_prompt), title=f"layer {best[0]}, head {best[1]}"))
''', tags=["solution"])

md("""
**Exercise 2.** Write nucleus (top-p) filtering yourself, for one distribution `probs` (V,): sort,
keep the most likely tokens until their mass reaches *p* (the most likely token is always kept), zero
the rest, renormalise. Check it against `filtered_distributions` for the playground's prompt.
""")

code('''
# Solution
def my_top_p(probs, p):
    sorted_p, order = probs.sort(descending=True)  # (V,), (V,)
    keep = sorted_p.cumsum(0) - sorted_p < p  # mass of the more likely tokens is still below p
    out = torch.zeros_like(probs)
    out[order[keep]] = sorted_p[keep]
    return out / out.sum()


logits = playground.logits()  # (V,) for the playground's current text, cached by the playground
for T, p in [(0.6, 0.9), (1.0, 0.5), (1.5, 0.95)]:
    ref = filtered_distributions(logits, T, None, p)["top_p"]
    mine = my_top_p(torch.softmax(logits / T, -1), p)
    assert torch.allclose(mine, ref, atol=1e-6), (T, p)
print("my_top_p matches the package")
''', tags=["solution"])

md("""
## Summary

* Generation = one **prefill** over the prompt + one **decode** step per new token on the KV cache;
  cached and uncached logits (and attention) agree.
* The cache costs `2 · n_layers · n_kv_heads · head_dim` numbers per token; GQA divides that by
  `n_heads / n_kv_heads`.
* Decoding one token at a time is much slower per token than prefill; without the cache it gets
  slower with every token.
* Temperature reshapes the distribution; top-k and top-p cut its tail. Meta's defaults: 0.6 and 0.9.
* Attention recorded during generation can be explored per head, per layer (grouped by KV head) and
  for the whole network (max over layers and heads, tokens binned: the paper's Figure 10 method,
  used again in notebook 09 for Ghost Attention).
""")

nb = new_notebook(cells=cells)
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.metadata["language_info"] = {"name": "python"}
OUT.parent.mkdir(parents=True, exist_ok=True)
tmp = OUT.with_suffix(".tmp")
nbformat.write(nb, str(tmp))
tmp.replace(OUT)
print("wrote", OUT, len(cells), "cells")
