"""Decode's shortcuts against the rules they stand for, on random values: a field's reader
against its conversion (runtime.decode reads the common cases without calling it), a column's
converter on a null against the same on a missing field (decode reads a column's one field as
it is), and the digits and decimal places of numbers against those of their digit tuples
(runtime.coerce and runtime.ddbjson read them off the number's text)."""

from __future__ import annotations

from decimal import Decimal, localcontext
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.coerce import MISSING, CoercionError, converter
from runtime.ddbjson import AttributeValueError, check_digits
from runtime.decode import DecodeError, _converter, field_value
from runtime.registry import FieldSpec
from tests.test_runtime_units import col


def outcome(fn: Any, value: Any) -> tuple[str, Any]:
    try:
        got = fn(value)
    except (DecodeError, CoercionError, AttributeValueError) as exc:
        return type(exc).__name__, str(exc)
    return type(got).__name__, got


# --- a field's reader -----------------------------------------------------------------

# What a rendered body can hold where a field is: JSON scalars (numbers as the body's Decimals),
# attribute values well formed or not, lists and maps.
_SCALARS = (
    st.none()
    | st.booleans()
    | st.sampled_from(["", "x", "12", "1.50", "1E+5", "1_000", "a\x00b"])
    | st.text(max_size=4)
    | st.decimals(allow_nan=False, allow_infinity=False)
)
_RAW = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["S", "N", "NULL", "BOOL", "M", "L", "SS", "B", "x"]), inner, max_size=2
        )
    ),
    max_leaves=6,
)
_SPECS = st.builds(
    FieldSpec,
    st.just("f"),
    st.sampled_from([("a",), ("a", "b")]),
    st.sampled_from(["S", "N", "number", "BOOL", "NULL", "M", "L", "SS", "NS", "B"]),
    st.sampled_from(["value", "typed"]),
)


@settings(max_examples=1500, deadline=None)
@given(_SPECS, _RAW, st.booleans())
def test_a_fields_reader_gives_what_its_conversion_gives(
    spec: FieldSpec, raw: Any, nested_miss: bool
) -> None:
    # GIVEN a field of any carry and type, and a body holding any JSON value at its path (or, for
    # a nested path, a non-object where the path goes on)
    body: dict[str, Any] = {"a": raw} if len(spec.path) == 1 else {"a": raw if nested_miss else {"b": raw}}
    missing = len(spec.path) == 2 and nested_miss
    # WHEN the field is read  THEN it is the field's conversion of that value, or the same refusal
    want = ("_Missing", MISSING) if missing else outcome(_converter(spec), raw)
    if want[0] == "AttributeValueError":
        want = ("DecodeError", f"field f: {want[1]}")
    got = outcome(lambda b: field_value(b, spec), body)
    assert got == want


# --- a column of one field ------------------------------------------------------------

_COLUMN_TYPES = ["string", "text", "integer", "bigint", "smallint", "decimal", "float", "boolean", "timestamp", "date", "json"]  # fmt: skip


@pytest.mark.parametrize("type_", _COLUMN_TYPES)
@pytest.mark.parametrize("nullable", [True, False])
@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"has_default": True, "default": "1"},
        {"has_default": True, "default": None},
        {"value_map": {"1": "2"}, "on_unmapped": "null"},
        {"has_const": True, "const": "1"},
    ],
)
def test_a_column_takes_a_null_as_a_missing_field(type_: str, nullable: bool, extra: dict[str, Any]) -> None:
    # GIVEN any column (decode hands it its one field's value as read: None for a DynamoDB NULL,
    # where _Values.first, for columns of several fields, gives MISSING)
    convert = converter(col(type_, nullable=nullable, **extra), nul_ok=False)
    # THEN a null and a missing field come out the same, value or refusal
    assert outcome(convert, None) == outcome(convert, MISSING)


# --- numbers ----------------------------------------------------------------------------

# Finite numbers of 1 to 45 digits, some of them trailing zeros, at any exponent or none
# (exact: no context rounds a number built from its text).
_NUMBERS = st.builds(
    lambda sign, coefficient, e: Decimal(f"{sign}{coefficient}E{e}"),
    st.sampled_from(["", "-"]),
    st.integers(1, 45).flatmap(lambda k: st.integers(10 ** (k - 1), 10**k - 1)).map(str)
    | st.builds(lambda n, zeros: str(n) + "0" * zeros, st.integers(0, 10**40), st.integers(1, 8)),
    st.integers(-150, 150) | st.just(0),
)


def _significant(d: Decimal) -> int:
    digits = d.as_tuple().digits
    n = len(digits)
    while n > 1 and digits[n - 1] == 0:
        n -= 1
    return n


@settings(max_examples=1000, deadline=None)
@given(_NUMBERS)
def test_the_digit_limit_counts_significant_digits(d: Decimal) -> None:
    # GIVEN any number  WHEN its digits are checked against DynamoDB's limit
    # THEN it is refused exactly when it has more than 38 significant digits
    if _significant(d) > 38:
        with pytest.raises(AttributeValueError, match=f"{_significant(d)} significant digits"):
            check_digits(d)
    else:
        assert check_digits(d) is d


@pytest.mark.parametrize("capitals", [1, 0])
@settings(max_examples=600, deadline=None)
@given(_NUMBERS, st.integers(1, 45), st.data())
def test_a_decimal_column_refuses_exactly_the_numbers_it_cannot_hold(
    capitals: int, d: Decimal, precision: int, data: st.DataObject
) -> None:
    # GIVEN a decimal(precision, scale) column and any number (under any decimal context:
    # capitals=0 writes exponents with "e")
    scale = data.draw(st.integers(0, precision))
    convert = converter(col("decimal", precision=precision, scale=scale))
    # the places and whole digits the number has, from its plain text
    whole_text, _, fraction = format(d.copy_abs(), "f").partition(".")  # abs() rounds to the context
    places = len(fraction.rstrip("0"))
    whole = len(whole_text.lstrip("0"))
    with localcontext() as ctx:
        ctx.capitals = capitals
        got = outcome(convert, d)
    # THEN it is refused for its places beyond the scale (trailing zeros aside), else for its
    # digits before the point beyond precision - scale, else kept as it is
    if d and places > scale:
        assert got[0] == "CoercionError" and f"with {places} decimal places does not fit" in got[1]
    elif d and whole > precision - scale:
        assert got[0] == "CoercionError" and f"with {whole} digits before the decimal point" in got[1]
    else:
        assert got == ("Decimal", d)
