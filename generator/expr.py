"""Computed columns: a column's `expr:` text -> a type-checked tree for the registry.

The text is a small subset of Python expression syntax, parsed by the standard library's `ast`
module (a well-kept parser that gives every node its position), then walked with a whitelist:
field names (dotted, as the message declares them), text and number literals, calls of the
functions in runtime.expr.FUNCTIONS, `+ - * /`, unary minus, and `x['key']` / `x[0]` into a
map or list. Any other node is refused at its position. Nothing is evaluated here: the tree
goes into the registry, and runtime.expr computes it on each message.

Types are checked against the message fields' DynamoDB types (S text, N number, BOOL, M map, L
list; a value read from inside a map or list is `any`, checked when the message arrives).
"""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from runtime.expr import ANY, BOOL, FUNCTIONS, LIST, MAP, NUMBER, OPERATORS, SAME, SCALAR, TEXT, TIMESTAMP

# A field's value type by its DynamoDB type ("number": JSON-number stream metadata).
FIELD_TYPES = {"S": TEXT, "N": NUMBER, "number": NUMBER, "BOOL": BOOL, "M": MAP, "L": LIST}
_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div"}
_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/", "neg": "-"}
# What a function name reads as in a message (operators by their symbol).
PUBLIC_FUNCTIONS = tuple(sorted(n for n in FUNCTIONS if n not in OPERATORS))
MAX_TEXT = 2000  # longer expressions are refused: a column's value, not a program


class ExprProblem(ValueError):
    """What is wrong with an expression, where (a character offset into its text), how to fix."""

    def __init__(self, message: str, hint: str, offset: int, code: str) -> None:
        super().__init__(message)
        self.message, self.hint, self.offset, self.code = message, hint, offset, code


@dataclass(frozen=True)
class Compiled:
    tree: list[Any]
    type: str  # the value type the expression gives (runtime.expr: text, number, ...)
    fields: tuple[str, ...]  # the message fields it reads, in order of first use


def _offset(text: str, lineno: int, col_offset: int) -> int:
    """A node's position (line, UTF-8 byte column) as a character offset into the text."""
    lines = text.split("\n")
    before = sum(len(line) + 1 for line in lines[: lineno - 1])
    line = lines[lineno - 1] if lineno - 1 < len(lines) else ""
    return before + len(line.encode("utf-8")[:col_offset].decode("utf-8", "ignore"))


def _words(t: str) -> str:
    return {SCALAR: "text, a number, true/false or a timestamp", ANY: "any value"}.get(t, "a " + t)


def _fits(have: str, want: str) -> bool:
    if have == ANY or want == ANY:
        return True
    if want == SCALAR:
        return have in (TEXT, NUMBER, BOOL, TIMESTAMP)
    return have == want


