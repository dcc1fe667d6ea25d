"""One check per kind of argument every layer takes: integers (sizes, counts, steps, seeds), real
numbers (temperatures, epsilons), and the same rules for command-line options."""

from __future__ import annotations

import argparse
import math
import numbers


def check_int(
    name: str,
    value,
    minimum: int = 1,
    *,
    error: type[Exception] = ValueError,
    allow_none: bool = False,
    note: str = "",
    maximum: int | None = None,
) -> int | None:
    """``value`` as an int if it is a whole number in ``minimum..maximum`` (numpy integers too), else ``error``.

    ``bool`` is refused (True is not a size); ``None`` passes only with ``allow_none``. The message
    names the argument, the rule and what was given, e.g. "n_heads must be a positive integer, got 0.".
    """
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or int(value) < minimum
        or (maximum is not None and int(value) > maximum)
    ):
        rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        rule += f" and <= {maximum}" if maximum is not None else ""
        rule += " or None" if allow_none else ""
        raise error(f"{name} must be {rule}{note}, got {_given(value)}.")
    return int(value)


def check_float(
    name: str,
    value,
    *,
    above: float | None = None,
    at_least: float | None = None,
    error: type[Exception] = ValueError,
    allow_none: bool = False,
    note: str = "",
) -> float | None:
    """``value`` as a float if it is a finite real number (> ``above``, >= ``at_least``), else ``error``.

    Ints and numpy floats pass; ``bool``, strings ("1e-5"), None (unless ``allow_none``), NaN and
    infinities are refused with a message naming the argument and the expected type.
    """
    if value is None and allow_none:
        return None
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    ok = ok and (above is None or value > above) and (at_least is None or value >= at_least)
    if not ok:
        rule = "a finite number"
        rule += f" > {above:g}" if above is not None else ""
        rule += f" >= {at_least:g}" if at_least is not None else ""
        rule += " or None" if allow_none else ""
        raise error(f"{name} must be {rule}{note}, got {_given(value)}.")
    return float(value)


def _given(value) -> str:
    """What was given, with its type when the type is the problem: "'1e-5' (a str)"."""
    if isinstance(value, (numbers.Real, type(None))) and not isinstance(value, bool):
        return repr(value)
    return f"{value!r} (a {type(value).__name__})"


def at_least(minimum: int) -> type[argparse.Action]:
    """An argparse action for integer options that refuses values below ``minimum`` while parsing.

    ``p.add_argument("--threads", type=int, action=at_least(1))``: "--threads must be >= 1, got 0."
    goes through ``parser.error``, before any work starts (lists from ``nargs`` are checked item by item).
    """

    class AtLeast(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            for v in values if isinstance(values, list) else [values]:
                if v < minimum:
                    parser.error(f"{option_string or self.dest} must be >= {minimum}, got {v}.")
            setattr(namespace, self.dest, values)

    AtLeast.__name__ = f"AtLeast{minimum}"
    return AtLeast
