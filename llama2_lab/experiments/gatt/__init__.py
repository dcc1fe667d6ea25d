"""Ghost Attention (GAtt) in miniature: data synthesis, fine-tuning, multi-turn evaluation [P2 §3.3].

GAtt changes the fine-tuning *data* and *loss mask*, never the architecture. From a dialogue
[u1, a1, ..., un, an] and an instruction `inst` (corpora/dialogues.py), the paper's steps are:

  1. concatenate `inst` to every user message;
  2. sample the replies from the latest model and keep those a reward accepts (here: several
     candidates per turn, the checker of corpora/dialogues.py as a 0/1 reward: rejection sampling);
  3. drop `inst` from every user message but the first (in Llama-2-chat format it then sits in
     the system slot of turn 1);
  4. zero the loss on every token but the last reply (and its EOS), and fine-tune.

Here every reply of a sampled dialogue passed the checker, so the shipped run (`GattConfig.gatt_loss="all"`)
applies step 4 to every prefix of the dialogue at once: the loss on all the accepted replies.

This module builds those sequences with `text/chat.py`, fine-tunes the pretrained model into a chat model
(stage 1, shared), continues it into two arms with the same budget (baseline SFT vs GAtt; GAtt came
after ordinary fine-tuning in the paper too), and measures what the paper shows in Table 30 and
Figure 10: instruction adherence at turn k, free-running, and how much the decision positions of
turn k attend to the system message. Pipeline: `run_pipeline(config)`; CLI: `llama2-lab gatt`.

Reading order: sequences -> chats (batched chat decoding on a KV cache) -> sampling (rejection
sampling) -> `training.sft.train_sft` -> evaluate -> pipeline; report writes figures and cards;
command is `llama2-lab gatt`.
"""

from ...inference.chat_batch import ChatBatch
from ...training.sft import Seq, collate, masked_loss, train_sft, with_context
from .chats import reply_to, run_chats
from .command import add_gatt_arguments, config_from_args, main, run_from_args
from .config import ARM_FOLDERS, ARM_LABELS, ARMS, PRESETS, GattConfig
from .evaluate import (
    adherence_records,
    adherence_table,
    attention_map,
    attention_to_system,
    content_records,
    decision_positions,
    format_attention,
    format_table,
    headline,
    pooled_rate,
    probe_plain_history,
    span_share,
    summarize,
    system_span,
    wilson,
)
from .pipeline import baseline_set, evaluate_arms, gatt_set, load_base, run_pipeline, training_dialogues
from .report import COLORS, plot_adherence, plot_attention_maps, plot_attention_share, write_card, write_report
from .sampling import ModelSampler, accept, choose, rejection_sample, sample_gatt_replies
from .sequences import baseline_sequence, encode_turns, gatt_sequence, plain_sequence

__all__ = [
    "encode_turns",
    "plain_sequence",
    "baseline_sequence",
    "gatt_sequence",
    "ChatBatch",
    "run_chats",
    "reply_to",
    "accept",
    "choose",
    "rejection_sample",
    "ModelSampler",
    "sample_gatt_replies",
    "wilson",
    "adherence_records",
    "adherence_table",
    "probe_plain_history",
    "system_span",
    "decision_positions",
    "span_share",
    "attention_to_system",
    "attention_map",
    "summarize",
    "headline",
    "content_records",
    "pooled_rate",
    "format_table",
    "format_attention",
    "GattConfig",
    "PRESETS",
    "ARMS",
    "ARM_FOLDERS",
    "ARM_LABELS",
    "training_dialogues",
    "baseline_set",
    "gatt_set",
    "load_base",
    "evaluate_arms",
    "run_pipeline",
    "COLORS",
    "plot_adherence",
    "plot_attention_share",
    "plot_attention_maps",
    "write_card",
    "write_report",
    "add_gatt_arguments",
    "config_from_args",
    "run_from_args",
    "main",
    "Seq",
    "collate",
    "masked_loss",
    "train_sft",
    "with_context",
]

# Helpers the notebook and tests reach into (not part of the public API).
from .chats import _decode, _turn_ids  # noqa: E402, F401
from .config import _models_dir  # noqa: E402, F401
from .pipeline import _fig_dialogue  # noqa: E402, F401
from .sequences import _fit_turns  # noqa: E402, F401
