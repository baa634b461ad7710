"""The calculator every AT server offers: add, sub, mul, div."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .errors import RemoteError
from .frame import I64_MAX, I64_MIN
from .signature import signature

# --------------------------------------------------------------------------
# The calculator


def _is_number(x: Any) -> bool:
    return type(x) is not bool and isinstance(x, (int, float))


def _two_numbers(args: tuple[Any, ...]) -> tuple[Any, Any]:
    if len(args) != 2 or not (_is_number(args[0]) and _is_number(args[1])):
        raise RemoteError("invalid_arguments", "expected two numbers")
    return args[0], args[1]


def _finite(x: float) -> float:
    if not math.isfinite(x):
        raise RemoteError("overflow", "result is not a finite number")
    return x


def _arithmetic(args: tuple[Any, ...], op: Callable[[Any, Any], Any]) -> int | float:
    a, b = _two_numbers(args)
    if isinstance(a, int) and isinstance(b, int):
        result: int = op(a, b)
        if not I64_MIN <= result <= I64_MAX:
            raise RemoteError("overflow", "integer result outside 64-bit range")
        return result
    try:
        return _finite(float(op(float(a), float(b))))
    except OverflowError:
        raise RemoteError("overflow", "result is not a finite number") from None


@signature(["number", "number"], "number", "a + b")
def calc_add(*args: Any) -> int | float:
    """a + b: exact for two integers (in i64), else a double."""
    return _arithmetic(args, lambda a, b: a + b)


@signature(["number", "number"], "number", "a - b")
def calc_sub(*args: Any) -> int | float:
    """a - b."""
    return _arithmetic(args, lambda a, b: a - b)


@signature(["number", "number"], "number", "a * b")
def calc_mul(*args: Any) -> int | float:
    """a * b."""
    return _arithmetic(args, lambda a, b: a * b)


@signature(["number", "number"], "double", "a / b, always a double")
def calc_div(*args: Any) -> float:
    """a / b, always a double (correctly rounded for two integers)."""
    a, b = _two_numbers(args)
    if b == 0:
        raise RemoteError("division_by_zero", "division by zero")
    try:
        if isinstance(a, int) and isinstance(b, int):
            return _finite(a / b)  # int / int is correctly rounded
        return _finite(float(a) / float(b))
    except OverflowError:
        raise RemoteError("overflow", "result is not a finite number") from None


#: The calculator's functions by name, as a Server starts with them.
CALCULATOR: dict[str, Callable[..., Any]] = {
    "add": calc_add,
    "sub": calc_sub,
    "mul": calc_mul,
    "div": calc_div,
}
