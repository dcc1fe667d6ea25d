"""Reading the tweak lab's results: per-arm statistics over seeds (``summarize``), whether two arms differ beyond
the seed-to-seed noise (``compare``), a plain-text table (``format_table``) and the mean curve with its band
over seeds (``mean_curve``)."""

from __future__ import annotations

import math

from .runs import RunResult


def _stats(values: list[float]) -> dict:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return {"mean": mean, "sd": sd, "min": min(values), "max": max(values), "n": n}


def summarize(results: dict[str, list[RunResult]], metric: str = "val_loss") -> list[dict]:
    """One row per arm: mean, sd, min, max over seeds of a metric ("val_loss", or a probe name such as
    "loss_beyond"), with params, KV bytes per token and how many seeds diverged or could not be measured."""
    rows = []
    for label, runs in results.items():
        values = [_metric(r, metric) for r in runs]
        ok = [v for v in values if v is not None]
        row = {
            "arm": label,
            "metric": metric,
            "params": runs[0].params,
            "kv_bytes_per_token": runs[0].kv_bytes_per_token,
            "seeds": len(runs),
            "diverged": sum(r.diverged_at is not None for r in runs),
            "missing": len(values) - len(ok),
            "note": next((r.probes.get("beyond_note", "") for r in runs if r.probes.get("beyond_note")), ""),
        }
        row.update(_stats(ok) if ok else {"mean": None, "sd": None, "min": None, "max": None, "n": 0})
        rows.append(row)
    return rows


def _metric(r: RunResult, metric: str) -> float | None:
    return r.val_loss if metric == "val_loss" else r.probes.get(metric)


def compare(results: dict[str, list[RunResult]], a: str, b: str, metric: str = "val_loss") -> dict:
    """Is arm b different from arm a beyond the seed-to-seed noise?

    A rule of thumb for a handful of seeds, not a significance test: the difference counts as clear
    when the seeds' ranges do not overlap and the mean difference exceeds three times the larger
    seed standard deviation. Otherwise the verdict is that this run cannot tell the arms apart.
    The verdict also lists the differences seed by seed (both arms with the same seed see the same
    batches): one sign in every seed is worth noticing even when the rule says "cannot tell".
    """
    sa, sb = (next(r for r in summarize({k: results[k]}, metric)) for k in (a, b))
    if sa["n"] == 0 or sb["n"] == 0:
        gone = a if sa["n"] == 0 else b
        return {
            "a": a,
            "b": b,
            "diff": None,
            "noise": None,
            "clear": False,
            "verdict": f"{gone} has no {metric} to compare (it diverged or could not be measured).",
        }
    diff = sb["mean"] - sa["mean"]
    sds = [s for s in (sa["sd"], sb["sd"]) if s is not None and math.isfinite(s)]
    noise = max(sds) if sds else 0.0
    apart = sb["min"] > sa["max"] or sa["min"] > sb["max"]
    clear = apart and abs(diff) > 3 * noise and sa["n"] > 1 and sb["n"] > 1
    by_seed = {r.seed: _metric(r, metric) for r in results[a]}
    paired = [
        _metric(r, metric) - by_seed[r.seed]
        for r in results[b]
        if by_seed.get(r.seed) is not None and _metric(r, metric) is not None
    ]
    if clear:
        word = "higher" if diff > 0 else "lower"
        verdict = (
            f"{b} is {word} than {a} by {abs(diff):.3f} ({metric}), beyond the seed-to-seed spread "
            f"(sd up to {noise:.3f} over {sa['n']} and {sb['n']} seeds)."
        )
    else:
        verdict = (
            f"{b} vs {a}: {diff:+.3f} ({metric}), within the seed-to-seed spread (sd up to "
            f"{noise:.3f}): this run cannot tell them apart."
        )
    if len(paired) > 1:
        verdict += " Seed by seed: " + ", ".join(f"{d:+.3f}" for d in paired) + "."
    return {"a": a, "b": b, "diff": diff, "noise": noise, "clear": clear, "paired": paired, "verdict": verdict}


def format_table(rows: list[dict], digits: int = 3) -> str:
    """The summary as a plain-text table: arm, mean ± sd (min..max) over seeds, params, KV bytes/token."""
    head = f"{'arm':<28} {rows[0]['metric'] if rows else '':>24}   {'seeds':>5} {'params':>9} {'KV B/token':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["n"]:
            sd = "" if r["n"] < 2 else f" ± {r['sd']:.{digits}f}"
            val = f"{r['mean']:.{digits}f}{sd}"
        else:
            val = "diverged" if r["diverged"] else "n/a"
        extra = f"  ({r['diverged']} diverged)" if r["diverged"] and r["n"] else ""
        lines.append(
            f"{r['arm']:<28} {val:>24}   {r['seeds']:>5} {r['params']:>9,} {r['kv_bytes_per_token']:>10,}{extra}"
        )
    return "\n".join(lines)


def mean_curve(runs: list[RunResult], key: str = "val_loss") -> tuple[list[int], list[float], list[float], list[float]]:
    """Steps where every seed has a value, and the mean, min and max over seeds there (for a band plot)."""
    per_seed = [{row["step"]: row[key] for row in r.history if row.get(key) is not None} for r in runs]
    steps = sorted(set.intersection(*(set(s) for s in per_seed))) if per_seed else []
    mean = [sum(s[t] for s in per_seed) / len(per_seed) for t in steps]
    lo = [min(s[t] for s in per_seed) for t in steps]
    hi = [max(s[t] for s in per_seed) for t in steps]
    return steps, mean, lo, hi
