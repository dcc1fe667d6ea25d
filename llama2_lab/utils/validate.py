"""One check for the integer arguments every layer takes (sizes, counts, steps, seeds)."""

from __future__ import annotations

import numbers


def check_int(name: str, value, minimum: int = 1, *, error: type[Exception] = ValueError,
              allow_none: bool = False, note: str = "") -> int | None:
    """``value`` as an int if it is a whole number >= ``minimum`` (numpy integers too), else ``error``.

    ``bool`` is refused (True is not a size); ``None`` passes only with ``allow_none``. The message
    names the argument, the rule and what was given, e.g. "n_heads must be an integer >= 1, got 0.".
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        rule += " or None" if allow_none else ""
        raise error(f"{name} must be {rule}{note}, got {value!r}.")
    return int(value)
