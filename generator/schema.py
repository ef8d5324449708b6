"""Structural validation against the shipped JSON Schemas, with located, actionable messages."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from generator.diagnostics import Diagnostic, PathT, Severity, format_path
from generator.schemacheck import Check, compile_check
from generator.yamlload import Located

SCHEMA_FILES = {
    "mapping": "mapping.schema.json",
    "project": "project.schema.json",
    "mapping-test": "mapping-test.schema.json",
}


@cache
def schema_text(kind: str) -> str:
    return resources.files("generator.schemas").joinpath(SCHEMA_FILES[kind]).read_text(encoding="utf-8")


@cache
def load_schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(schema_text(kind))
    return schema


@cache
def _ecma_pattern(pattern: str) -> re.Pattern[str]:
    """JSON Schema patterns are ECMA-262 regexes, where a final '$' ends the input. Python's
    '$' also matches before a trailing newline, which would let "orders\n" pass as an SQL
    identifier; '\\Z' is the ECMA meaning."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _pattern(
    validator: Any, pattern: str, instance: object, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if isinstance(instance, str) and not _ecma_pattern(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_StrictValidator = validators.extend(Draft202012Validator, {"pattern": _pattern})


@cache
def _validator(kind: str) -> Any:
    schema = load_schema(kind)
    Draft202012Validator.check_schema(schema)
    return _StrictValidator(schema)


@cache
def _is_valid(kind: str) -> Check:
    return compile_check(_validator(kind))


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


# Each pattern of the shipped schemas in words, for the message that refuses a value
# (tests/test_schema.py checks that every pattern has its words here).
PATTERN_WORDS = {
    r"^(rate\([1-9][0-9]* (minute|minutes|hour|hours|day|days)\)|cron\([^()]+\))$": (
        "rate(N minutes|hours|days) or cron(...), EventBridge Scheduler syntax"
    ),
    r"^[.\-_A-Za-z0-9]+$": "letters, digits, '.', '-' and '_'",
    r"^[A-Za-z0-9_-]+(\[[0-9]+\])*(\.[A-Za-z0-9_-]+(\[[0-9]+\])*)*$": (
        "names of letters, digits, '_' and '-' joined by '.', each optionally followed by list indexes such as [0]"
    ),
    r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$": "names of letters, digits, '_' and '-' joined by '.'",
    r"^[A-Za-z0-9_-]{0,20}$": "at most 20 letters, digits, '_' or '-'",
    r"^[A-Za-z0-9_-]{1,255}$": "1 to 255 letters, digits, '_' or '-'",
    r"^[A-Za-z0-9_-]{1,64}$": "1 to 64 letters, digits, '_' or '-'",
    r"^[A-Za-z0-9_.-]+$": "letters, digits, '_', '.' and '-'",
    r"^[A-Za-z0-9_.-]{3,255}$": "3 to 255 letters, digits, '_', '.' or '-'",
    r"^[A-Za-z_][A-Za-z0-9_]*$": "a letter or '_', then letters, digits or '_'",
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$": (
        "identifiers (a letter or '_', then letters, digits or '_') joined by '.'"
    ),
    r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$": "table.column: two identifiers joined by '.'",
    r"^[A-Za-z_][A-Za-z0-9_]{0,62}$": "a letter or '_', then up to 62 letters, digits or '_'",
    r"^[a-z][a-z0-9-]{0,39}$": "a lower-case letter, then up to 39 lower-case letters, digits or '-'",
    r"^[a-z][a-z0-9_]{0,39}$": "a lower-case letter, then up to 39 lower-case letters, digits or '_'",
    r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]$": "an AWS region name such as ap-northeast-1",
    r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+$": (
        "a Secrets Manager secret ARN: arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME"
    ),
    r"^arn:aws[a-z-]*:sns:": "an SNS topic ARN: arn:aws:sns:REGION:ACCOUNT:NAME",
    r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$": (
        "a KMS key ARN: arn:aws:kms:REGION:ACCOUNT:key/KEY-ID (not an alias)"
    ),
    r"^(db|cluster|prx)-[A-Za-z0-9]{1,64}$": (
        "an RDS resource id: db-... (a DB instance's DbiResourceId), cluster-... (an Aurora cluster's) "
        "or prx-... (an RDS Proxy's)"
    ),
    r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$": "a DNS host name: letters, digits, '.' and '-'",
    r"^[a-z0-9-]+(\.[a-z0-9-]+)*$": "a service name of lower-case letters, digits and '-' joined by '.', such as secretsmanager",
    r"^vpc-[0-9a-f]{8,17}$": "a VPC id: vpc- and 8 or 17 hexadecimal digits",
    r"^sg-[0-9a-f]{8,17}$": "a security group id: sg- and 8 or 17 hexadecimal digits",
    r"^subnet-[0-9a-f]{8,17}$": "a subnet id: subnet- and 8 or 17 hexadecimal digits",
}


