"""YAML loading: YAML 1.2 scalars, refused duplicates, located values, readable syntax errors."""

from __future__ import annotations

import gc
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from generator import yamlload
from generator.diagnostics import Diagnostic
from generator.yamlload import LoadError, Loc, load_file, load_yaml

REPO_ROOT = Path(__file__).resolve().parent.parent


def billion_laughs(levels: int = 9) -> str:
    """Each list repeats the one before nine times: 1 KB that expands to 10^levels values."""
    rows = ["a: &a [" + ",".join(['"lol"'] * 9) + "]"]
    for i in range(1, levels):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        rows.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(rows) + "\n"


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
    "a: &x [*x]\n",
    billion_laughs(6),
    "a: &x {b: 1}\nc: [*x, *x]\n",
    "a: &x 1\nb: [*x, *y]\n",
    "a: &x 1\nb: &x 2\n",
    "a: " + "[" * 70 + "]" * 70 + "\n",
    "".join("  " * i + f"k{i}:\n" for i in range(70)),
    "a: \x00\n",
    "a: 1\n\x1b: 2\n",
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


# --- what a file may cost to load -------------------------------------------------------------
#
# Aliases are kept (a mapping test may reuse a record) but what they repeat is bounded, and
# collections nest at most MAX_DEPTH deep; each refusal is one located error.


def test_an_alias_bomb_is_refused_at_the_alias_that_goes_past_the_bound() -> None:
    # GIVEN a bomb of five levels, 10^5 values (small enough that a loader without the bound
    # fails this test quickly instead of hanging: the full one runs in its own process below)
    text = billion_laughs(5)

    # WHEN loaded
    started = time.perf_counter()
    (diag,) = load_errors(text)
    elapsed = time.perf_counter() - started

    # THEN one error at the first alias past 10,000 repeated values: the first *d on line 5
    # (b adds 90, c 819, d 7,380: 8,289; the next *d repeats 7,381), found before expanding
    assert (diag.line, diag.col, diag.path, diag.code) == (5, 8, "(root)", "yaml-alias-size")
    assert diag.message == (
        "alias *d repeats 7,381 values, which takes the aliases of this file past 10,000 repeated values"
    )
    assert "write the repeated part out" in diag.hint
    assert diag.context.splitlines()[2:4] == [
        "  > 5 | e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]",
        "      |        ^",
    ]
    assert elapsed < 2, f"{elapsed:.2f} s: a hang guard, not a benchmark (it takes milliseconds)"


def test_aliases_within_the_bound_load_and_are_located_at_their_anchor() -> None:
    # GIVEN a value anchored once and repeated by aliases
    doc = load_yaml("base: &rec {id: 1, tags: [a, b]}\ncopies: [*rec, *rec]\n", "x.yaml")

    # THEN each alias is the value in full, not shared, and located where the value is written
    assert doc.data == {
        "base": {"id": 1, "tags": ["a", "b"]},
        "copies": [{"id": 1, "tags": ["a", "b"]}, {"id": 1, "tags": ["a", "b"]}],
    }
    copies = doc.data["copies"]  # type: ignore[index]
    assert copies[0] is not copies[1]
    assert doc.loc(("copies", 1, "tags", 1)) == Loc(1, 30)


def test_aliases_up_to_the_bound_load() -> None:
    # GIVEN aliases repeating exactly MAX_ALIASED_VALUES values (a list of 99 scalars is 100)
    n = yamlload.MAX_ALIASED_VALUES // 100
    text = "a: &a [" + ",".join(["x"] * 99) + "]\nb: [" + ",".join(["*a"] * n) + "]\n"

    # WHEN loaded  THEN it loads; one more alias is refused
    assert len(load_yaml(text, "x.yaml").data["b"]) == n  # type: ignore[index]
    (diag,) = load_errors(text.replace("*a]", "*a,*a]"))
    assert diag.code == "yaml-alias-size"


