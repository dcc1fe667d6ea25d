"""The whole miniature, base model to RLHF, as one command: `llama2-lab rlhf [--fast]`.

Steps, in the paper's order [P2 §3.1–3.2]:
  1. SFT the pretrained tiny model on generated demonstrations (loss on answers only), plus the two
     ablations the SFT notebook discusses: loss on every token, and a share of wrong answers in the data;
  2. train a helpfulness and a safety reward model from the SFT model (ranking loss with the "small"
     margins of Table 27; optionally without margins, for comparison), measure accuracy per rating;
  3. fit the combination's whitening on the SFT model's own replies; best-of-N curves (Figure 7) at
     several temperatures (Figure 8);
  4. PPO (clipped surrogate, no critic) from the SFT model against the combined reward, for each β;
  5. DPO (Rafailov et al. 2023, a later method) on the helpfulness pairs, for contrast.
Writes `llama2-lab-tiny-sft`, `llama2-lab-tiny-rm-helpful`, `llama2-lab-tiny-rm-safety` (bf16) into the
output folder, a `results.json` with every number in the SFT folder, and a MODEL_CARD.md in each.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from ...corpora import preferences as prefs
from ...training import reward, rlhf
from ...training.sft import train_sft
from ...utils.paths import MODELS_DIR

SFT_DIR, RM_H_DIR, RM_S_DIR = "llama2-lab-tiny-sft", "llama2-lab-tiny-rm-helpful", "llama2-lab-tiny-rm-safety"


@dataclass
class RlhfConfig:
    """Everything `run_rlhf` depends on (PRESETS: "ship" made the shipped models, "fast" is CI's size)."""

    base: str | None = None  # pretrained model folder; None = the shipped llama2-lab-tiny
    sft_from: str | None = None  # an SFT folder written by this pipeline: reuse it and its SFT results
    seed: int = 0
    sft_examples: int = 1200  # demonstrations (the paper: 27,540 annotations [P2 §3.1])
    sft_epochs: int = 2  # as the paper
    sft_batch: int = 16
    sft_lr: float = 5e-4  # the paper's 2e-5 is for 7B-70B; a 5M model moves at 5e-4 (as the GAtt chat models do)
    ablations: bool = True  # also train: loss on every token; a share of wrong answers
    ablation_wrong: tuple[float, ...] = (0.5,)
    eval_prompts: int = 64
    rm_pairs: int = 960  # helpfulness pairs for training (safety: half)
    rm_test_pairs: int = 300
    rm_epochs: int = 1  # one epoch, as the paper
    rm_batch: int = 16
    rm_lr: float = 1e-4
    margins: str = "small"
    margin_ablation: bool = False  # also a helpfulness RM without margins, for the comparison
    bon_prompts: int = 16
    bon_n: int = 16
    bon_temperatures: tuple[float, ...] = (0.7, 1.0, 1.3)
    ppo_prompts: int = 400
    betas: tuple[float, ...] = (0.0, 0.01, 0.1)
    ppo: rlhf.PPOConfig = field(
        default_factory=lambda: rlhf.PPOConfig(iterations=24, batch_size=16, minibatch=8, lr=1e-4)
    )
    ppo_eval_every: int = 0
    dpo_steps: int = 40
    dpo_beta: float = 0.1
    max_new: int = 32
    threads: int | None = 1
    out_dir: str | None = None  # None = assets/models beside the package
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "ship": RlhfConfig(),
    "fast": RlhfConfig(
        sft_examples=320,
        ablations=False,
        eval_prompts=24,
        rm_pairs=192,
        rm_test_pairs=96,
        margin_ablation=False,
        bon_prompts=4,
        bon_n=8,
        bon_temperatures=(1.0,),
        ppo_prompts=32,
        betas=(0.0, 0.01),
        ppo=rlhf.PPOConfig(iterations=2, batch_size=8, minibatch=4, lr=5e-5),
        ppo_eval_every=0,
        dpo_steps=2,
        max_new=24,
    ),
}


