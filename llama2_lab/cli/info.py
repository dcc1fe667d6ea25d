"""The commands that describe and load no weights: ``llama2-lab info`` (a checkpoint's format, configuration,
parameters and files, read from its headers) and ``llama2-lab family`` (the Llama 1 and Llama 2 sizes with
their exact parameter counts)."""

from __future__ import annotations


def run_info(args) -> int:
    from .. import formats

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
    from ..core.calc import format_family_table

    print(format_family_table())
    return 0


def add_family(subparsers) -> None:
    p = subparsers.add_parser(
        "family",
        help="the Llama 1 and Llama 2 family: configs and exact parameter counts",
        description="The published Llama 1 and Llama 2 sizes with their configurations and exact parameter counts.",
    )
    p.set_defaults(run=run_family)
