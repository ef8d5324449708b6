"""argparse value types shared by the `python -m runtime` commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", int, float)


def _parsed(text: str, convert: Callable[[str], T], what: str) -> T:
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def positive(text: str) -> int:
    n = _parsed(text, int, "an integer")
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} must be at least 1")
    return n


def seconds(text: str) -> float:
    s = _parsed(text, float, "a number of seconds")
    if s < 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return s


def probability(text: str) -> float:
    p = _parsed(text, float, "a number")
    if not 0.0 <= p <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability in 0..1")
    return p
