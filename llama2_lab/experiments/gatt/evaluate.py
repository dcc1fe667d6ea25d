"""Measuring adherence: per-turn rates with Wilson intervals, the plain-history probe, and how much
attention the reply pays to the system span (the paper's Figure 10)."""

from __future__ import annotations

import math

import torch

from ...corpora import dialogues as dlg
from ...inference.chat_batch import ChatBatch
from ...text import chat
from .chats import _decode
from .config import ARMS, GattConfig
from .sequences import encode_turns


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
    """Proportion k/n with its Wilson 95 % interval -> (p, low, high); (nan, nan, nan) when n = 0."""
    if n == 0:
        return (float("nan"),) * 3
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return p, max(0.0, mid - half), min(1.0, mid + half)


def adherence_records(dialogues, replies) -> list[tuple[int, str, bool]]:
    """(turn k 1-based, family, obeyed) for every applicable constraint at every turn."""
    rec = []
    for d, rs in zip(dialogues, replies):
        for k, (q, r) in enumerate(zip(d.questions, rs), start=1):
            rec += [(k, fam, ok) for fam, ok in dlg.check_reply(d.constraints, q, r).items()]
    return rec


def content_records(dialogues, replies) -> list[tuple[int, str, bool]]:
    """(turn k 1-based, question kind, answered right) for every turn: does the model still answer
    while it follows the instruction (`answer_correct`)?"""
    rec = []
    for d, rs in zip(dialogues, replies):
        for k, (q, r) in enumerate(zip(d.questions, rs), start=1):
            rec.append((k, q.kind, dlg.answer_correct(q, r, d.constraints)))
    return rec


def pooled_rate(records, lo: int, hi: int) -> tuple[float, float, float, int]:
    """The share of records at turns lo..hi that are True, with its Wilson interval -> (p, low, high, n)."""
    oks = [ok for k, _, ok in records if lo <= k <= hi]
    return (*wilson(sum(oks), len(oks)), len(oks))


def adherence_table(records, n_turns: int) -> dict[str, list[dict]]:
    """{"pooled" and each family: [{k, n, p, low, high}, ...] for k = 1..n_turns}."""
    fams = ["pooled"] + sorted({f for _, f, _ in records})
    table = {}
    for fam in fams:
        rows = []
        for k in range(1, n_turns + 1):
            oks = [ok for kk, f, ok in records if kk == k and (fam == "pooled" or f == fam)]
            p, lo, hi = wilson(sum(oks), len(oks))
            rows.append({"k": k, "n": len(oks), "p": p, "low": lo, "high": hi})
        table[fam] = rows
    return table


@torch.no_grad()
def probe_plain_history(
    model, tok, dialogues, turns: list[int], max_new: int = 40, batch_size: int = 64
) -> list[tuple[int, str, bool]]:
    """Reply k with earlier replies teacher-forced *plain*: the instruction is recoverable only from
    the system message, not by copying the style of earlier replies. -> adherence records."""
    rec = []
    for k in turns:
        ds = [d for d in dialogues if len(d.questions) >= k]
        for start in range(0, len(ds), batch_size):
            part = ds[start : start + batch_size]
            prompts = [
                encode_turns(tok, d.system, [q.text for q in d.questions[:k]], d.plain_replies()[: k - 1])[0]
                for d in part
            ]
            cb = ChatBatch(model, len(part), max(map(len, prompts)) + max_new + 1, tok.eos_id)
            for d, ids in zip(part, cb.reply(cb.feed(prompts), max_new)):
                q = d.questions[k - 1]
                rec += [(k, f, ok) for f, ok in dlg.check_reply(d.constraints, q, _decode(tok, ids)).items()]
    return rec


def system_span(tok, d: dlg.Dialogue) -> tuple[int, int]:
    """Token positions [lo, hi) of "<<SYS>> ... <</SYS>>" in the encoded dialogue (BOS is position 0,
    so it is never inside)."""
    text = chat.render_dialog(
        [{"role": "system", "content": d.system}, {"role": "user", "content": d.questions[0].text}]
    )[0]
    a, b = text.index("<<SYS>>"), text.index("<</SYS>>") + len("<</SYS>>")
    pos = [i + 1 for i, (_, s, e) in enumerate(tok.encode_with_offsets(text)) if s < b and e > a]
    return min(pos), max(pos) + 1