class _Checker:
    def __init__(self, text: str, fields: dict[str, str]) -> None:
        self.text = text
        self.fields = fields  # name -> DynamoDB type
        self.used: list[str] = []

    def at(self, node: ast.AST) -> int:
        return _offset(self.text, getattr(node, "lineno", 1), getattr(node, "col_offset", 0))

    def fail(self, node: ast.AST, message: str, hint: str, code: str) -> ExprProblem:
        return ExprProblem(message, hint, self.at(node), code)

    def dotted(self, node: ast.expr) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        parts.append(node.id)
        return ".".join(reversed(parts))

    def walk(self, node: ast.expr) -> tuple[list[Any], str]:
        if isinstance(node, (ast.Name, ast.Attribute)):
            name = self.dotted(node)
            if name is None:
                raise self.fail(
                    node,
                    "only a field name may be written with '.'",
                    "read a map's value with ['key'], e.g. profile['tier']",
                    "expr-syntax",
                )
            if name not in self.fields:
                close = difflib.get_close_matches(name, list(self.fields), n=1, cutoff=0.6)
                hint = (f"did you mean '{close[0]}'? " if close else "") + (
                    "add it under message.fields or use one of: " + ", ".join(self.fields)
                )
                raise self.fail(node, f"field '{name}' is not in the message", hint, "expr-field")
            if name not in self.used:
                self.used.append(name)
            dtype = self.fields[name]
            return ["field", name], FIELD_TYPES.get(dtype, ANY)
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool):
                return ["bool", value], BOOL
            if isinstance(value, str):
                return ["text", value], TEXT
            if isinstance(value, (int, float)):
                literal = ast.get_source_segment(self.text, node) or repr(value)
                try:
                    d = Decimal(literal.replace("_", ""))
                except InvalidOperation:
                    raise self.fail(
                        node,
                        f"{literal} is not a decimal number",
                        "write digits, e.g. 100 or 0.5",
                        "expr-syntax",
                    ) from None
                if not d.is_finite():
                    raise self.fail(node, f"{literal} is not a finite number", "write digits", "expr-syntax")
                return ["number", _number_text(d)], NUMBER
            raise self.fail(
                node,
                f"the literal {value!r} is not part of the language",
                "write text in quotes or a number",
                "expr-syntax",
            )
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return self.call(node, _BINOPS[type(node.op)], [node.left, node.right])
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            if isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float):
                tree, t = self.walk(node.operand)
                return ["number", _number_text(-Decimal(tree[1]))], t
            return self.call(node, "neg", [node.operand])
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise self.fail(
                    node,
                    "only a function name may be called",
                    "use one of: " + ", ".join(PUBLIC_FUNCTIONS),
                    "expr-function",
                )
            fn = node.func.id
            if fn not in FUNCTIONS or fn in OPERATORS:
                close = difflib.get_close_matches(fn, PUBLIC_FUNCTIONS, n=1, cutoff=0.6)
                raise self.fail(
                    node,
                    f"unknown function '{fn}'",
                    (f"did you mean '{close[0]}'? " if close else "")
                    + "use one of: "
                    + ", ".join(PUBLIC_FUNCTIONS),
                    "expr-function",
                )
            if node.keywords:
                raise self.fail(
                    node.keywords[0].value,
                    f"{fn}() takes no named arguments",
                    "pass the arguments in order",
                    "expr-arity",
                )
            if any(isinstance(a, ast.Starred) for a in node.args):
                raise self.fail(
                    node, f"{fn}() takes no *arguments", "pass the arguments one by one", "expr-arity"
                )
            return self.call(node, fn, list(node.args))
        if isinstance(node, ast.Subscript):
            inner, t = self.walk(node.value)
            key = node.slice
            if (
                not isinstance(key, ast.Constant)
                or isinstance(key.value, bool)
                or not isinstance(key.value, (str, int))
            ):
                raise self.fail(
                    key,
                    "a key or index must be a literal: 'name' or a whole number",
                    "e.g. profile['tier'] or tags[0]",
                    "expr-syntax",
                )
            want = MAP if isinstance(key.value, str) else LIST
            if not _fits(t, want):
                raise self.fail(
                    node,
                    f"[{key.value!r}] reads from {_words(want)}, but the value is {_words(t)}",
                    "index a field of DynamoDB type M (a map) with ['key'], or L (a list) with [n]",
                    "expr-type",
                )
            if isinstance(key.value, int) and key.value < 0:
                raise self.fail(key, "a list index counts from 0", "write 0 or more", "expr-syntax")
            return ["get", inner, key.value], ANY
        what = type(node).__name__
        raise self.fail(
            node,
            f"{_DESCRIBE.get(what, what)} is not part of the expression language",
            "use fields, literals, + - * /, x['key'] and the functions: " + ", ".join(PUBLIC_FUNCTIONS),
            "expr-syntax",
        )

    def call(self, node: ast.expr, fn: str, args: list[ast.expr]) -> tuple[list[Any], str]:
        sig = FUNCTIONS[fn]
        label = _SYMBOL.get(fn, fn)
        if len(args) < sig.least or (sig.most is not None and len(args) > sig.most):
            want = (
                f"{sig.least} or more"
                if sig.most is None
                else (str(sig.least) if sig.least == sig.most else f"{sig.least} to {sig.most}")
            )
            raise self.fail(
                node,
                f"{label}() takes {want} argument{'s' if want != '1' else ''}, not {len(args)}",
                f"e.g. {sig.example}",
                "expr-arity",
            )
        trees, types = [], []
        for i, arg in enumerate(args):
            tree, t = self.walk(arg)
            want = sig.params[min(i, len(sig.params) - 1)]
            if not _fits(t, want):
                which = f"argument {i + 1} of {label}()" if fn not in OPERATORS else f"the operand of {label}"
                raise self.fail(
                    arg,
                    f"{which} must be {_words(want)}, but it is {_words(t)}",
                    _convert_hint(t, want) or f"e.g. {sig.example}",
                    "expr-type",
                )
            if i in sig.literal and tree[0] != "number":
                raise self.fail(
                    arg,
                    f"argument {i + 1} of {label}() must be a literal number",
                    f"e.g. {sig.example}",
                    "expr-literal",
                )
            trees.append(tree)
            types.append(t)
        self.literals(node, fn, trees, args)
        if fn == "round" and trees[0][:2] == ["call", "div"]:
            # round(a / b, n): one exact rounding of the quotient, not an inexact division.
            return ["call", "round_div", trees[0][2], trees[0][3], trees[1]], NUMBER
        result = sig.result
        if result == SAME:
            known = [t for t in types if t != ANY]
            if fn == "add":
                if any(t not in (TEXT, NUMBER) for t in known) or len(set(known)) > 1:
                    raise self.fail(
                        node,
                        f"+ adds two numbers or joins two texts, not {' and '.join(_words(t) for t in types)}",
                        "convert one side with text() or number()",
                        "expr-type",
                    )
            elif len(set(known)) > 1:
                raise self.fail(
                    node,
                    f"the arguments of {label}() must be of one type, not {', '.join(_words(t) for t in types)}",
                    "convert them with text() or number()",
                    "expr-type",
                )
            result = known[0] if known else ANY
        return ["call", fn, *trees], result

    def literals(self, node: ast.expr, fn: str, trees: list[list[Any]], args: list[ast.expr]) -> None:
        """What a literal argument says that every event would refuse."""

        def lit(i: int) -> Decimal | None:
            return Decimal(trees[i][1]) if i < len(trees) and trees[i][0] == "number" else None

        if fn == "substr":
            start, length = lit(1), lit(2)
            if start is not None and (start != start.to_integral_value() or start < 1):
                raise self.fail(
                    args[1],
                    "substr() counts characters from 1: START must be a whole number from 1",
                    "e.g. substr(code, 1, 3)",
                    "expr-literal",
                )
            if length is not None and (length != length.to_integral_value() or length < 0):
                raise self.fail(
                    args[2],
                    "substr() LENGTH must be a whole number from 0",
                    "e.g. substr(code, 1, 3)",
                    "expr-literal",
                )
        if fn == "round":
            places = lit(1)
            if places is not None and (places != places.to_integral_value() or not 0 <= places <= 30):
                raise self.fail(
                    args[1],
                    "round() PLACES must be a whole number 0..30",
                    "e.g. round(amount, 2)",
                    "expr-literal",
                )
        if fn == "div":
            divisor = lit(1)
            if divisor is not None and not divisor:
                raise self.fail(
                    args[1], "division by zero", "divide by a number other than 0", "expr-literal"
                )


