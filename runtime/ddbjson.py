"""DynamoDB attribute-value JSON -> plain Python values.

Written by hand rather than using boto3's TypeDeserializer: importing boto3 costs the sync
Lambda's cold start hundreds of milliseconds, and the format is small (AWS: Streams).
Numbers become Decimal, so no digit is lost.
"""

from __future__ import annotations

import base64
from decimal import Decimal, InvalidOperation
from typing import Any

from runtime.aws_limits import (
    DYNAMODB_NESTING_DEPTH,
    DYNAMODB_NUMBER_DIGITS,
    DYNAMODB_NUMBER_MAX_EXPONENT,
    DYNAMODB_NUMBER_MIN_EXPONENT,
)
from runtime.redact import name, shown


class AttributeValueError(ValueError):
    pass


# DynamoDB's number limits: at most 38 significant digits, magnitudes from 1E-130 to
# 9.9999999999999999999999999999999999999E+125 (Amazon DynamoDB Developer Guide, "Supported
# data types and naming rules", Number). A value beyond them cannot come from DynamoDB; it is
# refused here, before any arithmetic on it could cost time (1e999999 written out is a million
# digits).
# The longest text of a number within those limits: sign, "0.", 129 zeros, 38 digits.
MAX_NUMBER_TEXT = 170
LIMITS = "DynamoDB numbers have at most 38 significant digits and magnitudes from 1E-130 to 1E+125"


def number(text: Any) -> Decimal:
    """A DynamoDB number (its text, or a number a JSON body carried) as an exact Decimal,
    refused with a short reason when it is not one DynamoDB could hold."""
    length = MAX_NUMBER_TEXT  # unknown: check the digits
    if isinstance(text, str):  # the common case first: an N value's text
        if "_" in text:  # Python's Decimal reads 1_000 as 1000; DynamoDB has no such number
            raise AttributeValueError(f"{shown(text)} is not a number")
        if len(text) > MAX_NUMBER_TEXT:
            raise AttributeValueError(f"a number of {len(text):,} characters is beyond its limits ({LIMITS})")
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise AttributeValueError(f"{shown(text)} is not a number") from None
        length = len(text)
    elif isinstance(text, Decimal):
        value = text
    elif isinstance(text, int) and not isinstance(text, bool):
        value = Decimal(text)
    elif isinstance(text, float):
        value = Decimal(repr(text))
    else:
        raise AttributeValueError(f"expected a number, got {shown(text)}")
    if not value.is_finite():
        raise AttributeValueError(f"{shown(text)} is not a finite number")
    if not DYNAMODB_NUMBER_MIN_EXPONENT <= value.adjusted() <= DYNAMODB_NUMBER_MAX_EXPONENT:
        check_magnitude(value)  # refuses it, unless it is a zero (0E-200 is 0)
    if length > DYNAMODB_NUMBER_DIGITS:  # a shorter text cannot hold more digits
        check_digits(value)
    return value


def check_magnitude(value: Decimal) -> Decimal:
    """`value`, refused when its magnitude is outside DynamoDB's (cheap: no digit is read)."""
    if value:
        exponent = value.adjusted()
        if exponent > DYNAMODB_NUMBER_MAX_EXPONENT or exponent < DYNAMODB_NUMBER_MIN_EXPONENT:
            raise AttributeValueError(
                f"a number of magnitude 1E{exponent:+d} is beyond its limits ({LIMITS})"
            )
    return value


def check_digits(value: Decimal) -> Decimal:
    """`value`, refused when it has more significant digits than DynamoDB keeps."""
    if len(str(value)) <= DYNAMODB_NUMBER_DIGITS:  # its text holds every digit (as_tuple costs more)
        return value
    digits = value.as_tuple().digits
    if len(digits) > DYNAMODB_NUMBER_DIGITS:
        significant = len(digits)
        while digits[significant - 1] == 0:
            significant -= 1
        if significant > DYNAMODB_NUMBER_DIGITS:
            raise AttributeValueError(
                f"a number of {significant} significant digits is beyond its limits ({LIMITS})"
            )
    return value


# DynamoDB nests maps and lists at most 32 levels deep (Developer Guide, "Service, account,
# and table quotas", Nested attribute depth): deeper input is refused, never recursed into.


def unmarshal(av: Any, depth: int = 0) -> Any:
    """One attribute value such as {"N": "3"} -> Decimal("3")."""
    if depth > DYNAMODB_NESTING_DEPTH:
        raise AttributeValueError(
            f"maps and lists nested deeper than DynamoDB's {DYNAMODB_NESTING_DEPTH} levels"
        )
    if not isinstance(av, dict) or len(av) != 1:
        raise AttributeValueError(f'expected one DynamoDB attribute value like {{"S": "x"}}, got {shown(av)}')
    ((kind, value),) = av.items()
    if kind == "S":
        if not isinstance(value, str):
            raise AttributeValueError("S value is not a string")
        return value
    if kind == "N":
        return number(value)
    if kind == "BOOL":
        if not isinstance(value, bool):
            raise AttributeValueError("BOOL value is not true/false")
        return value
    if kind == "NULL":
        return None
    if kind == "M":
        return unmarshal_map(value, depth + 1)
    if kind == "L":
        if not isinstance(value, list):
            raise AttributeValueError("L value is not a list")
        return [unmarshal(v, depth + 1) for v in value]
    if kind == "SS":
        return sorted(_strings(value, "SS"))
    if kind == "NS":
        return sorted(number(v) for v in _strings(value, "NS"))
    if kind == "B":
        return _binary(value)
    if kind == "BS":
        return sorted(_binary(v) for v in _strings(value, "BS"))
    raise AttributeValueError(f"unknown DynamoDB type {name(kind)}")


def unmarshal_map(value: Any, depth: int = 0) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise AttributeValueError("M value is not a mapping")
    return {k: unmarshal(v, depth) for k, v in value.items()}


def _strings(value: Any, kind: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AttributeValueError(f"{kind} value is not a list of strings")
    return value


def _binary(value: Any) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, TypeError):
        raise AttributeValueError("B value is not base64") from None
