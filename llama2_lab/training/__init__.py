"""Training with the Llama 2 recipe: pretraining from scratch and supervised fine-tuning with masks.

config    TrainConfig and its presets
recipe    the LR schedule, AdamW parameter groups and the seeded batch order (one copy for all)
data      documents -> tokenizer -> packed rows
pretrain  the loop, evaluation and atomic, exactly resumable checkpoints
probes    a sample, whether a model copies names from its context, its loss by position, sums and capitals
sft       fine-tuning on (ids, loss mask) sequences
command   ``llama2-lab train``
"""

from .checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    load_checkpoint,
    plot_loss_curve,
    save_checkpoint,
    save_loss_curve,
    save_result,
)
from .command import add_train_arguments, config_from_args, main, run_from_args
from .config import PRESETS, TrainConfig, TrainError
from .data import TrainData, prepare_data
from .pretrain import TrainResult, evaluate, loss_on, resolve_device, train
from .probes import (
    loss_by_position,
    name_copy_scores,
    name_token_ids,
    repeated_token_losses,
    sample_text,
    shout_loss,
    sum_accuracy,
)
from .recipe import batch_indices, cosine_lr, data_position, lr_at, make_optimizer, param_groups, step_indices
from .sft import Seq, collate, masked_loss, train_sft, with_context

__all__ = [
    "add_train_arguments",
    "config_from_args",
    "main",
    "run_from_args",
    "PRESETS",
    "TrainConfig",
    "TrainError",
    "TrainData",
    "prepare_data",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "TrainResult",
    "evaluate",
    "load_checkpoint",
    "loss_on",
    "plot_loss_curve",
    "resolve_device",
    "save_checkpoint",
    "save_loss_curve",
    "save_result",
    "train",
    "loss_by_position",
    "name_copy_scores",
    "name_token_ids",
    "repeated_token_losses",
    "sample_text",
    "shout_loss",
    "sum_accuracy",
    "batch_indices",
    "cosine_lr",
    "data_position",
    "lr_at",
    "make_optimizer",
    "param_groups",
    "step_indices",
    "Seq",
    "collate",
    "masked_loss",
    "train_sft",
    "with_context",
]

from .data import _documents  # noqa: E402, F401  (tests reach into these)
from .recipe import _rows_from  # noqa: E402, F401
