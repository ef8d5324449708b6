"""The local filter matcher against AWS: every vector of tests/conformance/eventbridge-patterns.json.

Each vector is accounted for in exactly one way:
- its pattern uses an operator the matcher does not implement (unsupported_operators): it must
  be refused with a PatternError naming that operator, never matched approximately;
- otherwise it is compiled and matched, and the outcome must be what AWS (or aws/event-ruler)
  gave: `match`, `nomatch`, or `error` (refused when compiled).
The tally of the three outcomes is printed at the end of the run.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from synctools.local.patterns import PatternError, compile_pattern, unsupported_operators
from tests.conftest import CONFORMANCE_TALLY

VECTORS_FILE = Path(__file__).resolve().parent / "conformance" / "eventbridge-patterns.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))

AGREE, REFUSED_INVALID, REFUSED_UNSUPPORTED = "agree", "refused as invalid", "refused as unsupported"


def outcome(vector: dict[str, Any]) -> tuple[str, str]:
    """How the matcher accounts for one vector: (kind, detail); raises AssertionError when it
    disagrees with the vector or refuses an unsupported operator without naming it."""
    unsupported = unsupported_operators(vector["pattern"])
    try:
        matcher = compile_pattern(vector["pattern"])
    except PatternError as exc:
        if unsupported:
            named = unsupported[0].operator
            assert f": {named}: " in str(exc), f"refused without naming {named!r}: {exc}"
            return REFUSED_UNSUPPORTED, named
        assert vector["expected"] == "error", f"refused, but AWS says {vector['expected']}: {exc}"
        return REFUSED_INVALID, str(exc)
    assert not unsupported, f"compiled although it uses {[u.operator for u in unsupported]}"
    assert vector["expected"] != "error", "compiled, but AWS refuses this pattern"
    got = "match" if matcher(vector["event"]) else "nomatch"
    assert got == vector["expected"], f"{got}, AWS says {vector['expected']}"
    return AGREE, got


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_the_matcher_agrees_with_the_vector(vector: dict[str, Any]) -> None:
    # GIVEN one recorded pattern, event and outcome  WHEN compiled and matched  THEN the same
    # outcome, or a refusal that names the unsupported operator
    outcome(vector)


def test_every_vector_is_accounted_for(pytestconfig: pytest.Config) -> None:
    # GIVEN every vector  WHEN each is run through the matcher
    kinds: Counter[str] = Counter()
    operators: Counter[str] = Counter()
    failures = []
    for vector in VECTORS:
        try:
            kind, detail = outcome(vector)
        except AssertionError as exc:
            failures.append(f"{vector['id']}: {exc}")
            continue
        kinds[kind] += 1
        if kind == REFUSED_UNSUPPORTED:
            operators[detail] += 1

    # THEN none disagrees, and each is counted once
    assert not failures, "\n".join(failures)
    assert sum(kinds.values()) == len(VECTORS) == 265
    tally = (
        f"conformance: {len(VECTORS)} EventBridge pattern vectors: {kinds[AGREE]} match/no-match agree, "
        f"{kinds[REFUSED_INVALID]} invalid patterns refused, {kinds[REFUSED_UNSUPPORTED]} refused as "
        "unsupported (" + ", ".join(f"{op} {n}" for op, n in sorted(operators.items())) + ")"
    )
    print(tally)
    pytestconfig.stash[CONFORMANCE_TALLY] = tally
    # A change in what the matcher supports shows up here first.
    assert (kinds[AGREE], kinds[REFUSED_INVALID], kinds[REFUSED_UNSUPPORTED]) == (177, 16, 72)
