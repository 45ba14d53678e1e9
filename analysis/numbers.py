"""Numbers as people read them: what the figures, tables, captions and the report print.

Only what is displayed is rounded; the tables (``runs``, ``epochs``, a table's CSV) keep the exact values.

- :func:`number`: a measured or counted number (a metric, a best epoch, a tick): integers and integral floats
  as integers (``1``, not ``1.0``), others with :data:`DIGITS` significant digits (``0.00221``, ``23.5``),
  scientific only where positional would be long (``1e-05``); Python's ``format(x, ".3g")``.
- :func:`value`: a parameter's value (a config value): as :func:`number`, but a float that happens to be whole
  keeps its ``.0`` (``tfr=1.0``: a ratio, not a count), text and booleans as they are.
- :func:`distinct`: the formatter of one parameter's values that keeps different values apart, with
  :data:`DIGITS` significant digits or as many more as two values need (``0.002212`` and ``0.002214``): a
  configuration's label names it, and two configurations must not share one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

DIGITS = 3
"""Significant digits of a displayed number (``lr=0.00221``)."""
MAX_DIGITS = 17
"""Enough for any double to print exactly (``repr``)."""
MISSING = "—"


def _is_missing(x: Any) -> bool:
    return x is None or (isinstance(x, float | np.floating) and math.isnan(x))


def _float(x: float, digits: int) -> str:
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    if 10 ** digits <= abs(x) < 1e15:  # no digit of the integer part lost, no 1.23e+03
        return f"{x:.0f}"
    return format(x, f".{digits}g")


def number(x: Any, digits: int = DIGITS) -> str:
    """A measured or counted number: ``1`` (also for ``1.0``), ``0.00221``, ``23.5``, ``1e-05``; ``—`` for a
    missing one; anything else as ``str``."""
    if _is_missing(x):
        return MISSING
    if isinstance(x, bool | np.bool_):
        return str(bool(x))
    if isinstance(x, int | np.integer):
        return str(int(x))
    if isinstance(x, float | np.floating):
        x = float(x)
        if x.is_integer() and abs(x) < 1e15:
            return str(int(x))
        return _float(x, digits)
    return str(x)


def value(x: Any, digits: int = DIGITS) -> str:
    """A parameter's value: ``cyclical``, ``True``, ``12``, ``1.0``, ``0.25``, ``0.00221``, ``1e-05``."""
    if isinstance(x, float | np.floating) and not _is_missing(x):
        x = float(x)
        if x.is_integer() and abs(x) < 1e6:
            return f"{x:.1f}"
        return _float(x, digits)
    return number(x, digits)


def distinct(values: Iterable[Any], digits: int = DIGITS, fmt: Callable[[Any, int], str] = value
             ) -> Callable[[Any], str]:
    """``fmt`` with the fewest significant digits (``digits`` or more) that print the different ``values``
    differently; as a function of one value."""
    numbers = {float(v) for v in values if isinstance(v, float | np.floating) and not _is_missing(v)}
    d = digits
    while d < MAX_DIGITS and len({fmt(v, d) for v in numbers}) < len(numbers):
        d += 1
    return lambda x: fmt(x, d)