def _forms(schema: dict[str, Any]) -> list[str]:
    """The forms a oneOf admits, in words."""
    out = []
    for branch in schema.get("oneOf", []):
        if not isinstance(branch, dict):
            continue
        if "const" in branch:
            out.append(json.dumps(branch["const"]))
        elif branch.get("type") == "array":
            items = branch.get("items", {})
            ref = items.get("$ref", "") if isinstance(items, dict) else ""
            noun = ref.rsplit("/", 1)[-1] + "s" if ref else _expected(items.get("type", "value")) + " values"
            out.append(f"a list of {noun}")
        elif "type" in branch:
            out.append(_expected(branch["type"]))
        elif "$ref" in branch:
            out.append(f"a {branch['$ref'].rsplit('/', 1)[-1]}")
    return out


def _expected(types: object) -> str:
    if isinstance(types, list):
        return " or ".join(_TYPE_WORDS.get(str(t), str(t)) for t in types)
    return _TYPE_WORDS.get(str(types), str(types))


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? " if close else ""


def _property_schema(error: ValidationError, key: str) -> dict[str, Any]:
    props = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
    sub: dict[str, Any] = props.get(key, {})
    if "$ref" in sub:
        ref = sub["$ref"].split("/")[-1]
        sub = {**_validator_schema_defs().get(ref, {}), **{k: v for k, v in sub.items() if k != "$ref"}}
    return sub


@cache
def _validator_schema_defs() -> dict[str, Any]:
    defs: dict[str, Any] = load_schema("mapping").get("$defs", {})
    return defs


def _one_of_message(error: ValidationError) -> tuple[str, str]:
    """Explain a failed oneOf: which alternatives exist and why the value fits none or several."""
    ctx = list(error.context or ())
    branches = error.schema.get("oneOf", [])
    required_sets: list[list[str]] = [
        b["required"] for b in branches if isinstance(b, dict) and "required" in b
    ]
    inst = error.instance
    if required_sets and isinstance(inst, dict) and len(required_sets) == len(branches):
        present = [sorted(set(r) & set(inst)) for r in required_sets]
        leaders = [r[0] for r in required_sets]
        given = [k for k in leaders if k in inst]
        if len(set(given)) > 1:
            return (
                f"gives {' and '.join(repr(g) for g in given)} together",
                f"keep exactly one of {', '.join(leaders)}",
            )
        if not given:
            return (f"gives none of {', '.join(leaders)}", f"add exactly one of {', '.join(leaders)}")
        # One leader given, but its companions missing.
        for req, have in zip(required_sets, present, strict=True):
            if req[0] in inst and len(have) < len(req):
                missing = [r for r in req if r not in inst]
                return (
                    f"'{req[0]}' needs {', '.join(repr(m) for m in missing)} too",
                    f"add {', '.join(missing)}",
                )
    if ctx:
        deepest = max(ctx, key=lambda e: len(e.absolute_path))
        return (deepest.message, "see the schema description of this key")
    return ("does not match any allowed form", "see the mapping reference in the README")


def _fitting_branch(error: ValidationError) -> list[ValidationError] | None:
    """The errors of the one oneOf branch whose type fits the value, if exactly one fits.

    `do: [{action: upsert, tabel: orders}]` fails `const: ignore` by its type and the list
    branch by an unknown key; only the latter says something useful, at its own path.
    """
    branches = error.schema.get("oneOf", []) if isinstance(error.schema, dict) else []
    by_branch: dict[int, list[ValidationError]] = {}
    for sub in error.context or ():
        by_branch.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
    if len(by_branch) < len(branches):
        return None  # some branch matched: the value fits several forms, not none
    fitting = [
        errs
        for errs in by_branch.values()
        if not any(e.validator in {"type", "const"} and not e.relative_path for e in errs)
    ]
    if len(fitting) != 1:
        return None
    return sorted(fitting[0], key=lambda e: (list(map(str, e.absolute_path)), e.validator))


