"""The ``llama2-lab`` command line: ``main`` (the entry point), the parser and ``COMMANDS``, the registry of
subcommands. ``generate``, ``chat``, ``info`` and ``family`` live in the modules beside this one (``generate``,
``chat``, ``info``), with the options and checkpoint loading they share in ``common``; ``train``, ``gatt``,
``rlhf``, ``bench`` and ``course`` live in their own layers and are imported only when used or listed.

Adding a subcommand takes one function and one line. In your module write

    def add_parser(subparsers) -> None:
        p = subparsers.add_parser("train", help="...", description="...")
        p.add_argument(...)
        p.set_defaults(run=run_train)      # run_train(args) -> exit code (int)

and append it to ``COMMANDS`` below; a module that has ``add_arguments(parser)`` and ``run(args)``
instead needs only ``subcommand("bench", "help text", add_arguments, run)`` there.
``add_model_args`` / ``add_sampling_args`` (``common``) give the shared options. Raise ``CLIError`` (or any
ValueError / FileNotFoundError with a clear message) for a user mistake: ``main`` prints it as
``llama2-lab: error: ...`` and exits 2, with no traceback.
Heavy imports (torch, checkpoints) happen inside the commands so ``--help`` stays quick.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .chat import add_chat, run_chat
from .common import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PROG,
    CLIError,
    Parser,
    add_model_args,
    add_sampling_args,
)
from .generate import add_generate, run_generate
from .info import add_family, add_info, run_family, run_info

__all__ = [
    "COMMANDS",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "PROG",
    "CLIError",
    "add_chat",
    "add_family",
    "add_generate",
    "add_info",
    "add_model_args",
    "add_sampling_args",
    "build_parser",
    "main",
    "run_chat",
    "run_family",
    "run_generate",
    "run_info",
    "subcommand",
]


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
        lambda p: getattr(import_module(f"..{module}", __package__), add)(p),
        lambda a: getattr(import_module(f"..{module}", __package__), run)(a),
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
    parser = Parser(prog=PROG, description="Llama 2, built piece by piece: run, chat, inspect.")
    from .. import __version__

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
