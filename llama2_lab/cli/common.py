"""What the ``llama2-lab`` commands share: the program name and exit codes, ``CLIError`` (a user mistake, printed
as one line), the argparse ``Parser`` with one-line usage errors, the model and sampling options every
model-running command takes, loading the model and tokenizer they name (tensor parallel under torchrun), and
``note``, the one-line messages to stderr that only rank 0 prints."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from ..utils.validate import at_least

PROG = "llama2-lab"
EXIT_USAGE = 2  # argparse's code for a usage error; used for every user mistake
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


class CLIError(Exception):
    """A user mistake, printed as one line."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``llama2-lab: error: ...`` and exit 2 (the subcommands too,
    since argparse builds them with the parent's class)."""

    def error(self, message: str):
        raise CLIError(f"{message} (see `{self.prog} --help`)")


# --- shared options -------------------------------------------------------------------------------
def add_model_args(p: argparse.ArgumentParser) -> None:
    """checkpoint (optional, default: the shipped model), --device, --dtype, --threads, --tokenizer."""
    p.add_argument(
        "checkpoint",
        nargs="?",
        default=None,
        help="a checkpoint: project folder, Meta folder, Hugging Face folder or llama2.c .bin "
        "(default: the shipped model, assets/models/llama2-lab-tiny)",
    )
    p.add_argument(
        "--checkpoint",
        dest="checkpoint_option",
        default=None,
        metavar="PATH",
        help="the same checkpoint, given as an option (e.g. --checkpoint assets/models/llama2-lab-tiny-chat)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda, else mps, else cpu)")
    p.add_argument(
        "--dtype", default=None, help="fp32, bf16 or fp16 (default: bf16 on a GPU that supports it, else fp32)"
    )
    p.add_argument(
        "--threads",
        type=int,
        action=at_least(1),
        default=None,
        metavar="N",
        help="CPU threads for PyTorch (default: PyTorch's choice; 1 is often fastest for tiny models)",
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        metavar="PATH",
        help="the SentencePiece tokenizer.model, when it does not sit beside the checkpoint "
        "(e.g. tok512.model for a llama2.c stories260K.bin)",
    )


def add_sampling_args(p: argparse.ArgumentParser, max_new_tokens: int = 200) -> None:
    """--max-new-tokens, --temperature, --top-p, --top-k, --seed, --greedy."""
    p.add_argument(
        "--max-new-tokens",
        type=int,
        action=at_least(0),
        default=max_new_tokens,
        metavar="N",
        help=f"most tokens to generate (default {max_new_tokens}; the context may stop it sooner)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=0.6,
        help="softmax temperature; 0 = greedy (default 0.6, Meta's llama default)",
    )
    p.add_argument(
        "--top-p",
        type=float,
        default=0.9,
        help="nucleus sampling: keep the most likely tokens up to this mass (default 0.9, Meta's); 1 = off",
    )
    p.add_argument("--top-k", type=int, default=None, help="keep only the k most likely tokens (default: off)")
    p.add_argument("--seed", type=int, action=at_least(0), default=None, help="random seed, for reproducible sampling")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token (= --temperature 0)")


def sampling_options(args) -> dict:
    """The sampling keyword arguments of ``generate``, checked before any model is loaded."""
    from ..inference import check_sampling

    temperature = 0.0 if args.greedy else args.temperature
    check_sampling(temperature, args.top_k, args.top_p, args.seed)
    return dict(temperature=temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed)


def load_checkpoint(args, check: Callable | None = None):
    """(model, tokenizer) from the checkpoint/--device/--dtype/--tokenizer arguments.

    ``check(tokenizer, model_args)``, if given, runs before the weights are read (the config comes
    from the checkpoint's headers), so a request that cannot work is refused before the slow part.
    """
    from pathlib import Path

    from .. import formats
    from ..inference import pick_device, resolve_dtype

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    given = args.checkpoint_option or args.checkpoint
    if args.checkpoint_option and args.checkpoint and Path(args.checkpoint_option) != Path(args.checkpoint):
        raise CLIError(
            f"two checkpoints given ({args.checkpoint} and --checkpoint {args.checkpoint_option}); give one."
        )
    path = Path(given) if given else formats.default_model_path()
    if not path.exists():
        raise CLIError(f"checkpoint {path} does not exist.")
    if args.tokenizer:
        tok_path = Path(args.tokenizer)
        if not tok_path.exists():
            raise CLIError(f"tokenizer {tok_path} does not exist.")
        if tok_path.is_file():
            from ..text.tokenizer import Tokenizer

            tokenizer = Tokenizer(tok_path)
        else:
            tokenizer = formats.load_tokenizer(tok_path, required=True)
    else:
        tokenizer = formats.load_tokenizer(path, required=True)
    if check is not None:
        check(tokenizer, formats.info(path)["args"])
    t0 = time.perf_counter()
    from ..inference.parallel import launched_by_torchrun

    if launched_by_torchrun():  # `torchrun --nproc-per-node N -m llama2_lab.cli ...`: tensor parallel
        return _load_parallel(args, path, tokenizer, t0)
    model = formats.load_model(path, device=device, dtype=dtype)
    vocab = model.args.vocab_size
    if len(tokenizer) > vocab:
        raise CLIError(
            f"the tokenizer has {len(tokenizer)} pieces but the model's vocabulary is {vocab}: "
            "they do not belong together; pass the right one with --tokenizer."
        )
    note(
        f"loaded {path} ({model.num_params():,} parameters, {str(dtype).removeprefix('torch.')}, {device}) "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return model, tokenizer


def _load_parallel(args, path, tokenizer, t0: float):
    """(model, tokenizer) split over the torchrun processes (parallel.py); only rank 0 prints."""
    import torch

    from ..core.calc import human_bytes
    from ..inference import parallel, resolve_dtype

    if getattr(args, "compile", False):
        raise CLIError("--compile is not supported under torchrun (tensor parallel); drop --compile.")
    ctx = parallel.init_distributed(args.device)
    parallel.quiet_other_ranks(ctx)
    dtype = resolve_dtype(args.dtype, ctx.device)
    model = parallel.load_parallel(path, ctx, dtype=dtype)
    # Every rank must draw the same token from the same logits: one seed for all (rank 0's if none given).
    torch.manual_seed(parallel.shared_seed(ctx, args.seed))
    held = parallel.rank_weight_bytes(model)
    note(
        f"loaded {path} ({model.num_params():,} parameters, {str(dtype).removeprefix('torch.')}) split over "
        f"{ctx.world_size} process{'es' if ctx.world_size > 1 else ''} ({ctx.backend}, {ctx.device.type}): "
        f"{human_bytes(held['sharded'] + held['replicated'])} of {human_bytes(held['full'])} of weights per rank, "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return model, tokenizer


def note(message: str) -> None:
    import os

    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for all
        return
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