def decision_positions(tok, d: dlg.Dialogue, replies: list[str]) -> list[tuple[int, int]]:
    """Per turn, the two query positions where the reply is decided: the last token of [/INST]
    (predicts the first reply token: caps, start word, persona) and the last content token of the
    reply (predicts what ends it: the end word, or the final "▁" and EOS)."""
    out, offset = [], 0
    for k in range(len(replies)):
        ids, mask = encode_turns(tok, d.system, [d.questions[k].text], [replies[k]], sys_turns=(0,) if k == 0 else ())
        first = mask.index(1)
        # the reply ends "... ▁ EOS": the last content token is 3 before the end
        out.append((offset + first - 1, offset + len(ids) - 3))
        offset += len(ids)
    return out


def span_share(pattern: torch.Tensor, lo: int, hi: int, q: int) -> tuple[float, float]:
    """Attention of query q on keys [lo, hi): pattern (n_heads, S) -> (share, lift), the share being
    the max over heads of the summed probability, the lift share / ((hi - lo) / (q + 1)), i.e.
    relative to uniform attention over the q + 1 visible keys (paper Figure 10 shows head averages and
    all-token averages hide the effect)."""
    share = float(pattern[:, lo:hi].sum(-1).max())
    return share, share / ((hi - lo) / (q + 1))


@torch.no_grad()
def attention_to_system(model, tok, dialogues, n_turns: int) -> dict:
    """Share of attention on the system span at the decision positions of turn k, max over heads,
    per layer, teacher-forced with plain history; and its lift over uniform causal attention
    (span length / (q + 1)). -> {"share": [layer][k-1], "lift": [layer][k-1]} averaged over dialogues."""
    L = model.args.n_layers
    share = torch.zeros(L, n_turns)
    lift = torch.zeros(L, n_turns)
    count = torch.zeros(n_turns)
    for d in dialogues:
        n = min(n_turns, len(d.questions))
        replies = d.plain_replies()[:n]
        ids, _ = encode_turns(tok, d.system, [q.text for q in d.questions[:n]], replies)
        lo, hi = system_span(tok, d)
        rec: dict = {}
        model(torch.tensor([ids]), record=rec)
        for k, qs in enumerate(decision_positions(tok, d, replies)):
            for q in qs:
                for layer in range(L):
                    s, li = span_share(rec[f"layers.{layer}.attention.pattern"][0, :, q], lo, hi, q)
                    share[layer, k] += s / len(qs)
                    lift[layer, k] += li / len(qs)
            count[k] += 1
    c = count.clamp(min=1)
    return {"share": (share / c).tolist(), "lift": (lift / c).tolist(), "dialogues": int(count[0])}