@pytest.mark.parametrize(
    ("text", "line", "col"),
    [
        ("a: &a [*a]\n", 1, 8),
        ("a: &a\n  b:\n    c: *a\n", 3, 8),
        ("a: &a {b: [1, {c: *a}]}\n", 1, 19),
    ],
)
def test_a_recursive_alias_is_refused_where_it_is_written(text: str, line: int, col: int) -> None:
    # GIVEN an alias inside the value its own anchor names (a RecursionError traceback before)
    (diag,) = load_errors(text)

    # THEN one located error
    assert (diag.line, diag.col, diag.code) == (line, col, "yaml-alias-recursive")
    assert diag.message == "alias *a is inside the value anchored as &a: a recursive structure"


def nested(depth: int, flow: bool) -> str:
    """`depth` collections, one inside the other: flow lists, or block mappings."""
    if flow:
        return "a: " + "[" * (depth - 1) + "]" * (depth - 1) + "\n"
    return "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "v\n"


@pytest.mark.parametrize("flow", [True, False], ids=["flow", "block"])
def test_nesting_is_bounded(flow: bool) -> None:
    # GIVEN collections nested MAX_DEPTH deep  WHEN loaded  THEN they load
    limit = yamlload.MAX_DEPTH
    load_yaml(nested(limit, flow), "x.yaml")

    # GIVEN one level more  THEN one error at the collection that goes past the bound
    (diag,) = load_errors(nested(limit + 1, flow))
    assert (diag.line, diag.col) == ((1, 4 + limit - 1) if flow else (limit + 1, 2 * limit + 1))
    assert (diag.code, diag.message) == ("yaml-depth", f"values nested more than {limit} levels deep")


@pytest.mark.parametrize(("flow", "depth"), [(True, 5000), (False, 1500)], ids=["flow", "block"])
def test_very_deep_nesting_is_an_error_in_milliseconds_not_a_traceback(flow: bool, depth: int) -> None:
    # GIVEN thousands of levels, past Python's recursion limit (a RecursionError traceback
    # before) and libyaml's own limit of 1,000 (1,500 block levels are already 2 MB of indent)
    text = nested(depth, flow)

    # WHEN loaded  THEN one located error, quickly
    started = time.perf_counter()
    (diag,) = load_errors(text)
    assert diag.code == "yaml-depth"
    assert diag.line == (1 if flow else yamlload.MAX_DEPTH + 1)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    ("text", "line", "col", "char"),
    [
        ("entity: orders\nsource:\n  table: ord\x00ers\n", 3, 13, "U+0000"),
        ("a: 1\nb: \x1b[31mred\n", 2, 4, "U+001B"),
        ("\ufeffa: \x07\n", 1, 4, "U+0007"),  # a byte order mark takes no column
        ("a: 1\r\nb: x\x7f\n", 2, 5, "U+007F"),
        ("a: '\ufffe'\n", 1, 5, "U+FFFE"),
    ],
)
def test_a_character_yaml_does_not_allow_is_located(text: str, line: int, col: int, char: str) -> None:
    # GIVEN a control character (or a non-character) in the text
    (diag,) = load_errors(text)

    # THEN it is located where it is, named, with no PyYAML internals in the message
    assert (diag.line, diag.col, diag.code) == (line, col, "yaml-character")
    assert diag.message == f"the character {char} is not allowed in a YAML file"
    assert "position" not in diag.message and "<unicode string>" not in diag.render()
    # and the context shows where it is, as a visible symbol over the caret
    shown = diag.context.splitlines()
    caret = next(i for i, row in enumerate(shown) if row.strip().endswith("^"))
    assert shown[caret].index("^") == len(shown[caret - 1].split("| ", 1)[0]) + 2 + col - 1


def test_a_control_character_is_shown_as_a_symbol_in_the_context() -> None:
    (diag,) = load_errors("a: 1\nb: x\x00y\n")
    assert diag.context.splitlines() == ["    1 | a: 1", "  > 2 | b: x\u2400y", "      |     ^"]
    assert diag.hint.endswith('write it as "\\x00" in double quotes')


