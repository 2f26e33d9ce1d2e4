"""Plain data as JSON, with the types a test compares kept apart: a solution's results travel this way out of its
sandbox (to the parent, or to the process that runs the tests), so that they are compared where it cannot reach.

JSON has lists, strings, numbers, booleans and null; everything else a test may compare is a one-key object:
``{"t": [...]}`` tuple, ``{"d": [[key, value], ...]}`` dict, ``{"s": [...]}`` set, ``{"f": [...]}`` frozenset,
``{"b": "latin-1 text"}`` bytes, ``{"c": [real, imag]}`` complex. Floats keep nan and inf (Python's JSON spelling).

Only exact built-in types are encoded (a ``bool`` is a bool, an ``int`` subclass with a permissive ``__eq__`` is
refused), and numpy scalars become Python numbers; anything else raises ``TypeError`` ("not plain data"). The text
of this module is also run inside the sandbox (``source()``), so it imports only the standard library.
"""

from __future__ import annotations

MAX_DEPTH = 100
"""Nesting deeper than this is refused (a self-referencing list would otherwise recurse forever)."""
_SCALARS = (bool, int, float, str, type(None))


def encode(value: object, depth: int = 0) -> object:
    """``value`` as a JSON-ready tree (see the module docstring); ``TypeError`` for anything that is not plain data."""
    if depth > MAX_DEPTH:
        raise TypeError("the value is nested too deeply to be plain data")
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list:
        return [encode(item, depth + 1) for item in value]
    if kind is tuple:
        return {"t": [encode(item, depth + 1) for item in value]}
    if kind is dict:
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if kind is set or kind is frozenset:
        return {"s" if kind is set else "f": [encode(item, depth + 1) for item in value]}
    if kind is bytes:
        return {"b": value.decode("latin-1")}
    if kind is complex:
        return {"c": [value.real, value.imag]}
    if kind.__module__ == "numpy" and callable(getattr(value, "item", None)) and getattr(value, "ndim", 1) == 0:
        return encode(value.item(), depth + 1)
    raise TypeError(f"a {kind.__name__} is not plain data")


def decode(tree: object, depth: int = 0) -> object:
    """The value ``encode`` turned into ``tree``; ``ValueError`` for a tree ``encode`` cannot have made."""
    if depth > MAX_DEPTH:
        raise ValueError("nested too deeply")
    kind = type(tree)
    if kind in _SCALARS:
        return tree
    if kind is list:
        return [decode(item, depth + 1) for item in tree]
    if kind is dict and len(tree) == 1:
        (tag, body), *_ = tree.items()
        if tag == "t" and type(body) is list:
            return tuple(decode(item, depth + 1) for item in body)
        try:
            if tag == "d" and type(body) is list and all(type(pair) is list and len(pair) == 2 for pair in body):
                return {decode(pair[0], depth + 1): decode(pair[1], depth + 1) for pair in body}
            if tag in ("s", "f") and type(body) is list:
                items = [decode(item, depth + 1) for item in body]
                return set(items) if tag == "s" else frozenset(items)
        except TypeError:  # an unhashable key or member
            raise ValueError(f"not an encoded value: {str(tree)[:80]}") from None
        if tag == "b" and type(body) is str:
            return body.encode("latin-1")
        if tag == "c" and type(body) is list and len(body) == 2:
            return complex(body[0], body[1])
    raise ValueError(f"not an encoded value: {str(tree)[:80]}")


def source() -> str:
    """This module's text, to run inside a sandbox (it defines ``encode`` and ``decode`` there)."""
    from pathlib import Path

    return Path(__file__).read_text()
