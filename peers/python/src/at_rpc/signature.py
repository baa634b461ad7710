"""Function signatures for rpc.functions (contract section 7): given with
@signature or read from annotations."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])

# --------------------------------------------------------------------------
# Function signatures (rpc.functions, contract section 7)

TYPES = ("integer", "double", "number", "string", "bool", "null", "array", "object", "any")

_ANNOTATION_TYPES: dict[Any, str] = {
    int: "integer",
    float: "number",
    str: "string",
    bool: "bool",
    type(None): "null",
    list: "array",
    dict: "object",
}
# Annotations left as text (a module with `from __future__ import annotations`
# whose names cannot be resolved): the base name before any "[...]".
_ANNOTATION_NAMES = {
    "int": "integer",
    "float": "number",
    "str": "string",
    "bool": "bool",
    "None": "null",
    "NoneType": "null",
    "list": "array",
    "dict": "object",
    "List": "array",
    "Dict": "object",
    "typing.List": "array",
    "typing.Dict": "object",
}


class Signature(NamedTuple):
    """What rpc.functions says of a function: the type of each positional
    argument, the result's type (both from TYPES) and one line of doc."""

    params: tuple[str, ...]
    result: str
    doc: str = ""


def signature(
    params: list[str] | tuple[str, ...], result: str, doc: str = ""
) -> Callable[[_F], _F]:
    """A decorator giving a function an explicit signature for rpc.functions
    (types from TYPES), instead of one read from its annotations:

        @signature(["number", "number"], "double", "a / b")
        def div(*args): ...
    """
    sig = Signature(tuple(params), result, doc.strip().splitlines()[0] if doc.strip() else "")
    for t in (*sig.params, sig.result):
        if t not in TYPES:
            raise ValueError(f"{t!r} is not one of {', '.join(TYPES)}")

    def attach(fn: _F) -> _F:
        setattr(fn, "__at_signature__", sig)  # noqa: B010 (a function attribute mypy cannot see)
        return fn

    return attach


def annotation_type(annotation: Any) -> str:
    """The protocol type of a Python annotation: int "integer", float
    "number", str "string", bool "bool", None "null", list "array", dict
    "object" (also list[...] and dict[...]); anything else "any"."""
    if annotation is None:
        return "null"
    if isinstance(annotation, str):
        return _ANNOTATION_NAMES.get(annotation.split("[", 1)[0].strip(), "any")
    origin = typing.get_origin(annotation)
    if origin in (list, dict):
        return _ANNOTATION_TYPES[origin]
    try:
        return _ANNOTATION_TYPES.get(annotation, "any")
    except TypeError:  # an unhashable annotation
        return "any"


def _first_line(doc: str | None) -> str:
    for line in (doc or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def describe_function(fn: Callable[..., Any]) -> Signature | None:
    """The signature rpc.functions lists for `fn`: the one given with
    @signature, else one from its annotations (parameters without one are
    "any", a missing return annotation is "any"), with the first non-empty
    line of its docstring. None (unknown) for a function without annotated
    parameters (without any annotation, when it takes no argument), one
    that takes *args, or one that cannot be inspected."""
    given = getattr(fn, "__at_signature__", None)
    if isinstance(given, Signature):
        return given
    try:
        try:
            sig = inspect.signature(fn, eval_str=True)
        except Exception:  # NameError and friends: names not resolvable
            sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = []
    for p in sig.parameters.values():
        if p.kind == p.VAR_POSITIONAL:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            params.append(p.annotation)
    empty = inspect.Signature.empty
    annotated = any(a is not empty for a in params)
    if not annotated and (params or sig.return_annotation is empty):
        return None
    result = sig.return_annotation
    doc = fn.__doc__ if inspect.isfunction(fn) or inspect.ismethod(fn) else None
    return Signature(
        tuple("any" if a is empty else annotation_type(a) for a in params),
        "any" if result is empty else annotation_type(result),
        _first_line(doc),
    )