def models_dir(cfg: RlhfConfig) -> Path:
    return Path(cfg.out_dir) if cfg.out_dir else MODELS_DIR


def _bar(cfg: RlhfConfig, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not cfg.progress, leave=False)


def sft_steps(cfg: RlhfConfig) -> int:
    return cfg.sft_epochs * cfg.sft_examples // cfg.sft_batch


def train_sft_model(base, tok, cfg: RlhfConfig, masked: bool = True, wrong_share: float = 0.0, desc: str = "SFT"):
    """A copy of base fine-tuned on `sft_examples` demonstrations. -> (model, losses)."""
    model = rlhf.copy_model(base)
    seqs = rlhf.sft_sequences(tok, prefs.sft_examples(cfg.seed + 1, cfg.sft_examples, wrong_share), masked)
    with _bar(cfg, sft_steps(cfg), desc) as bar:
        losses = train_sft(model, seqs, sft_steps(cfg), cfg.sft_batch, cfg.sft_lr, cfg.seed, progress=bar)
    return model, losses


def judge(model, tok, prompts, cfg: RlhfConfig) -> tuple[dict, list[str]]:
    """Greedy replies to prompts, judged by the hidden preference."""
    s = rlhf.sample_replies(model, tok, prompts, 1, 0.0, 1.0, cfg.max_new)
    return rlhf.evaluate_replies(prompts, s.texts), s.texts


