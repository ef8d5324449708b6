"""YAML loading: YAML 1.2 scalars, refused duplicates, located values, readable syntax errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.diagnostics import Diagnostic
from generator.yamlload import LoadError, Loc, load_file, load_yaml


def load_errors(text: str) -> list[Diagnostic]:
    with pytest.raises(LoadError) as exc:
        load_yaml(text, "mappings/x.yaml")
    return exc.value.diagnostics


def test_on_yes_no_off_are_strings_and_only_true_false_are_booleans() -> None:
    # GIVEN the YAML 1.1 boolean words as keys and values
    text = "on: yes\noff: no\ny: n\nflag: true\nother: False\n"

    # WHEN loaded
    data = load_yaml(text, "x.yaml").data

    # THEN they stay strings (`on:` is a rule key, not True) and only true/false are booleans
    assert data == {"on": "yes", "off": "no", "y": "n", "flag": True, "other": False}
    assert all(isinstance(k, str) for k in data)


def test_dates_and_times_stay_strings() -> None:
    # GIVEN bare dates and timestamps, which YAML 1.1 turns into date objects
    data = load_yaml("a: 2024-01-01\nb: 2024-01-01T10:00:00Z\nc: 12:30:00\n", "x.yaml").data

    # THEN they are the text written
    assert data == {"a": "2024-01-01", "b": "2024-01-01T10:00:00Z", "c": "12:30:00"}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("10", 10),
        ("-3", -3),
        ("0o17", 15),
        ("0x1F", 31),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        ("null", None),
        ("~", None),
        ("", None),
        ("010", 10),  # YAML 1.2: decimal, not the YAML 1.1 octal 8
        ("1_000", "1_000"),  # YAML 1.1 digit grouping is not a number in 1.2
        ("0b101", "0b101"),
        ("NO", "NO"),
    ],
)
def test_core_schema_scalars(text: str, value: object) -> None:
    # GIVEN one scalar  WHEN loaded  THEN it resolves by the YAML 1.2 core schema
    assert load_yaml(f"v: {text}\n", "x.yaml").data == {"v": value}


def test_every_duplicate_key_is_reported_with_both_lines() -> None:
    # GIVEN two duplicated keys at different depths
    text = "a: 1\nb:\n  c: 1\n  c: 2\na: 3\n"

    # WHEN loaded
    diags = load_errors(text)

    # THEN both are reported at the repeated key, naming the first definition
    assert [(d.line, d.col, d.path, d.message) for d in diags] == [
        (4, 3, "b.c", "duplicate key 'c' (first defined at line 3)"),
        (5, 1, "a", "duplicate key 'a' (first defined at line 1)"),
    ]
    assert all(d.code == "yaml-duplicate-key" for d in diags)


def test_merge_keys_and_non_string_keys_are_refused() -> None:
    # GIVEN a merge key and an integer key
    diags = load_errors("base: &b {x: 1}\nitem:\n  <<: *b\n1: one\n")

    # THEN each is refused where it is written
    assert [(d.line, d.col, d.code) for d in diags] == [(3, 3, "yaml-merge"), (4, 1, "yaml-key-type")]
    assert diags[1].message == "key '1' is read as int, not a string"
    assert diags[1].hint == "quote it: '1'"


def test_values_and_keys_know_their_line_and_column() -> None:
    # GIVEN a nested document
    doc = load_yaml("target:\n  tables:\n    - table: orders\n      key: [order_id]\n", "x.yaml")

    # THEN values, keys and list items are located (1-based)
    assert doc.loc(("target", "tables", 0, "table")) == Loc(3, 14)
    assert doc.loc(("target", "tables", 0, "table"), key=True) == Loc(3, 7)
    assert doc.loc(("target", "tables", 0, "key", 0)) == Loc(4, 13)
    # and an unknown path falls back to its nearest located ancestor
    assert doc.loc(("target", "tables", 0, "columns", "x")) == Loc(3, 7)
    assert doc.loc(("nowhere",)) == Loc(1, 1)


def test_syntax_error_shows_numbered_context_with_a_caret() -> None:
    # GIVEN an unclosed flow sequence
    text = "a: 1\nb: [x, y\nc: 2\n"

    # WHEN loaded
    (diag,) = load_errors(text)

    # THEN the error names where the bracket was opened and shows the lines around it
    assert (diag.line, diag.col, diag.code) == (3, 2, "yaml-syntax")
    assert diag.message == (
        "YAML syntax error: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence started at line 2, column 4)"
    )
    assert diag.context.splitlines() == [
        "    1 | a: 1",
        "    2 | b: [x, y",
        "  > 3 | c: 2",
        "      |  ^",
    ]
    assert diag.render().startswith("mappings/x.yaml:3:2: error: (root): YAML syntax error")


def test_a_tab_used_for_indentation_is_named() -> None:
    # GIVEN a tab where YAML needs spaces
    (diag,) = load_errors("a:\n  b: 1\n\tc: 2\n")

    # THEN the message says so instead of "found character '\t' that cannot start any token"
    assert (diag.line, diag.col) == (3, 1)
    assert diag.message == "YAML syntax error: a tab character where YAML expects spaces"
    assert "spaces" in diag.hint


@pytest.mark.parametrize(
    ("text", "code", "line"),
    [("", "yaml-empty", 1), ("# only a comment\n", "yaml-empty", 1), ("a: 1\n---\nb: 2\n", "yaml-multi", 3)],
)
def test_empty_and_multi_document_files_are_refused(text: str, code: str, line: int) -> None:
    # GIVEN a file with no document or two  WHEN loaded  THEN one error (the second document's start)
    (diag,) = load_errors(text)
    assert (diag.code, diag.line) == (code, line)


def test_an_explicit_tag_the_text_does_not_fit_is_an_error_not_a_crash() -> None:
    # GIVEN explicit tags whose text cannot be constructed
    diags = load_errors("a: !!int ten\nb: !!binary zz\nc: !!int 12\n")

    # THEN each is a located diagnostic (the valid one loads silently)
    assert [(d.line, d.col, d.path, d.message) for d in diags] == [
        (1, 4, "a", "'ten' cannot be read as int"),
        (2, 4, "b", "'zz' cannot be read as binary"),
    ]


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    # GIVEN a Latin-1 file
    path = tmp_path / "x.yaml"
    path.write_bytes("description: caf\xe9\n".encode("latin-1"))

    # WHEN loaded
    with pytest.raises(LoadError) as exc:
        load_file(path, "mappings/x.yaml")

    # THEN it is one located error asking for UTF-8
    (diag,) = exc.value.diagnostics
    assert diag.file == "mappings/x.yaml"
    assert diag.code == "yaml-encoding"
    assert "not UTF-8" in diag.message