def _convert(error: ValidationError, doc: Located) -> list[Diagnostic]:
    path: PathT = tuple(error.absolute_path)
    inst = error.instance
    v = error.validator
    key_loc = False
    code = f"schema-{v}"
    if "propertyNames" in error.absolute_schema_path and isinstance(inst, str):
        # A key that fails propertyNames: jsonschema reports it at the object holding it.
        loc = doc.loc(path + (inst,), key=True)
        desc = error.schema.get("description", "") if isinstance(error.schema, dict) else ""
        return [
            Diagnostic(
                doc.file,
                loc.line,
                loc.col,
                Severity.ERROR,
                format_path(path + (inst,)),
                f"key {inst!r} does not have the required form"
                + (
                    f" ({PATTERN_WORDS[error.validator_value]})"
                    if error.validator_value in PATTERN_WORDS
                    else ""
                )
                if v != "maxLength"
                else f"key {inst!r} is {len(inst)} characters, longer than the {error.validator_value} allowed",
                desc.rstrip(".")
                or "keys here must be plain identifiers (letters, digits, '_'; dotted segments for message fields)",
                "schema-key-name",
            )
        ]
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extras = (
            [k for k in inst if k not in error.schema.get("properties", {})] if isinstance(inst, dict) else []
        )
        out = []
        for extra in extras:
            loc = doc.loc(path + (extra,), key=True)
            out.append(
                Diagnostic(
                    doc.file,
                    loc.line,
                    loc.col,
                    Severity.ERROR,
                    format_path(path + (extra,)),
                    f"unknown key '{extra}'",
                    f"{_suggest(extra, allowed)}allowed here: {', '.join(allowed)}",
                    "schema-unknown-key",
                )
            )
        return out
    if v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else str(error.validator_value)
        sub = _property_schema(error, missing)
        hint = f"add '{missing}:'"
        if sub.get("description"):
            hint += f" ({sub['description'].rstrip('.')})"
        message = f"missing required key '{missing}'"
    elif v == "type":
        message = f"expected {_expected(error.validator_value)}, got {_describe(inst)}"
        hint = "change the value's type"
        if (
            isinstance(inst, str)
            and inst.lower() in {"yes", "no", "on", "off", "y", "n"}
            and "boolean" in str(error.validator_value)
        ):
            hint = "mapping files use YAML 1.2: write true or false"
        elif isinstance(inst, str) and "integer" in str(error.validator_value):
            hint = "write the number without quotes"
    elif v == "enum":
        options = [str(o) for o in error.validator_value]
        message = f"{_describe(inst)} is not allowed"
        hint = f"{_suggest(str(inst), options)}use one of: {', '.join(options)}"
    elif v == "const":
        message = f"{_describe(inst)} is not allowed"
        hint = f"use {json.dumps(error.validator_value)}"
    elif v == "pattern":
        form = PATTERN_WORDS.get(error.validator_value, f"the pattern {error.validator_value}")
        message = f"{_describe(inst)} does not have the required form ({form})"
        desc = error.schema.get("description", "")
        hint = desc.rstrip(".") if desc else f"write {form}"
        if error.schema.get("examples"):
            hint += f" (e.g. {error.schema['examples'][0]})"
    elif v in {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}:
        word = "below the minimum" if "inimum" in v else "above the maximum"
        message = f"{inst} is {word} {error.validator_value}"
        hint = error.schema.get("description", "").rstrip(".") or "choose a value in range"
    elif v == "maxLength":
        message = (
            f"{_describe(inst)} is {len(inst)} characters, longer than the {error.validator_value} allowed"
        )
        hint = error.schema.get("description", "").rstrip(".") or "shorten it"
    elif v in {"minItems", "minProperties", "minLength"}:
        message = "is empty" if not inst else f"has too few entries (at least {error.validator_value})"
        hint = "add at least one entry or remove the key"
    elif v == "uniqueItems":
        seen, dups = set(), []
        for item in inst:
            marker = json.dumps(item, sort_keys=True)
            if marker in seen:
                dups.append(item)
            seen.add(marker)
        message = f"lists {', '.join(repr(d) for d in dups)} more than once"
        hint = "remove the repeated entries"
    elif v == "oneOf":
        fitting = _fitting_branch(error)
        if fitting is not None:
            return [d for sub in fitting for d in _convert(sub, doc)]
        forms = _forms(error.schema) if isinstance(error.schema, dict) else []
        if forms and not isinstance(inst, (dict, list)):
            # A scalar fitting none of the forms (`do: upsert`): say which forms there are.
            message = f"{_describe(inst)} is not allowed"
            hint = f"write {' or '.join(forms)}"
            examples = [e for e in error.schema.get("examples", []) if isinstance(e, (dict, list))]
            if examples:
                hint += f", e.g. {json.dumps(examples[0])}"
        else:
            message, hint = _one_of_message(error)
    elif v == "not":
        message = "combines keys that exclude each other"
        hint = (
            "give either field or const, not both"
            if isinstance(inst, dict) and {"field", "const"} <= set(inst)
            else "remove one of them"
        )
    else:
        message, hint = error.message, "see the mapping reference in the README"
    loc = doc.loc(path, key=key_loc or v == "required")
    if v == "required":
        loc = doc.loc(path)
    return [Diagnostic(doc.file, loc.line, loc.col, Severity.ERROR, format_path(path), message, hint, code)]


def validate(doc: Located, kind: str) -> list[Diagnostic]:
    """Every structural problem of one document."""
    if _is_valid(kind)(doc.data):
        return []  # the common case, decided ~7x faster than by jsonschema's iter_errors
    out: list[Diagnostic] = []
    errors = sorted(
        _validator(kind).iter_errors(doc.data), key=lambda e: (list(map(str, e.absolute_path)), e.validator)
    )
    for error in errors:
        out.extend(_convert(error, doc))
    return out
