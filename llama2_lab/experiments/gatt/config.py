"""What a GAtt run is: ``GattConfig``, its presets (fast, ship, full), the arms and where models go."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ...utils.paths import MODELS_DIR


@dataclass
class GattConfig:
    """Everything `run_pipeline` depends on; PRESETS holds the full run, the shipped run and CI's."""

    mode: str = "sampled"  # "sampled" (the paper: the model's own replies, rejection
    # sampled) or "oracle" (deterministic rewritten replies, faster)
    base: str | None = None  # pretrained model folder; None = the shipped llama2-lab-tiny
    sft_steps: int = 720  # stage 1: shared chat SFT (plain chat + instruction examples)
    sft_dialogues: int = 11520  # stage 1's own dialogues: 720 x 16, so no sequence repeats (with
    # 3,000 it memorised them, train loss 0.02, instead of copying)
    attribute_boost: float = 0.8  # training dialogues: share of turns that ask for the persona's name
    # when one is set (evaluation keeps dialogs' 0.4); more examples of copying a value out of the
    # system message
    stage1: str | None = None  # a stage-1 model folder to start from instead of training one
    seeds: tuple[int, ...] = (0, 1, 2)
    n_dialogues: int = 320  # training dialogues; each gives one shared + one arm sequence
    max_turns: int = 20  # training dialogue lengths 1..max_turns: as deep as the evaluation goes
    max_train_tokens: int = 1024  # longer training sequences lose their last turns (= the context)
    steps: int = 160  # stage 2: each arm, from the stage-1 model
    batch_size: int = 16
    lr: float = 5e-4  # stage 1; stage 2 uses lr2. Low on purpose: at 1.5e-3 the chat
    # fine-tune overwrote the base's name-copying circuit (held-out
    # names 0 % at turn 1 after 720 steps); at 5e-4 it reused it (0.82)
    lr2: float = 5e-4  # stage 2, each arm (at 1e-3 the arms lost stage 1's copying: deep-turn
    # GAtt 0.28 at 3e-4, 0.36 at 5e-4, from the same stage-1 model)
    gatt_loss: str = "all"  # GAtt sequences: the loss on "all" accepted replies (the paper's last-reply
    # loss on every prefix of the dialogue at once; see `gatt_sequence`) or on the "last" one only. At a
    # reduced size (240 + 80 steps, 60 dialogues x 12 turns, one seed) "all" kept 0.21 of the checks at
    # turns 8-12 against "last"'s 0.09, from the same data
    n_candidates: int = 3  # rejection sampling: candidates per turn
    temperature: float = 0.8
    fallback: bool = True  # a turn where no candidate passes takes the oracle reply (counted)
    eval_dialogues: int = 200  # per arm and seed, held-out values
    eval_turns: int = 20  # the paper's Table 30 asks up to turn 20
    combo_dialogues: int = 50  # the held-out combination (caps + start word)
    probe_dialogues: int = 60
    probe_turns: tuple[int, ...] = (1, 2, 4, 8, 12, 16, 20)
    attn_dialogues: int = 24
    max_new: int = 64  # the longest oracle reply is 57 tokens (capitals are spelled letter by letter;
    # "QUACK! ONCE, A LITTLE BEAR ... , JASPER."): a shorter cap cuts right replies and fails them
    context: int = 1024  # max_seq_len of the chat models: the base was pretrained on 1024-token rows
    threads: int | None = None
    out_dir: str | None = None  # None = assets/models beside the package
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    # What the issue asks for: 3 seeds, 200 held-out dialogues x 12 turns per arm and seed.
    "full": GattConfig(),
    # The run that made the shipped models: the full recipe and evaluation size, one seed.
    "ship": GattConfig(seeds=(0,)),
    # CI: about 2 minutes on one core, one seed, short dialogues; shows the gap at turns 2-8 (GAtt
    # 0.09-0.25 of the checks, baseline 0 from turn 2), not the full run's numbers.
    "fast": GattConfig(
        seeds=(0,),
        n_dialogues=64,
        max_turns=6,
        max_train_tokens=224,
        sft_steps=120,
        sft_dialogues=960,
        steps=60,
        batch_size=8,
        lr=2e-3,
        lr2=1e-3,
        n_candidates=2,
        eval_dialogues=24,
        eval_turns=8,
        combo_dialogues=8,
        probe_dialogues=12,
        probe_turns=(1, 4, 8),
        attn_dialogues=4,
        max_new=24,
        context=1024,
    ),
}


ARMS = ("baseline", "gatt", "upper")


ARM_FOLDERS = {"baseline": "llama2-lab-tiny-chat", "gatt": "llama2-lab-tiny-chat-gatt"}


ARM_LABELS = {"baseline": "baseline SFT", "gatt": "+ GAtt", "upper": "instruction repeated in every message"}


def _models_dir(cfg: GattConfig) -> Path:
    return Path(cfg.out_dir) if cfg.out_dir else MODELS_DIR
