"""The one JSON text format of build/: sorted keys, indent 2, UTF-8 as is, final newline.

The text is exactly `json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)`, but
written by a direct recursive writer: with `indent` set, the json module drops its C encoder
for a generator-based pure-Python one that takes twice as long, and build/ holds ~19 MB of
JSON at 1,000 mappings (registry.json, the Terraform files). Strings still go through the
json module's own C escaping. tests/test_output.py checks the two agree.
"""

from __future__ import annotations

from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any


def dump_json(data: Any) -> str:
    out: list[str] = []
    _write(data, "\n", out.append)
    out.append("\n")
    return "".join(out)


def _write(value: Any, newline: str, write: Callable[[str], object]) -> None:
    """Append the JSON text of `value`; `newline` is a line break plus the current indent."""
    if isinstance(value, str):
        write(encode_basestring(value))
    elif isinstance(value, dict):
        if not value:
            write("{}")
            return
        inner = newline + "  "
        separator = "{" + inner
        for key, item in sorted(value.items()):
            write(separator + encode_basestring(_key(key)) + ": ")
            _write(item, inner, write)
            separator = "," + inner
        write(newline + "}")
    elif isinstance(value, (list, tuple)):
        if not value:
            write("[]")
            return
        inner = newline + "  "
        separator = "[" + inner
        for item in value:
            write(separator)
            _write(item, inner, write)
            separator = "," + inner
        write(newline + "]")
    elif value is None:
        write("null")
    elif value is True:
        write("true")
    elif value is False:
        write("false")
    elif isinstance(value, int):
        write(int.__repr__(value))
    elif isinstance(value, float):
        write(_float(value))
    else:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _key(key: object) -> str:
    """A dict key as json writes it."""
    if isinstance(key, str):
        return key
    if isinstance(key, float):
        return _float(key)
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value == float("inf"):
        return "Infinity"
    if value == float("-inf"):
        return "-Infinity"
    return float.__repr__(value)