def run_rlhf(cfg: RlhfConfig | str = "ship") -> dict:
    """Run every step; write the three model folders and results.json. -> the results dict."""
    from ...formats import default_model_path, load_model, load_tokenizer

    cfg = PRESETS[cfg] if isinstance(cfg, str) else cfg
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.time()
    times: dict[str, float] = {}
    base_path = Path(cfg.base) if cfg.base else default_model_path()
    base, tok = load_model(base_path, dtype=torch.float32), load_tokenizer(base_path, required=True)
    eval_ps = prefs.prompts(cfg.seed + 900, cfg.eval_prompts)
    res: dict = {"config": cfg.to_dict(), "sft": {}, "examples": {}}

    # 1. SFT and its ablations ------------------------------------------------------------------------
    if cfg.sft_from:  # reuse step 1 of an earlier run (its model and its measurements)
        prev = json.loads((Path(cfg.sft_from) / "results.json").read_text())
        sft = load_model(cfg.sft_from, dtype=torch.float32)
        for key in ("sft", "sft_losses", "examples"):
            res[key] = prev[key]
        res["sft"]["sft"].pop("reward", None)
        sft_replies = judge(sft, tok, eval_ps, cfg)[1]
        times["sft"] = prev["times"]["sft"]
    else:
        res["sft"]["base"], base_replies = judge(base, tok, eval_ps, cfg)
        sft, losses = train_sft_model(base, tok, cfg)
        res["sft"]["sft"], sft_replies = judge(sft, tok, eval_ps, cfg)
        res["sft_losses"] = losses
        res["examples"] = [
            {"prompt": p.text, "base": b, "sft": s} for p, b, s in list(zip(eval_ps, base_replies, sft_replies))[:8]
        ]
        if cfg.ablations:
            m, _ = train_sft_model(base, tok, cfg, masked=False, desc="SFT, loss on every token")
            res["sft"]["sft_unmasked"] = judge(m, tok, eval_ps, cfg)[0]
            for w in cfg.ablation_wrong:
                m, _ = train_sft_model(base, tok, cfg, wrong_share=w, desc=f"SFT, {w:.0%} wrong")
                res["sft"][f"sft_wrong_{w}"] = judge(m, tok, eval_ps, cfg)[0]
            del m
        times["sft"] = time.time() - t0

    # 2. Reward models ------------------------------------------------------------------------------
    t1 = time.time()
    rms, res["rm"] = {}, {}
    specs = [("helpfulness", cfg.margins), ("safety", cfg.margins)] + (
        [("helpfulness", "none")] if cfg.margin_ablation else []
    )
    for kind, margins in specs:
        n = cfg.rm_pairs if kind == "helpfulness" else cfg.rm_pairs // 2
        train = prefs.make_pairs(cfg.seed + (10 if kind == "helpfulness" else 20), n, kind)
        test = prefs.make_pairs(cfg.seed + (11 if kind == "helpfulness" else 21), cfg.rm_test_pairs, kind)
        rm = reward.reward_model_from(sft)
        steps = cfg.rm_epochs * (len(train) // cfg.rm_batch)
        with _bar(cfg, steps, f"{kind} RM, margins {margins}") as bar:
            rm_losses = reward.train_reward_model(
                rm, tok, train, margins, cfg.rm_epochs, cfg.rm_batch, cfg.rm_lr, cfg.seed, progress=bar
            )
        rc, rr = reward.pair_scores(rm, tok, test)
        res["rm"][f"{kind}/{margins}"] = {
            "accuracy": reward.accuracy_by_rating(rc, rr, test),
            "losses": rm_losses,
            "train_pairs": len(train),
            "test_pairs": len(test),
        }
        if margins == cfg.margins:
            # anchor σ(score) = 0.5 at the mean score of the pairs' replies (the level is arbitrary)
            res["rm"][f"{kind}/{margins}"]["calibration_shift"] = reward.calibrate(
                rm, tok, [p.prompt for p in train] * 2, [p.chosen for p in train] + [p.rejected for p in train]
            )
            rms[kind] = rm
    times["reward_models"] = time.time() - t1

    # 3. Combined reward, best-of-N ------------------------------------------------------------------
    t1 = time.time()
    combined = reward.CombinedReward(rms["helpfulness"], rms["safety"], tok)
    ref_ps = prefs.prompts(cfg.seed + 700, max(64, cfg.bon_prompts))
    ref_s = rlhf.sample_replies(sft, tok, ref_ps, 1, 1.0, 1.0, cfg.max_new, seed=cfg.seed)
    combined.fit_whitening(ref_ps, ref_s.texts)
    res["whitening"] = {"mean": combined.mean, "std": combined.std}
    bon_ps = prefs.prompts(cfg.seed + 800, cfg.bon_prompts)
    res["best_of_n"] = {}
    for temp in cfg.bon_temperatures:
        with _bar(cfg, cfg.bon_prompts * cfg.bon_n, f"best-of-{cfg.bon_n} at T={temp}") as bar:
            s = rlhf.sample_replies(
                sft, tok, bon_ps, cfg.bon_n, temp, 1.0, cfg.max_new, seed=cfg.seed + 1, progress=bar
            )
        learned = combined(s.all_prompts(), s.texts).view(cfg.bon_prompts, cfg.bon_n)
        true = torch.tensor([prefs.true_reward(p, t) for p, t in zip(s.all_prompts(), s.texts)]).view(
            cfg.bon_prompts, cfg.bon_n
        )
        curve = rlhf.best_of_n_curve(learned)
        pick = rlhf.best_of_n(learned)
        curve["true_of_best"] = [
            float(true[torch.arange(cfg.bon_prompts), rlhf.best_of_n(learned[:, :n])].mean()) for n in curve["n"]
        ]
        curve["true_mean"] = float(true.mean())
        curve["example"] = {
            "prompt": bon_ps[0].text,
            "replies": s.texts[: cfg.bon_n],
            "rewards": learned[0].tolist(),
            "best": int(pick[0]),
        }
        res["best_of_n"][str(temp)] = curve
    times["best_of_n"] = time.time() - t1

    # 4. PPO for each β -----------------------------------------------------------------------------
    t1 = time.time()
    rl_ps = prefs.prompts(cfg.seed + 600, cfg.ppo_prompts)
    res["ppo"] = {}
    for beta in cfg.betas:
        policy = rlhf.copy_model(sft)
        pcfg = replace(cfg.ppo, beta=beta, seed=cfg.seed, max_new=cfg.max_new)
        with _bar(cfg, pcfg.iterations, f"PPO β={beta}") as bar:
            hist = rlhf.run_ppo(
                policy,
                sft,
                tok,
                rl_ps,
                combined,
                pcfg,
                progress=bar,
                eval_prompts=eval_ps,
                eval_every=cfg.ppo_eval_every,
            )
        final, texts = judge(policy, tok, eval_ps, cfg)
        final["reward"] = float(combined(eval_ps, texts).mean())
        res["ppo"][str(beta)] = {
            "history": hist,
            "final": final,
            "examples": [{"prompt": p.text, "reply": t} for p, t in list(zip(eval_ps, texts))[:8]],
        }
    sft_eval = res["sft"]["sft"]
    sft_eval["reward"] = float(combined(eval_ps, sft_replies).mean())
    times["ppo"] = time.time() - t1

    # 5. DPO, the later contrast ---------------------------------------------------------------------
    t1 = time.time()
    dpo = rlhf.copy_model(sft)
    with _bar(cfg, cfg.dpo_steps, "DPO") as bar:
        dpo_losses = rlhf.train_dpo(
            dpo,
            sft,
            tok,
            prefs.make_pairs(cfg.seed + 10, cfg.rm_pairs),
            cfg.dpo_steps,
            beta=cfg.dpo_beta,
            seed=cfg.seed,
            progress=bar,
        )
    final, texts = judge(dpo, tok, eval_ps, cfg)
    final["reward"] = float(combined(eval_ps, texts).mean())
    res["dpo"] = {"losses": dpo_losses, "final": final}
    times["dpo"] = time.time() - t1
    times["total"] = time.time() - t0
    res["times"] = times
    res["hardware"] = {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }

    out = models_dir(cfg)
    write_outputs(out, cfg, tok, sft, rms, res)
    return res


def write_outputs(out: Path, cfg: RlhfConfig, tok, sft, rms: dict, res: dict) -> None:
    from ...formats import save_model
    from ...utils.io import atomic_write_text
    from .report import write_cards

    save_model(sft, out / SFT_DIR, tok, dtype=torch.bfloat16)
    reward.save_reward_model(rms["helpfulness"], out / RM_H_DIR, tok)
    reward.save_reward_model(rms["safety"], out / RM_S_DIR, tok)
    atomic_write_text(out / SFT_DIR / "results.json", json.dumps(res, indent=1) + "\n")
    write_cards(out, res)


def add_rlhf_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`llama2-lab rlhf` options."""
    ap.add_argument("--fast", action="store_true", help="CI size (under a minute of CPU), not the shipped run")
    ap.add_argument("--out", default=None, help="output folder (default: assets/models)")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: on a busy machine more threads wait on each other)"
    )
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--sft-from", default=None, help="reuse this SFT folder (and its SFT results) instead of step 1")
    return ap


def run_from_args(a: argparse.Namespace) -> int:
    """Train the SFT model and both reward models, run best-of-N, PPO and DPO; print the headline."""
    cfg = replace(
        PRESETS["fast" if a.fast else "ship"],
        out_dir=a.out,
        threads=a.threads,
        progress=not a.no_progress,
        sft_from=a.sft_from,
    )
    res = run_rlhf(cfg)
    print(
        json.dumps(
            {
                "sft": {k: round(v["accuracy"], 3) for k, v in res["sft"].items()},
                "times_s": {k: round(v) for k, v in res["times"].items()},
            },
            indent=1,
        )
    )
    return 0


def main(argv=None) -> int:
    """`python -m llama2_lab.experiments.rlhf.pipeline`, the same as `llama2-lab rlhf`."""
    ap = argparse.ArgumentParser(prog="llama2-lab rlhf", description=__doc__.split("\n")[0])
    return run_from_args(add_rlhf_arguments(ap).parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
