"""DynamoDB attribute-value JSON -> plain Python values.

Written by hand rather than using boto3's TypeDeserializer: importing boto3 costs the sync
Lambda's cold start hundreds of milliseconds, and the format is small (facts 1.8).
Numbers become Decimal, so no digit is lost.
"""

from __future__ import annotations

import base64
from decimal import Decimal, InvalidOperation
from typing import Any


class AttributeValueError(ValueError):
    pass


def number(text: Any) -> Decimal:
    if isinstance(text, bool) or not isinstance(text, (str, int, float, Decimal)):
        raise AttributeValueError(f"expected a number string, got {type(text).__name__}")
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        raise AttributeValueError(f"{text!r} is not a number") from None
    if not value.is_finite():
        raise AttributeValueError(f"{text!r} is not a finite number")
    return value


def unmarshal(av: Any) -> Any:
    """One attribute value such as {"N": "3"} -> Decimal("3")."""
    if not isinstance(av, dict) or len(av) != 1:
        raise AttributeValueError(f'expected one DynamoDB attribute value like {{"S": "x"}}, got {av!r:.80}')
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
        return unmarshal_map(value)
    if kind == "L":
        if not isinstance(value, list):
            raise AttributeValueError("L value is not a list")
        return [unmarshal(v) for v in value]
    if kind == "SS":
        return sorted(_strings(value, "SS"))
    if kind == "NS":
        return sorted(number(v) for v in _strings(value, "NS"))
    if kind == "B":
        return _binary(value)
    if kind == "BS":
        return sorted(_binary(v) for v in _strings(value, "BS"))
    raise AttributeValueError(f"unknown DynamoDB type {kind!r}")


def unmarshal_map(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise AttributeValueError("M value is not a mapping")
    return {k: unmarshal(v) for k, v in value.items()}


def _strings(value: Any, kind: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AttributeValueError(f"{kind} value is not a list of strings")
    return value


def _binary(value: Any) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, TypeError):
        raise AttributeValueError("B value is not base64") from None