@torch.no_grad()
def attention_map(model, tok, d: dlg.Dialogue, replies: list[str], bin_size: int = 8) -> dict:
    """Figure 10's picture: attention over a whole dialogue, max over layers and heads, neighbouring
    tokens binned (max within bins). -> {"map": (T/bin, T/bin) list, "system": [lo, hi) in bins, "turns": bin starts}."""
    ids, _ = encode_turns(tok, d.system, [q.text for q in d.questions[: len(replies)]], replies)
    rec: dict = {}
    model(torch.tensor([ids]), record=rec)
    att = torch.stack([rec[f"layers.{i}.attention.pattern"][0] for i in range(model.args.n_layers)])
    m = att.amax(dim=(0, 1))  # (T, T)
    T = m.shape[0]
    nb = math.ceil(T / bin_size)
    pad = torch.zeros(nb * bin_size, nb * bin_size)
    pad[:T, :T] = m
    binned = pad.view(nb, bin_size, nb, bin_size).amax(dim=(1, 3))  # (nb, nb)
    lo, hi = system_span(tok, d)
    bos = [i for i, t in enumerate(ids) if t == tok.bos_id]
    return {
        "map": binned.tolist(),
        "system": [lo // bin_size, math.ceil(hi / bin_size)],
        "turns": [b // bin_size for b in bos],
        "bin": bin_size,
    }


def summarize(per_seed: dict, cfg: GattConfig) -> dict:
    """Pool the seeds' records into tables with Wilson intervals; per-seed pooled curves too."""
    K = cfg.eval_turns
    summary: dict = {"turns": K, "seeds": list(per_seed)}
    for split in ("free", "combo"):
        summary[split] = {
            arm: adherence_table([r for s in per_seed.values() for r in s[split][arm]["records"]], K) for arm in ARMS
        }
        summary[split + "_content"] = {
            arm: adherence_table([r for s in per_seed.values() for r in s[split][arm]["content"]], K) for arm in ARMS
        }
        if all("past_context" in s[split][arm] for s in per_seed.values() for arm in ARMS):
            n = {arm: sum(_n_dialogues(s[split][arm]) for s in per_seed.values()) for arm in ARMS}
            summary[split + "_past_context"] = {  # share of the chats past cfg.context by the end of turn k
                arm: [sum(s[split][arm]["past_context"][k] for s in per_seed.values()) / n[arm] for k in range(K)]
                for arm in ARMS
            }
        summary[split + "_per_seed"] = {
            arm: {
                str(seed): [row["p"] for row in adherence_table(s[split][arm]["records"], K)["pooled"]]
                for seed, s in per_seed.items()
            }
            for arm in ARMS
        }
    summary["probe"] = {
        arm: adherence_table([r for s in per_seed.values() for r in s["probe"][arm]], K) for arm in ("baseline", "gatt")
    }
    att = {}
    for arm in ("baseline", "gatt"):
        att[arm] = {
            m: torch.tensor([s["attention"][arm][m] for s in per_seed.values()]).mean(0).tolist()
            for m in ("share", "lift")
        }
    summary["attention"] = att
    return summary


def _n_dialogues(result: dict) -> int:
    """The dialogues one arm was evaluated on in one seed: its content records of turn 1 count them."""
    return sum(1 for k, _, _ in result["content"] if k == 1)


def headline(summary: dict, lo: int = 8, hi: int = 12) -> dict:
    """The targets' numbers: turn-1 adherence, and pooled adherence over turns lo..hi, per arm."""
    out = {}
    for arm in ARMS:
        rows = summary["free"][arm]["pooled"]
        deep = [r for r in rows if lo <= r["k"] <= hi]
        k = sum(r["p"] * r["n"] for r in deep if r["n"])
        n = sum(r["n"] for r in deep)
        out[arm] = {"turn1": rows[0]["p"], f"turns{lo}-{hi}": wilson(round(k), n)}
    return out


def format_table(summary: dict, split: str = "free", fams: bool = True) -> str:
    """Markdown table of adherence@k: pooled per arm, then per family for baseline and GAtt."""
    K = summary["turns"]
    head = "| arm | family | " + " | ".join(f"k={k}" for k in range(1, K + 1)) + " |\n"
    head += "|---|---|" + "---|" * K + "\n"
    lines = []

    def cell(r):
        return "–" if not r["n"] else f"{r['p']:.2f} [{r['low']:.2f}, {r['high']:.2f}] n={r['n']}"

    for arm in ARMS if split != "probe" else ("baseline", "gatt"):
        table = summary[split][arm]
        for fam in ["pooled"] + ([f for f in table if f != "pooled"] if fams and arm != "upper" else []):
            lines.append(f"| {arm} | {fam} | " + " | ".join(cell(r) for r in table[fam]) + " |")
    return head + "\n".join(lines) + "\n"


def format_attention(summary: dict) -> str:
    K = summary["turns"]
    att = summary["attention"]
    head = "| arm | layer | " + " | ".join(f"k={k}" for k in range(1, K + 1)) + " |\n|---|---|" + "---|" * K + "\n"
    lines = []
    for arm in ("baseline", "gatt"):
        for layer, (sh, li) in enumerate(zip(att[arm]["share"], att[arm]["lift"])):
            lines.append(f"| {arm} | {layer} | " + " | ".join(f"{s:.2f} ({l:.1f}×)" for s, l in zip(sh, li)) + " |")
    return head + "\n".join(lines) + "\n"
