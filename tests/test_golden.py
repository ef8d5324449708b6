"""The committed build/ is exactly what the current mappings render."""

from __future__ import annotations

from pathlib import Path

from generator import output
from generator.load import load

REPO_ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "python -m generator build"


def golden_failure(report: list[str]) -> str:
    """What a stale build/ prints: the differences, then the command that regenerates it."""
    return (
        f"build/ does not match the mappings ({len(report)} file(s)):\n"
        + "\n".join(report)
        + f"\nregenerate it with: {REGENERATE}"
    )


def test_the_committed_build_matches_the_mappings() -> None:
    # GIVEN the repository's mappings and project
    loaded = load(REPO_ROOT)
    assert loaded.model is not None, loaded.diagnostics.render_text()

    # WHEN they are rendered in memory
    files = output.render(loaded.model)

    # THEN build/ holds exactly those files
    report = output.compare(REPO_ROOT / "build", files)
    assert not report, golden_failure(report)


def test_a_stale_build_fails_with_the_diff_and_the_command(tmp_path: Path) -> None:
    # GIVEN a build/ whose registry was edited by hand
    loaded = load(REPO_ROOT)
    assert loaded.model is not None
    files = output.render(loaded.model)
    output.write(tmp_path / "build", files)
    registry = tmp_path / "build" / "registry.json"
    registry.write_text(registry.read_text(encoding="utf-8").replace('"orders-pipes-dlq"', '"x"'), "utf-8")

    # WHEN compared as the golden test does
    message = golden_failure(output.compare(tmp_path / "build", files))

    # THEN the message shows the changed line both ways and how to regenerate
    assert "differs: build/registry.json" in message
    assert '-      "pipe_dlq": "x",' in message
    assert '+      "pipe_dlq": "orders-pipes-dlq",' in message
    assert message.endswith(f"regenerate it with: {REGENERATE}")


def test_the_mapping_reference_is_current() -> None:
    # GIVEN the reference rendered from the schemas the validator uses
    from generator.reference import render_reference

    expected = render_reference()
    committed = (REPO_ROOT / "docs" / "mapping-reference.md").read_text(encoding="utf-8")
    # THEN the committed docs/mapping-reference.md is exactly that
    assert committed == expected, (
        "docs/mapping-reference.md is stale: run python -m generator reference > docs/mapping-reference.md"
    )
