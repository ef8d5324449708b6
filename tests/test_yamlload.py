"""YAML loading: YAML 1.2 scalars, refused duplicates, located values, readable syntax errors."""

from __future__ import annotations

import gc
import random
from pathlib import Path

import pytest
import yaml

from generator import yamlload
from generator.diagnostics import Diagnostic
from generator.yamlload import LoadError, Loc, load_file, load_yaml

REPO_ROOT = Path(__file__).resolve().parent.parent


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


def test_an_explicit_tag_on_a_key_is_an_error_not_a_crash() -> None:
    # GIVEN keys with tags their text does not fit (PyYAML raised out of the loader here)
    diags = load_errors("!!int ten: 1\nok: 2\n!unknown x: 3\n")

    # THEN each is a located diagnostic at the key
    assert [(d.line, d.col, d.code, d.message) for d in diags] == [
        (1, 1, "yaml-tag", "'ten' cannot be read as int"),
        (3, 1, "yaml-tag", "'x' cannot be read as !unknown"),
    ]


# --- libyaml and the pure-Python parser give the same result ------------------------------
#
# load_yaml parses with libyaml (C) when PyYAML has it and falls back to the pure-Python parser
# for a text libyaml refuses or holds a character the two treat differently. Either way the
# outcome must be what the pure-Python parser alone gives: the same data and locations, or the
# same diagnostics.

needs_libyaml = pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml")


def outcome(text: str) -> tuple[object, ...]:
    try:
        doc = load_yaml(text, "mappings/x.yaml")
    except LoadError as exc:
        return ("error", [(d.render(), d.context) for d in exc.diagnostics])
    return ("ok", repr(doc.data), sorted(doc.values.items()), sorted(doc.keys.items(), key=repr))


def pure_outcome(text: str, monkeypatch: pytest.MonkeyPatch) -> tuple[object, ...]:
    with monkeypatch.context() as m:
        m.setattr(yamlload, "_FAST_LOADER", None)
        return outcome(text)


# Where the two parsers disagree (found by differential fuzzing), and the usual suspects.
EDGE_CASES = [
    "a: b\t# tab before a comment\n",
    "a:\tb\n",
    "a: [1,\t2]\n",
    "a: x\ty\n",
    "a: {name: ev?ent}\n",
    "a: [x?y]\n",
    "a: b # why?\n",
    "a: [!INSERT, MODIFY]\n",
    "a: !;!str x\n",
    "a: ups\ufeffert\n",
    "\ufeffa: 1\n",
    "a: {type: }\n",
    "a: {type: , b: 1}\n",
    "a: [b: ]\n",
    "a: {type:\n  # comment\n  }\n",
    "a: {b}\n",
    "a:\n  b:\n  c: ~\n",
    "- \n- a\n-\n",
    "a: &x {b: 1}\nc: *x\n",
    "a: *undefined\n",
    "a: |\n  x\n b\n",
    "a: |# note\n  x\n",
    "|# entity: orders\n",
    "a: >-2#\n   x\n",
    "a: >-\n  folded\n\n  text\n",
    "a: 'it''s'\nb: \"\\u00e9\\x41\\U0001F600\"\n",
    "a: 1\r\nb: 2\r\n",
    "a: x\u2028b: 2\n",
    "a: \U0001f600 b\nc: d\n",
    "%YAML 1.2\n---\na: 1\n",
    "%YAML 2.0\n---\na: 1\n",
    "a: b: c\n",
    "a: [\n",
    "a: {b: 1,}\n",
    "[a, b]: c\n",
    "a: \x07\n",
    "a: 0x1F\nb: 010\nc: 0o17\nd: .inf\ne: 1e3\nf: on\ng: 2024-01-01\n",
    "---\n",
    "---",
    "a: 1\n---\n",
    "a: 1\n---",
    "a:",
    "a:\n  -",
    "a: 1\n...\n",
    "a: " + "[" * 60 + "]" * 60 + "\n",
]


@needs_libyaml
@pytest.mark.parametrize("text", EDGE_CASES)
def test_libyaml_and_the_pure_parser_agree_on_edge_cases(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a text where the parsers could differ  WHEN loaded both ways  THEN the same outcome
    assert outcome(text) == pure_outcome(text, monkeypatch)


def _mutate(rng: random.Random, text: str) -> str:
    pieces = ["\t", ":", ": ", "- ", "[", "]", "{", "}", ",", "'", '"', "#", "&a ", "*a", "!", "?", "|", ">"]
    pieces += ["\n", "\n  ", "  ", "~", "''", "é", "\r\n", "\ufeff", "---\n", "<<: "]
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(text) + 1)
        if rng.random() < 0.6:
            text = text[:at] + rng.choice(pieces) + text[at:]
        else:
            text = text[:at] + text[at + rng.randint(1, 6) :]
    return text


@needs_libyaml
def test_libyaml_and_the_pure_parser_agree_on_mutated_mappings(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the bundled mappings with a few characters inserted or deleted (a fixed seed)
    rng = random.Random(20261127)
    sources = [p.read_text(encoding="utf-8") for p in sorted((REPO_ROOT / "mappings").glob("*.yaml"))]
    texts = [_mutate(rng, rng.choice(sources)) for _ in range(150)]

    # WHEN each is loaded both ways  THEN the outcomes are the same
    for text in texts:
        assert outcome(text) == pure_outcome(text, monkeypatch), text


@needs_libyaml
def test_a_plain_mapping_file_is_parsed_by_libyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a pure-Python loader that records being used
    used = []

    class Recording(yamlload._PureLoader):
        def __init__(self, stream: str) -> None:
            used.append(stream != "")  # "" is the loader that only constructs scalars
            super().__init__(stream)

    monkeypatch.setattr(yamlload, "_PureLoader", Recording)

    # WHEN a bundled mapping is loaded  THEN the pure-Python parser is not used to parse it
    load_file(REPO_ROOT / "mappings" / "orders.yaml", "mappings/orders.yaml")
    assert used == [False]

    # WHEN a text with a tab is loaded  THEN it is (and it words the syntax error)
    load_errors("a: b\t# c\n")
    assert used == [False, True]


def test_loading_leaves_no_reference_cycles() -> None:
    # GIVEN a run with the cyclic collector off (as generator/cli.py runs)
    text = (REPO_ROOT / "mappings" / "orders.yaml").read_text(encoding="utf-8")
    gc.collect()
    gc.disable()
    try:
        # WHEN a file is loaded and the result dropped
        load_yaml(text, "mappings/orders.yaml")
        # THEN reference counting alone freed its node tree: nothing is left for the collector
        assert gc.collect() == 0
    finally:
        gc.enable()
