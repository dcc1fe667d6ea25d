"""The ``llama2-lab`` command line: ``generate``, ``chat``, ``info``, ``family``.

Adding a subcommand takes one function and one line. In your module write

    def add_parser(subparsers) -> None:
        p = subparsers.add_parser("train", help="...", description="...")
        p.add_argument(...)
        p.set_defaults(run=run_train)      # run_train(args) -> exit code (int)

and append it to ``COMMANDS`` below; a module that has ``add_arguments(parser)`` and ``run(args)``
instead needs only ``subcommand("bench", "help text", add_arguments, run)`` there.
``add_model_args`` / ``add_sampling_args`` give the shared options. Raise ``CLIError`` (or any
ValueError / FileNotFoundError with a clear message) for a user mistake: ``main`` prints it as
``llama2-lab: error: ...`` and exits 2, with no traceback.
Heavy imports (torch, checkpoints) happen inside the commands so ``--help`` stays quick.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from .utils.validate import at_least

PROG = "llama2-lab"
EXIT_USAGE = 2  # argparse's code for a usage error; used for every user mistake
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


class CLIError(Exception):
    """A user mistake, printed as one line."""


class _Parser(argparse.ArgumentParser):
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


def _sampling(args) -> dict:
    """The sampling keyword arguments of ``generate``, checked before any model is loaded."""
    from .inference import check_sampling

    temperature = 0.0 if args.greedy else args.temperature
    check_sampling(temperature, args.top_k, args.top_p, args.seed)
    return dict(temperature=temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed)


def _load(args, check: Callable | None = None):
    """(model, tokenizer) from the checkpoint/--device/--dtype/--tokenizer arguments.

    ``check(tokenizer, model_args)``, if given, runs before the weights are read (the config comes
    from the checkpoint's headers), so a request that cannot work is refused before the slow part.
    """
    from pathlib import Path

    from . import formats
    from .inference import pick_device, resolve_dtype

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
            from .text.tokenizer import Tokenizer

            tokenizer = Tokenizer(tok_path)
        else:
            tokenizer = formats.load_tokenizer(tok_path, required=True)
    else:
        tokenizer = formats.load_tokenizer(path, required=True)
    if check is not None:
        check(tokenizer, formats.info(path)["args"])
    t0 = time.perf_counter()
    from .inference.parallel import launched_by_torchrun

    if launched_by_torchrun():  # `torchrun --nproc-per-node N -m llama2_lab.cli ...`: tensor parallel
        return _load_parallel(args, path, tokenizer, t0)
    model = formats.load_model(path, device=device, dtype=dtype)
    vocab = model.args.vocab_size
    if len(tokenizer) > vocab:
        raise CLIError(
            f"the tokenizer has {len(tokenizer)} pieces but the model's vocabulary is {vocab}: "
            "they do not belong together; pass the right one with --tokenizer."
        )
    _note(
        f"loaded {path} ({model.num_params():,} parameters, {str(dtype).removeprefix('torch.')}, {device}) "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return model, tokenizer


def _load_parallel(args, path, tokenizer, t0: float):
    """(model, tokenizer) split over the torchrun processes (parallel.py); only rank 0 prints."""
    import torch

    from .core.calc import human_bytes
    from .inference import parallel, resolve_dtype

    if getattr(args, "compile", False):
        raise CLIError("--compile is not supported under torchrun (tensor parallel); drop --compile.")
    ctx = parallel.init_distributed(args.device)
    parallel.quiet_other_ranks(ctx)
    dtype = resolve_dtype(args.dtype, ctx.device)
    model = parallel.load_parallel(path, ctx, dtype=dtype)
    # Every rank must draw the same token from the same logits: one seed for all (rank 0's if none given).
    torch.manual_seed(parallel.shared_seed(ctx, args.seed))
    held = parallel.rank_weight_bytes(model)
    _note(
        f"loaded {path} ({model.num_params():,} parameters, {str(dtype).removeprefix('torch.')}) split over "
        f"{ctx.world_size} process{'es' if ctx.world_size > 1 else ''} ({ctx.backend}, {ctx.device.type}): "
        f"{human_bytes(held['sharded'] + held['replicated'])} of {human_bytes(held['full'])} of weights per rank, "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return model, tokenizer


def _note(message: str) -> None:
    import os

    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for all
        return
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


# --- generate -----------------------------------------------------------------------------------
def run_generate(args) -> int:
    from .inference import stream
    from .text.tokenizer import check_text

    sampling = _sampling(args)
    check_text(args.prompt, "--prompt")
    model, tokenizer = _load(args)
    prompt = tokenizer.encode(args.prompt, bos=True)
    # The prompt is printed as the user wrote it; the stream continues its text (leading space kept).
    sys.stdout.write(args.prompt)
    sys.stdout.flush()
    t0 = time.perf_counter()
    pieces = stream(
        model, tokenizer, prompt, args.max_new_tokens, eos_id=tokenizer.eos_id, compile=args.compile, **sampling
    )
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    seconds = time.perf_counter() - t0
    sys.stdout.write("\n")
    sys.stdout.flush()
    n = len(pieces.tokens)
    _note(
        f"{n} tokens in {seconds:.2f} s ({n / max(seconds, 1e-9):.1f} tokens/s), prompt {len(prompt)} tokens, "
        f"stopped by {_REASONS[pieces.stop_reason]}"
    )
    return 0


_REASONS = {
    "eos": "end of sequence",
    "stop": "a stop string",
    "length": "--max-new-tokens",
    "context": "the end of the model's context (max_seq_len)",
}


def add_generate(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="continue a prompt, streaming the text",
        description="Continue --prompt with the model, streaming text to stdout; the token count and speed "
        "go to stderr. Sampling defaults are Meta's: temperature 0.6, top-p 0.9.",
    )
    add_model_args(p)
    p.add_argument("--prompt", default="", help="text to continue (default: empty, start from BOS)")
    add_sampling_args(p)
    p.add_argument(
        "--compile",
        action="store_true",
        help="decode with the fast path: static KV cache + torch.compile (CUDA graphs on a GPU); "
        "the first run pays the compile time",
    )
    p.set_defaults(run=run_generate)


# --- chat ----------------------------------------------------------------------------------------
def run_chat(args) -> int:
    from .inference import fit_dialog, stream
    from .inference.parallel import launched_by_torchrun
    from .text.chat import DialogError, encode_dialog, validate_dialog

    if launched_by_torchrun():  # every process would read its own lines of stdin and fall out of step
        raise CLIError("chat does not run under torchrun; use `generate` there, or chat in one process.")
    sampling = _sampling(args)
    if sys.stdin is None or sys.stdin.closed:
        raise CLIError(
            "stdin is closed, and chat reads one message per line from it: run it in a terminal "
            "or pipe the messages in (e.g. `echo hi | llama2-lab chat`)."
        )
    dialog = [{"role": "system", "content": args.system}] if args.system else []
    if dialog:  # tags or broken text in --system: refused now, not once per message
        try:
            validate_dialog(dialog + [{"role": "user", "content": ""}])
        except DialogError as err:
            raise CLIError(f"--system: {err}") from None

    def prompt_budget(max_seq_len: int) -> int:
        # Keep room for the answer: the prompt may take the context less the reply budget (at most half).
        return max_seq_len - min(max(args.max_new_tokens, 1), max_seq_len // 2)

    def check_system(tokenizer, model_args) -> None:
        n = len(encode_dialog(tokenizer, dialog + [{"role": "user", "content": ""}]))
        budget = prompt_budget(model_args.max_seq_len)
        if n >= budget:
            raise CLIError(
                f"--system takes {n} tokens with the chat template, but the prompt may use only "
                f"{budget} (max_seq_len {model_args.max_seq_len} less room for the reply), leaving "
                "none for your messages: shorten it, or lower --max-new-tokens."
            )

    model, tokenizer = _load(args, check_system if dialog else None)
    interactive = sys.stdin.isatty()
    max_seq_len = model.args.max_seq_len
    max_prompt = prompt_budget(max_seq_len)
    # Lines that are not UTF-8 arrive as lone surrogates and are refused one by one (check_text).
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")
    if interactive:
        print("Chat with the model; Ctrl-D to quit.", file=sys.stderr)
    while True:
        if interactive:
            sys.stdout.write("> ")
            sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:  # EOF
            if interactive:
                sys.stdout.write("\n")
            return 0
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        try:
            fitted, dropped = fit_dialog(tokenizer, dialog + [{"role": "user", "content": text}], max_prompt)
        except (DialogError, ValueError) as err:  # a tag in the message, or a message too long: skip it
            print(f"{PROG}: error: {err}", file=sys.stderr, flush=True)
            continue
        if dropped:
            _note(
                f"dropped the {dropped} oldest turn(s) so the dialog fits the context "
                f"({max_prompt} of max_seq_len={max_seq_len} tokens for the prompt)"
            )
        ids = encode_dialog(tokenizer, fitted)
        pieces = stream(model, tokenizer, ids, args.max_new_tokens, eos_id=tokenizer.eos_id, **sampling)
        reply = []
        for piece in pieces:
            if not reply:
                piece = piece[1:] if piece.startswith(" ") else piece  # "▁" after [/INST], as Meta's decode
            reply.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
        dialog = fitted + [{"role": "assistant", "content": "".join(reply)}]


def add_chat(subparsers) -> None:
    p = subparsers.add_parser(
        "chat",
        help="talk to a chat model in the Llama-2-chat format",
        description="An interactive Llama-2-chat loop ([INST] ... [/INST]). Reads one user message per line; "
        "through a pipe it answers each line of stdin and stops at EOF. When the dialog outgrows "
        "the context, the oldest turns are dropped (the system message stays).",
    )
    add_model_args(p)
    p.add_argument("--system", default=None, help="a system message, merged into the first user turn")
    add_sampling_args(p, max_new_tokens=256)
    p.set_defaults(run=run_chat)


# --- info, family ---------------------------------------------------------------------------------
def run_info(args) -> int:
    from . import formats

    print(formats.format_info(formats.info(args.path)))
    return 0


def add_info(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="describe a checkpoint without loading its weights",
        description="Format, configuration, parameter count, dtypes and files of a "
        "checkpoint, read from its headers only.",
    )
    p.add_argument("path", help="a checkpoint folder or llama2.c .bin file")
    p.set_defaults(run=run_info)


def run_family(args) -> int:
    from .core.calc import format_family_table

    print(format_family_table())
    return 0


def add_family(subparsers) -> None:
    p = subparsers.add_parser(
        "family",
        help="the Llama 1 and Llama 2 family: configs and exact parameter counts",
        description="The published Llama 1 and Llama 2 sizes with their configurations and exact parameter counts.",
    )
    p.set_defaults(run=run_family)


def subcommand(
    name: str,
    help: str,
    add_arguments: Callable[[argparse.ArgumentParser], object],
    run: Callable[[argparse.Namespace], int],
) -> Callable[[argparse._SubParsersAction], None]:
    """An entry for ``COMMANDS`` from a module's ``add_arguments(parser)`` and ``run(args) -> int``."""

    def add(subparsers) -> None:
        p = subparsers.add_parser(name, help=help, description=help)
        add_arguments(p)
        p.set_defaults(run=run)

    add.__name__ = f"add_{name}"
    return add


def _lazy(module: str, add: str, run: str) -> tuple[Callable, Callable]:
    """``add_arguments`` and ``run`` of a module that is imported only when that command is used or listed."""
    from importlib import import_module

    return (
        lambda p: getattr(import_module(f".{module}", __package__), add)(p),
        lambda a: getattr(import_module(f".{module}", __package__), run)(a),
    )


# One entry per subcommand, in the order --help lists them.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_generate,
    add_chat,
    add_info,
    add_family,
    subcommand(
        "train",
        "pretrain a tiny Llama 2 with the Llama 2 recipe (generated stories or --text FILE)",
        *_lazy("training.command", "add_train_arguments", "run_from_args"),
    ),
    subcommand(
        "gatt",
        "reproduce Ghost Attention in miniature: baseline SFT vs GAtt, trained and evaluated",
        *_lazy("experiments.gatt.command", "add_gatt_arguments", "run_from_args"),
    ),
    subcommand(
        "rlhf",
        "base -> chat in miniature: SFT, reward models, best-of-N, PPO with a KL penalty, DPO",
        *_lazy("experiments.rlhf.pipeline", "add_rlhf_arguments", "run_from_args"),
    ),
    subcommand(
        "bench",
        "benchmark decoding: the project's model (eager, compiled) next to Hugging Face",
        *_lazy("inference.bench", "add_bench_arguments", "run_from_args"),
    ),
    subcommand(
        "course",
        "instructor tools: write student copies of the notebooks without solutions",
        *_lazy("course.student", "add_course_arguments", "run_from_args"),
    ),
]


# --- entry point ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Llama 2, built piece by piece: run, chat, inspect.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in COMMANDS:
        add(subparsers)
    return parser


def _message(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror and err.filename:
        return f"{err.strerror}: {err.filename}"
    return str(err) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 2 user mistake, 130 Ctrl-C)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    except CLIError as err:  # a usage error: unknown option, bad value, a size below its minimum
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if not hasattr(args, "run"):  # no command given
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.run(args)
    except KeyboardInterrupt:
        sys.stdout.flush()
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `llama2-lab generate | head`: the reader left, nothing more to say
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (CLIError, ValueError, OSError) as err:  # user mistakes: bad path, checkpoint, arguments, device
        sys.stdout.flush()
        print(f"{PROG}: error: {_message(err)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
