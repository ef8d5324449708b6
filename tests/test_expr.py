"""Computed columns: the generator's parser and type checker (generator/expr.py), the runtime's
evaluator (runtime/expr.py), and the bundled customers mapping's computed columns applied on
SQLite, PostgreSQL and MariaDB from the generated registry."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from generator.expr import ExprProblem, compile_expr
from runtime.expr import ExprError, evaluator
from tests.factories import customer_body, sqs_record
from tests.runtime_db import Db, failed_ids, statuses

FIELDS = {"given": "S", "family": "S", "nick": "S", "cents": "N", "ms": "N", "profile": "M", "tags": "L"}
FIELDS |= {"vip": "BOOL", "at": "number", "name.given": "S"}


def run(text: str, **values: Any) -> Any:
    return evaluator(compile_expr(text, FIELDS).tree, "col")(values.get)


# --- the parser and type checker -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tree", "type_"),
    [
        ("upper(given)", ["call", "upper", ["field", "given"]], "text"),
        ("name.given", ["field", "name.given"], "text"),
        ("cents / 100", ["call", "div", ["field", "cents"], ["number", "100"]], "number"),
        ("0.1 + cents", ["call", "add", ["number", "0.1"], ["field", "cents"]], "number"),
        ("-1.50", ["number", "-1.50"], "number"),
        (
            "given + ' ' + family",
            ["call", "add", ["call", "add", ["field", "given"], ["text", " "]], ["field", "family"]],
            "text",
        ),
        ("profile['a']['b']", ["get", ["get", ["field", "profile"], "a"], "b"], "any"),
        ("tags[0]", ["get", ["field", "tags"], 0], "any"),
        ("from_epoch_millis(ms)", ["call", "from_epoch_millis", ["field", "ms"]], "timestamp"),
        (
            "coalesce(nick, given, 'x')",
            ["call", "coalesce", ["field", "nick"], ["field", "given"], ["text", "x"]],
            "text",
        ),
        (
            "round(cents / 3, 2)",
            ["call", "round_div", ["field", "cents"], ["number", "3"], ["number", "2"]],
            "number",
        ),
    ],
)
def test_expressions_compile_to_a_typed_tree(text: str, tree: list[Any], type_: str) -> None:
    compiled = compile_expr(text, FIELDS)
    assert (compiled.tree, compiled.type) == (tree, type_)


@pytest.mark.parametrize(
    ("text", "message", "offset", "code"),
    [
        ("uper(given)", "unknown function 'uper'", 0, "expr-function"),
        ("upper(given, 'x')", "upper() takes 1 argument, not 2", 0, "expr-arity"),
        ("substr(given)", "substr() takes 2 to 3 arguments, not 1", 0, "expr-arity"),
        ("upper(cents)", "argument 1 of upper() must be a text, but it is a number", 6, "expr-type"),
        ("concat(given, gven)", "field 'gven' is not in the message", 14, "expr-field"),
        ("cents + given", "+ adds two numbers or joins two texts, not a number and a text", 0, "expr-type"),
        ("given['x']", "['x'] reads from a map, but the value is a text", 0, "expr-type"),
        (
            "substr(given, 0, 2)",
            "substr() counts characters from 1: START must be a whole number from 1",
            14,
            "expr-literal",
        ),
        ("round(cents, places)", "field 'places' is not in the message", 13, "expr-field"),
        ("round(cents, cents)", "argument 2 of round() must be a literal number", 13, "expr-literal"),
        ("cents / 0", "division by zero", 8, "expr-literal"),
        ("given if vip else family", "if/else is not part of the expression language", 0, "expr-syntax"),
        ("__import__('os')", "unknown function '__import__'", 0, "expr-function"),
        ("given.upper()", "only a function name may be called", 0, "expr-function"),
        ("upper(given", "the expression does not parse: '(' was never closed", 5, "expr-syntax"),
        ("f'{given}'", "an f-string is not part of the expression language", 0, "expr-syntax"),
        ("upper(x=given)", "upper() takes no named arguments", 8, "expr-arity"),
    ],
)
def test_what_the_runtime_would_refuse_is_refused_at_its_place(
    text: str, message: str, offset: int, code: str
) -> None:
    with pytest.raises(ExprProblem) as info:
        compile_expr(text, FIELDS)
    assert (info.value.message, info.value.offset, info.value.code) == (message, offset, code)


# --- the evaluator ---------------------------------------------------------------------


def test_arithmetic_is_exact_or_refused() -> None:
    assert run("0.1 + 0.2") == Decimal("0.3")
    assert run("cents / 100", cents=Decimal(123456)) == Decimal("1234.56")
    assert run("cents * 0.001", cents=Decimal("1E+30")) == Decimal("1E+27")
    # 126 digits, not rounded (Python's default context would give 1E+125)
    assert run("cents + 1", cents=Decimal("1E+125")) == Decimal("1" + "0" * 124 + "1")
    assert run("round(cents / 3, 2)", cents=Decimal(100)) == Decimal("33.33")
    assert run("round(cents / 8, 2)", cents=Decimal(-1)) == Decimal("-0.13")  # half away from zero
    with pytest.raises(ExprError, match=r"column col: computed value: /: the result is not exact"):
        run("cents / 3", cents=Decimal(100))
    with pytest.raises(ExprError, match="division by zero"):
        run("100 / cents", cents=Decimal(0))


def test_null_propagates_except_through_concat_join_and_coalesce() -> None:
    assert run("substr(given, 2, 3)") is None  # a missing value: null, the column decides
    assert run("upper(given) + 'x'") is None
    assert run("cents / 100") is None
    assert run("concat(given, '-', family)", family="Doe") == "-Doe"
    assert run("join(' ', given, nick, family)", given="Ada", nick="", family="Lovelace") == "Ada Lovelace"
    assert run("coalesce(nonempty(nick), given, 'x')", nick="", given="Ada") == "Ada"
    assert run("coalesce(nonempty(nick), nonempty(given), 'x')", nick="", given="") == "x"
    assert run("profile['a']['b']", profile={"a": {}}) is None
    assert run("tags[5]", tags=["a"]) is None


def test_text_functions_and_times() -> None:
    assert run("substr(given, 2, 3)", given="abcdef") == "bcd"
    assert run("substr(given, 9)", given="abc") == ""
    assert run("upper(trim(given))", given="  gb ") == "GB"
    assert run("from_epoch_millis(ms)", ms=Decimal(1700000000123)) == datetime(
        2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC
    )
    assert run("to_epoch_millis(timestamp(given))", given="2023-11-14T22:13:20.123Z") == Decimal(
        1700000000123
    )
    assert run("text(cents)", cents=Decimal("1.50")) == "1.5"
    assert run("number(profile['n']) * 2", profile={"n": "2.5"}) == Decimal("5.0")


@pytest.mark.parametrize(
    ("text", "values", "reason"),
    [
        ("upper(profile['plan'])", {"profile": {"plan": Decimal(7)}}, "upper: expected a text, got a number"),
        ("profile['a']['b']", {"profile": {"a": "x"}}, "['b']: expected a map, got a string of 1 character"),
        (
            "number(profile['n'])",
            {"profile": {"n": "many"}},
            "number: a string of 4 characters is not a number",
        ),
        (
            "timestamp(given)",
            {"given": "soon"},
            "timestamp: a string of 4 characters is not an ISO 8601 timestamp",
        ),
        (
            "from_epoch(cents)",
            {"cents": Decimal("1E+20")},
            "from_epoch: a number of epoch seconds is out of range",
        ),
    ],
)
def test_a_value_the_expression_cannot_take_is_a_refusal_naming_the_column(
    text: str, values: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ExprError) as info:
        run(text, **values)
    assert str(info.value).startswith(f"column col: computed value: {reason}")


# --- the bundled mapping on the three databases ----------------------------------------


def _customer(customer_id: str, **extra: Any) -> dict[str, Any]:
    body = customer_body(customer_id)
    body.update(extra)
    return sqs_record(body, group=customer_id, queue="customers-sync.fifo")


def test_computed_columns_are_written_and_a_refused_one_fails_its_message_only(db: Db) -> None:
    # GIVEN C-1 with every input, C-2 whose profile plan is a number (upper refuses it) followed
    # by a second message of its group, and C-3 without the computed columns' inputs
    good = _customer(
        "C-1",
        nickname={"S": ""},
        creditLimitCents=123456,
        lastLoginMs=1700000000123,
        profile={"M": {"plan": {"S": "gold"}}},
    )
    bad = _customer("C-2", profile={"M": {"plan": {"N": "7"}}})
    behind = _customer("C-2")
    bare = _customer("C-3", name={"given": "", "family": ""}, profile="")
    # WHEN applied as one batch
    r = db.apply([good, bad, behind, bare])
    # THEN the bad message fails permanently, naming the column; its group is held back; the rest applies
    assert statuses(r) == ["applied", "failed", "blocked", "applied"]
    assert r.outcomes[1].kind == "permanent"
    assert "column plan_code: computed value: upper: expected a text, got a number" in r.outcomes[1].reason
    assert failed_ids(r) == [bad["messageId"], behind["messageId"]]
    rows = db.rows(
        "SELECT external_id, full_name, display_name, initials, plan_code, credit_limit, last_login_at "
        "FROM customers ORDER BY external_id"
    )
    (c1, c3) = rows
    assert c1[:5] == ("C-1", "Hanako Yamada", "Hanako", "HY", "GOLD")
    assert Decimal(str(c1[5])) == Decimal("1234.56")  # SQLite hands back a float
    stamp = c1[6] if isinstance(c1[6], datetime) else datetime.fromisoformat(str(c1[6]))
    assert stamp.replace(tzinfo=None) == datetime(2023, 11, 14, 22, 13, 20, 123000)
    # C-3: empty names join to empty text; coalesce falls through to the email; no inputs, NULL
    assert c3 == ("C-3", "", "c-3@example.com", "", None, None, None)