def test_a_byte_that_is_not_utf8_is_located_past_the_first_read_chunk(tmp_path: Path) -> None:
    # GIVEN a Latin-1 byte on line 402, past the 8 KB chunks read_text decodes (its error
    # offset was within a chunk, and the error was reported at 1:1)
    path = tmp_path / "x.yaml"
    path.write_bytes(b"# filler line of twenty\n" * 400 + b"a: 1\r\nb: caf\xe9\n")

    # WHEN loaded
    with pytest.raises(LoadError) as exc:
        load_file(path, "mappings/x.yaml")

    # THEN one error at its line and column, naming the byte and its file offset
    (diag,) = exc.value.diagnostics
    assert (diag.line, diag.col, diag.code) == (402, 7, "yaml-encoding")
    assert (
        diag.message
        == f"the file is not UTF-8 (invalid continuation byte: byte 0xE9 at offset {24 * 400 + 12})"
    )


def test_a_path_that_cannot_be_read_is_a_located_error(tmp_path: Path) -> None:
    # GIVEN a directory where a file is expected  WHEN loaded  THEN an error, not a traceback
    with pytest.raises(LoadError) as exc:
        load_file(tmp_path, "mappings/x.yaml")
    (diag,) = exc.value.diagnostics
    assert (diag.file, diag.line, diag.col, diag.code) == ("mappings/x.yaml", 1, 1, "file-read")
    assert diag.message == "the file could not be read: Is a directory"


def test_line_endings_are_read_as_before(tmp_path: Path) -> None:
    # GIVEN CRLF and CR line endings  WHEN a file is loaded  THEN as read_text gave it
    path = tmp_path / "x.yaml"
    path.write_bytes(b"a: |\r\n  x\r\n  y\rb: 2\r")
    doc = load_file(path, "x.yaml")
    assert doc.data == {"a": "x\ny\n", "b": 2}
    assert doc.loc(("b",)) == Loc(4, 4)


def test_a_mapping_test_file_has_the_same_bounds(tmp_path: Path) -> None:
    # GIVEN a mapping test file (mappings/tests/*.yaml) holding an alias bomb
    from generator.mapping_tests import load_test_file

    path = tmp_path / "orders.yaml"
    bomb = "".join(f"      {row}\n" for row in billion_laughs(5).splitlines())
    path.write_text(f"entity: orders\ntests:\n  - name: x\n    given:\n    lols:\n{bomb}", encoding="utf-8")

    # WHEN loaded as the test runner loads it  THEN one located error, no document
    doc, problems = load_test_file(path, "mappings/tests/orders.yaml")
    assert doc is None
    assert [(d.file, d.line, d.col, d.code) for d in problems] == [
        ("mappings/tests/orders.yaml", 10, 14, "yaml-alias-size")
    ]


def test_the_cli_refuses_an_alias_bomb_in_seconds_and_little_memory(tmp_path: Path) -> None:
    # GIVEN a project whose mapping is a billion laughs (1 KB, 10^9 values)
    (tmp_path / "mappings").mkdir()
    (tmp_path / "project.yaml").write_text((REPO_ROOT / "project.yaml").read_text(encoding="utf-8"))
    (tmp_path / "mappings" / "bomb.yaml").write_text(billion_laughs(), encoding="utf-8")

    # WHEN `validate` runs in its own process, its address space capped at 1 GiB so that a
    # regression fails here instead of taking the machine's memory (it took 4.6 GB)
    # The peak is the new process image's own (VmHWM): ru_maxrss would count the pytest process
    # it was forked from, as Linux carries the old image's peak over exec.
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from generator.cli import main\n"
        "code = main(['validate', '--root', sys.argv[1]])\n"
        "status = open('/proc/self/status').read()\n"
        "print(status.split('VmHWM:')[1].split()[0])\n"
        "sys.exit(code)\n"
    )
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - started

    # THEN it exits 1 with the located error, well within a generous bound (a hang guard, not a
    # performance figure: it takes under a second), its peak resident size under 200 MB
    assert proc.returncode == 1, proc.stderr
    assert "mappings/bomb.yaml:5:8: error: (root): alias *d repeats 7,381 values" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert elapsed < 30
    peak_kib = int(proc.stdout.split()[-1])
    assert peak_kib < 200 * 1024, f"peak resident size {peak_kib / 1024:.0f} MiB"
