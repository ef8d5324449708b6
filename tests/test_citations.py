"""What users read cites the AWS documentation or the project's own docs, never "facts 6.3"
(the project's internal notes, which users do not have): validate's output on the whole
broken-mapping corpus, every generated file, the docs and the README, and every string the
code can show (its literals other than docstrings and comments)."""

from __future__ import annotations

import re
import tokenize
from pathlib import Path

import pytest

from generator.cli import main
from tests.test_broken_mappings import CASES

ROOT = Path(__file__).resolve().parent.parent
INTERNAL = re.compile(r"facts \d|aws-pipeline-facts")


def test_validate_output_on_the_whole_corpus_cites_no_internal_notes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN every broken case  WHEN validated as a user does  THEN no line cites the notes
    cited = []
    for i, broken in enumerate(CASES):
        root = tmp_path / str(i)
        broken.stage(root)
        main(["validate", "--root", str(root)])
        cited += [line for line in capsys.readouterr().err.splitlines() if INTERNAL.search(line)]
    assert cited == []


def test_generated_files_docs_and_readme_cite_no_internal_notes() -> None:
    # GIVEN build/, docs/, the README and the benchmark reports
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "benchmarks").rglob("*.md")]
    files += [
        p for p in (ROOT / "build").rglob("*") if p.is_file() and p.suffix in {".json", ".md", ".txt", ".sql"}
    ]
    # THEN none cites the notes
    cited = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in files
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if INTERNAL.search(line)
    ]
    assert cited == []


def _shown_strings(path: Path) -> list[tuple[int, str]]:
    """String literals of a module other than docstrings (what a message can be made of)."""
    with path.open("rb") as fh:
        tokens = [t for t in tokenize.tokenize(fh.readline) if t.type not in (tokenize.NL, tokenize.COMMENT)]
    out = []
    for i, tok in enumerate(tokens):
        if tok.type != tokenize.STRING and tok.type != getattr(tokenize, "FSTRING_START", -1):
            continue
        before = tokens[i - 1].type if i else tokenize.NEWLINE
        after = tokens[i + 1].type if i + 1 < len(tokens) else tokenize.NEWLINE
        docstring = before in (tokenize.INDENT, tokenize.NEWLINE, tokenize.DEDENT, tokenize.ENCODING) and (
            after == tokenize.NEWLINE
        )
        if not docstring:
            out.append((tok.start[0], tok.string))
    return out


def test_messages_in_the_code_cite_no_internal_notes() -> None:
    # GIVEN every module users run (the generator, the runtime and its tools)
    modules = [*sorted((ROOT / "generator").rglob("*.py")), *sorted((ROOT / "runtime").rglob("*.py"))]
    # THEN no string literal a message can be made of cites the notes
    cited = [
        f"{p.relative_to(ROOT)}:{line}: {text[:80]}"
        for p in modules
        for line, text in _shown_strings(p)
        if INTERNAL.search(text)
    ]
    assert cited == []