_DESCRIBE = {
    "Compare": "a comparison",
    "BoolOp": "and/or",
    "IfExp": "if/else",
    "Lambda": "a lambda",
    "JoinedStr": "an f-string",
    "List": "a list",
    "Dict": "a map",
    "Tuple": "a tuple",
    "BinOp": "this operator",
    "UnaryOp": "this operator",
    "NamedExpr": "':='",
    "ListComp": "a comprehension",
    "GeneratorExp": "a comprehension",
    "Await": "await",
}


def _convert_hint(have: str, want: str) -> str | None:
    if want == TEXT and have in (NUMBER, BOOL, TIMESTAMP, ANY):
        return "convert it with text(...)"
    if want == NUMBER and have in (TEXT, ANY):
        return "convert it with number(...)"
    if want == TIMESTAMP and have == TEXT:
        return "convert it with timestamp(...) (ISO 8601 text)"
    if want == TIMESTAMP and have == NUMBER:
        return "convert it with from_epoch(...) or from_epoch_millis(...)"
    return None


def _number_text(d: Decimal) -> str:
    """A literal as exact text without a needless exponent (1E+2 -> 100)."""
    return format(d, "f")


def compile_expr(text: str, fields: dict[str, str]) -> Compiled:
    """Parse and type-check one expression against the message fields (name -> DynamoDB type);
    ExprProblem at the first thing wrong."""
    if not text.strip():
        raise ExprProblem("the expression is empty", "write e.g. upper(code)", 0, "expr-syntax")
    if len(text) > MAX_TEXT:
        raise ExprProblem(
            f"the expression has {len(text):,} characters (at most {MAX_TEXT:,})",
            "keep it short",
            0,
            "expr-syntax",
        )
    try:
        tree = ast.parse(text.rstrip("\n"), mode="eval")
    except SyntaxError as exc:
        offset = _offset(text, exc.lineno or 1, 0) + max((exc.offset or 1) - 1, 0)
        hint = "write a Python-like expression, e.g. concat(name.given, ' ', name.family)"
        if exc.msg and "keyword" in exc.msg:
            hint = "a field named like a Python keyword cannot be used in an expression: rename the field"
        raise ExprProblem(f"the expression does not parse: {exc.msg}", hint, offset, "expr-syntax") from None
    checker = _Checker(text.rstrip("\n"), fields)
    compiled, t = checker.walk(tree.body)
    return Compiled(compiled, t, tuple(checker.used))
