"""Terraform expressions, never spliced by hand: `${...}` is written in one place (`interp`);
references go through `ref`/`expr`, function calls through `call`, and every literal string
that may carry user input goes through `escape` (AWS: eb-pipes-input-transformation, Terraform JSON configuration syntax: a literal `${` is `$${`, a
literal `%{` is `%%{`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_HCL_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Expr:
    """A Terraform expression, written as HCL native syntax (e.g. `aws_sqs_queue.orders.arn`)."""

    text: str


@dataclass(frozen=True)
class Template:
    """A string template: literal parts (escaped) and expressions (interpolated), in order."""

    parts: tuple[str | Expr, ...]


def interp(e: Expr) -> str:
    # The only place `${` is written.
    return "${" + e.text + "}"


def escape(text: str) -> str:
    """A literal string as a Terraform template: `${` -> `$${`, `%{` -> `%%{` (AWS: eb-pipes-input-transformation, Terraform JSON configuration syntax)."""
    return text.replace("${", "$${").replace("%{", "%%{")


def expr(*parts: str) -> Expr:
    """`expr("aws_sqs_queue", "orders", "arn")` -> the expression aws_sqs_queue.orders.arn."""
    return Expr(".".join(parts))


def ref(*parts: str) -> str:
    """`ref("aws_sqs_queue", "orders", "arn")` -> "${aws_sqs_queue.orders.arn}"."""
    return interp(expr(*parts))


def address(kind: str, label: str) -> str:
    """A bare resource address for `depends_on`: no `${}` there (see Terraform JSON configuration syntax)."""
    return f"{kind}.{label}"


def template(*parts: str | Expr) -> str:
    """A JSON string mixing literal text (escaped) and interpolations."""
    return "".join(interp(p) if isinstance(p, Expr) else escape(p) for p in parts)


def _hcl_string(parts: tuple[str | Expr, ...]) -> str:
    out = []
    for part in parts:
        if isinstance(part, Expr):
            out.append(interp(part))
            continue
        text = escape(part).replace("\\", "\\\\").replace('"', '\\"')
        text = text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
        out.append("".join(c if ord(c) >= 0x20 else f"\\u{ord(c):04x}" for c in text))
    return '"' + "".join(out) + '"'


def hcl(value: Any) -> str:
    """A Python value as an HCL native-syntax expression (for arguments of function calls)."""
    if isinstance(value, Expr):
        return value.text
    if isinstance(value, Template):
        return _hcl_string(value.parts)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _hcl_string((value,))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(hcl(v) for v in value) + "]"
    if isinstance(value, dict):
        entries = []
        for k, v in value.items():
            key = k if _HCL_IDENT.match(k) else _hcl_string((k,))
            entries.append(f"{key} = {hcl(v)}")
        return "{" + ", ".join(entries) + "}"
    raise TypeError(f"no HCL rendering for {type(value).__name__}: {value!r}")


def fn(function: str, *args: Any) -> Expr:
    """A function call expression; arguments are Python values rendered by `hcl`."""
    return Expr(f"{function}({', '.join(hcl(a) for a in args)})")


def conditional(condition: Any, if_true: Any, if_false: Any) -> Expr:
    """`condition ? if_true : if_false`; only the chosen branch is evaluated."""
    return Expr(f"{hcl(condition)} ? {hcl(if_true)} : {hcl(if_false)}")


def call(function: str, *args: Any) -> str:
    """`call("jsonencode", {...})` -> "${jsonencode({...})}"."""
    return interp(fn(function, *args))
