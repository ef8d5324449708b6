"""The two source trees an A/B benchmark compares (benchmarks/ab_local.py, ab_pipe_path.py):
`base` checked out into a temporary git worktree, `head` this working tree or another
worktree, removed again on leaving."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rev(ref: str) -> str:
    """The short commit id of `ref`."""
    return subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


@contextlib.contextmanager
def trees(base: str, head: str | None, prefix: str) -> Iterator[tuple[dict[str, Path], Path]]:
    """({"base": tree of `base`, "head": tree of `head` (None: this working tree)}, a scratch
    folder), all removed on leaving."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp_dir:
        tmp = Path(tmp_dir)
        made = {"base": (tmp / "base", base)} | ({"head": (tmp / "head", head)} if head else {})
        found = {"base": made["base"][0], "head": made["head"][0] if head else ROOT}
        try:
            for path, ref in made.values():
                subprocess.run(
                    ["git", "worktree", "add", "--detach", str(path), ref],
                    cwd=ROOT,
                    check=True,
                    capture_output=True,
                )
            yield found, tmp
        finally:
            for path, _ in made.values():
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, capture_output=True
                )
