"""The two-arm experiment: a shared chat SFT stage, then baseline and GAtt with the same budget,
evaluated on held-out dialogues, seed by seed (``llama2-lab gatt``)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch

from ...corpora import dialogues as dlg
from ...training.sft import Seq, train_sft, with_context
from .chats import run_chats
from .config import ARM_FOLDERS, ARMS, GattConfig, _models_dir
from .evaluate import adherence_records, attention_map, attention_to_system, content_records, probe_plain_history
from .report import write_report
from .sampling import sample_gatt_replies
from .sequences import _fit_turns, baseline_sequence, encode_turns, gatt_sequence, plain_sequence

SAMPLING_CONTEXT_FACTOR = 3  # the sampler's RoPE table, in multiples of cfg.context (see run_pipeline)


def _bar(cfg: GattConfig, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not cfg.progress, leave=False)


def training_dialogues(cfg: GattConfig, seed: int, stage: int = 2) -> list[dlg.Dialogue]:
    """The pool a stage trains on: stage 1's own sft_dialogues, or stage 2's n_dialogues, which
    the baseline and the GAtt arm share (the spares GAtt draws on are `training_dialogues(.., 3)`)."""
    first, n = {1: (10_000, cfg.sft_dialogues), 2: (11_000, cfg.n_dialogues), 3: (20_000, cfg.n_dialogues)}[stage]
    return dlg.dialogues(first + seed, n, cfg.max_turns, attribute_boost=cfg.attribute_boost)


def baseline_set(tok, cfg: GattConfig, seed: int, stage: int = 2) -> tuple[list[Seq], list[Seq]]:
    """The shared plain-chat sequences and the baseline's instruction sequences, one each per pool
    dialogue. Half of the baseline's are single-turn; the rest put the instruction in a later
    turn after plain history, so the baseline obeys an instruction wherever it can see it.
    Stage 1 (the shared chat SFT) and stage 2 (the arms) draw different dialogues."""
    rng = random.Random(seed + 1000 * (stage - 1))
    pool = training_dialogues(cfg, seed, stage)
    shared = [
        _fit_turns(lambda n, d=d: plain_sequence(tok, d, n), len(d.questions), cfg.max_train_tokens)[0] for d in pool
    ]
    base = []
    for d in pool:
        t = 1 if rng.random() < 0.5 or len(d.questions) == 1 else rng.randint(2, len(d.questions))
        base.append(_fit_turns(lambda n, d=d: baseline_sequence(tok, d, n), t, cfg.max_train_tokens)[0])
    return shared, base


def gatt_set(tok, cfg: GattConfig, seed: int, make_replies=None) -> tuple[list[Seq], dict]:
    """The GAtt sequences for the same pool dialogues (spares replace those whose first turn found
    no accepted reply). `make_replies(dialogues) -> replies per dialogue`; None = the oracle."""
    pool, spares = training_dialogues(cfg, seed, 2), training_dialogues(cfg, seed, 3)
    make = make_replies or (lambda ds: [d.oracle_replies() for d in ds])
    gatt, kept_turns, asked_turns, used = [], 0, 0, 0
    for source in (pool, spares):
        need = cfg.n_dialogues - len(gatt)
        if need <= 0:
            break
        cut = []  # each dialogue shortened to what fits max_train_tokens (judged with oracle replies)
        for d in source if source is pool else source[: 2 * need + 8]:
            _, n = _fit_turns(
                lambda n, d=d: gatt_sequence(tok, d, d.oracle_replies()[:n]), len(d.questions), cfg.max_train_tokens
            )
            cut.append(dlg.Dialogue(d.constraints, d.terse, d.questions[:n]))
        for d, rs in zip(cut, make(cut)):
            used += 1
            asked_turns += len(d.questions)
            kept_turns += len(rs)
            if rs and len(gatt) < cfg.n_dialogues:
                gatt.append(
                    _fit_turns(
                        lambda n, d=d, rs=rs: gatt_sequence(tok, d, rs[:n], cfg.gatt_loss),
                        len(rs),
                        cfg.max_train_tokens,
                    )[0]
                )
    if len(gatt) < cfg.n_dialogues:
        raise RuntimeError(
            f"only {len(gatt)} of {cfg.n_dialogues} dialogues got an accepted first reply: "
            "the sampling model does not follow instructions; train the baseline longer."
        )
    stats = {"dialogues_sampled": used, "turns_asked": asked_turns, "turns_kept": kept_turns}
    return gatt, stats


def load_base(cfg: GattConfig):
    """The pretrained model with its context extended to cfg.context, its tokenizer, and the
    context it was pretrained with."""
    from ...formats import default_model_path, load_model, load_tokenizer

    path = Path(cfg.base) if cfg.base else default_model_path()
    model = load_model(path)
    return with_context(model, cfg.context), load_tokenizer(path, required=True), model.args.max_seq_len


def turns_past(tok, dialogues, replies, sys_every: bool, context: int) -> list[int]:
    """Per turn k (index k-1): how many of the chats had passed `context` tokens by the end of turn k."""
    n_turns = max(len(r) for r in replies)
    past = [0] * n_turns
    for d, rs in zip(dialogues, replies):
        users = [q.text for q in d.questions[: len(rs)]]
        ids, _ = encode_turns(tok, d.system, users, rs, sys_turns=range(len(rs)) if sys_every else (0,))
        bos = [i for i, t in enumerate(ids) if t == tok.bos_id][1:] + [len(ids)]  # where each turn ends
        for k, end in enumerate(bos):
            past[k] += end > context
    return past


def evaluate_arms(models: dict, tok, cfg: GattConfig, seed: int, arms=ARMS) -> dict:
    """Adherence@k (free-running, greedy) for the three arms on held-out values and the held-out
    combination; the plain-history probe and the attention metrics for baseline and GAtt."""
    test = dlg.dialogues(30_000 + seed, cfg.eval_dialogues, cfg.eval_turns, "test", min_turns=cfg.eval_turns)
    combo = dlg.dialogues(40_000 + seed, cfg.combo_dialogues, cfg.eval_turns, "heldout_combo", min_turns=cfg.eval_turns)
    out: dict = {"free": {}, "combo": {}, "probe": {}, "attention": {}}
    setups = {"baseline": ("baseline", False), "gatt": ("gatt", False), "upper": ("baseline", True)}
    # A free-running chat that talks long (or the upper arm's repeated system messages, about twice as
    # long) may pass the trained context: it goes on with a longer RoPE table (same weights), and the
    # turns that end past cfg.context are counted (`past_context`) so the card can say how many there were.
    long = {m: with_context(models[m], SAMPLING_CONTEXT_FACTOR * cfg.context) for m in {setups[a][0] for a in arms}}
    for arm in arms:
        model, every = long[setups[arm][0]], setups[arm][1]
        with _bar(cfg, (len(test) + len(combo)) * cfg.eval_turns, f"seed {seed}: evaluate {arm}") as bar:
            for name, ds in (("free", test), ("combo", combo)):
                replies = run_chats(model, tok, ds, cfg.eval_turns, every, cfg.max_new, progress=bar)
                out[name][arm] = {
                    "records": adherence_records(ds, replies),
                    "content": content_records(ds, replies),
                    "past_context": turns_past(tok, ds, replies, every, cfg.context),
                    "example": {
                        "system": ds[0].system,
                        "questions": [q.text for q in ds[0].questions],
                        "replies": replies[0],
                    },
                }
    probe_ds = test[: cfg.probe_dialogues]
    turns = [k for k in cfg.probe_turns if k <= cfg.eval_turns]
    for arm in [a for a in arms if a != "upper"]:
        out["probe"][arm] = probe_plain_history(long[arm], tok, probe_ds, turns, cfg.max_new)
        out["attention"][arm] = attention_to_system(long[arm], tok, test[: cfg.attn_dialogues], cfg.eval_turns)
    return out


def _log_seed(seed: int, result: dict, cfg: GattConfig, elapsed: float) -> None:
    """One line per arm once a seed is evaluated: adherence at turn 1 and deep, content accuracy."""
    import sys

    from .evaluate import pooled_rate

    K = cfg.eval_turns
    for arm, r in result["free"].items():
        spans = [(1, 1), (min(8, K), min(12, K))] + ([(13, K)] if K >= 13 else [])
        adh = ", ".join(
            f"k={k0}{'' if k0 == k1 else f'-{k1}'} {pooled_rate(r['records'], k0, k1)[0]:.2f}" for k0, k1 in spans
        )
        content = pooled_rate(r["content"], 1, K)[0]
        print(
            f"seed {seed} {arm:8s} adherence {adh}; content k=1-{K} {content:.2f} ({elapsed / 60:.1f} min)",
            file=sys.stderr,
            flush=True,
        )


def _fig_dialogue(cfg: GattConfig) -> dlg.Dialogue:
    """The Figure 10 dialogue: a persona and a terse style, then questions incl. "what is your name?"."""
    rng = random.Random(7)
    cs = (dlg.Constraint("persona", "Clara"), dlg.Constraint("brief"))
    qs = [dlg.make_question(rng, k) for k in ("greet", "color", "math", "legs", "story", "name", "color", "name")]
    return dlg.Dialogue(cs, False, qs[: min(len(qs), cfg.eval_turns)])


def run_pipeline(cfg: GattConfig, limits: str = "") -> dict:
    """Train baseline and GAtt for every seed, evaluate, save seed 0's models, figures and cards."""
    import copy

    from ...formats import save_model

    if cfg.mode not in ("sampled", "oracle"):
        raise ValueError(f"mode must be 'sampled' or 'oracle', got {cfg.mode!r}.")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.time()
    base, tok, base_context = load_base(cfg)
    per_seed, times, kept, ships = {}, {}, {}, {}
    stage1_model = None
    for seed in cfg.seeds:
        t = {}
        # Stage 1, shared by both arms: ordinary chat SFT (Llama 2 §3.1), the "latest model" that
        # GAtt samples from. The arms then continue from it with the same budget (GAtt was applied
        # after RLHF V3 in the paper; here the arms continue from the same chat model). It is trained once,
        # with the first seed, and shared by all seeds: the seeds vary what the comparison is about
        # (the arms' data, the sampled GAtt replies, the training order, the evaluation dialogues).
        s0 = time.time()
        if cfg.stage1:
            from ...formats import load_model

            start = with_context(load_model(cfg.stage1), cfg.context)
        elif cfg.sft_steps:
            if stage1_model is None:
                stage1_model = copy.deepcopy(base)
                shared1, base1 = baseline_set(tok, cfg, cfg.seeds[0], stage=1)
                with _bar(cfg, cfg.sft_steps, f"stage 1, chat SFT (seed {cfg.seeds[0]}, shared)") as bar:
                    train_sft(
                        stage1_model, shared1 + base1, cfg.sft_steps, cfg.batch_size, cfg.lr, cfg.seeds[0], progress=bar
                    )
            start = stage1_model  # read only below: sampling, and deep copies for the arms
        else:
            start = base
        t["stage1"] = time.time() - s0
        lr2 = cfg.lr2 if (cfg.sft_steps or cfg.stage1) else cfg.lr
        shared, base_seqs = baseline_set(tok, cfg, seed)
        models = {}
        s0 = time.time()
        make, sample_stats = None, {}
        if cfg.mode == "sampled":
            # GAtt step 1 puts the instruction on every user message, so the sampling chats run up to
            # about twice as long as the training sequences (which keep it in turn 1 only): the sampler
            # gets a longer RoPE table, and what it samples there is checked like any other reply.
            sampler_model = with_context(start, SAMPLING_CONTEXT_FACTOR * cfg.context)

            def make(ds, seed=seed, sampler_model=sampler_model, sample_stats=sample_stats):
                with _bar(cfg, sum(len(d.questions) for d in ds), f"seed {seed}: sample GAtt replies") as bar:
                    return sample_gatt_replies(
                        sampler_model,
                        tok,
                        ds,
                        cfg.n_candidates,
                        cfg.temperature,
                        cfg.max_new,
                        seed,
                        progress=bar,
                        fallback=cfg.fallback,
                        stats=sample_stats,
                    )

        gseqs, stats = gatt_set(tok, cfg, seed, make)
        stats.update(sample_stats)
        kept[seed] = stats
        t["make_gatt_data"] = time.time() - s0
        for arm, seqs in (("baseline", shared + base_seqs), ("gatt", shared + gseqs)):
            s0 = time.time()
            models[arm] = copy.deepcopy(start)
            with _bar(cfg, cfg.steps, f"seed {seed}: train {arm}") as bar:
                train_sft(models[arm], seqs, cfg.steps, cfg.batch_size, lr2, seed, progress=bar)
            t["train_" + arm] = time.time() - s0
            if seed == cfg.seeds[0]:  # saved now, so a crash later does not lose the training
                save_model(models[arm], _models_dir(cfg) / ARM_FOLDERS[arm], tok)
        s0 = time.time()
        per_seed[seed] = evaluate_arms(models, tok, cfg, seed)
        t["evaluate"] = time.time() - s0
        if cfg.progress:
            _log_seed(seed, per_seed[seed], cfg, time.time() - t0)
        times[seed] = t
        if seed == cfg.seeds[0]:
            fig_d = _fig_dialogue(cfg)
            ships = {arm: models[arm] for arm in ("baseline", "gatt")}
            maps = {arm: attention_map(models[arm], tok, fig_d, fig_d.oracle_replies()) for arm in ("baseline", "gatt")}
            mean_tokens = {
                "shared": sum(len(s[0]) for s in shared) / len(shared),
                "baseline": sum(len(s[0]) for s in base_seqs) / len(base_seqs),
                "gatt": sum(len(s[0]) for s in gseqs) / len(gseqs),
            }
    return write_report(
        cfg, tok, per_seed, ships, maps, times, kept, mean_tokens, base_context, (time.time() - t0) / 60, limits
    )
